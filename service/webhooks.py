"""Webhooks: the verdict of a finished scan is POSTed to its `callback_url`, signed as
`X-IncitementScan-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the
deployment's webhook secret. Delivery is retried with exponential backoff up to a bounded number
of attempts and every attempt is recorded. Callback URLs that resolve to loopback, private,
link-local or otherwise non-public addresses are refused (checked at submission and again
before each attempt) unless the configuration allows them."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "X-IncitementScan-Signature"
EVENT_HEADER = "X-IncitementScan-Event"
DEFAULT_TOLERANCE_S = 300


class CallbackRefused(ValueError):
    """A callback URL the service will not call."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for `body` sent at `timestamp` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """Whether `header` is a valid signature of `body` made within `tolerance_s` seconds."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """`url` if the service may call it, else CallbackRefused saying why. The host is resolved:
    every address it has must be public unless `allow_private`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("callback_url must be an http or https URL")
    if not parts.hostname or parts.username or parts.password:
        raise CallbackRefused("callback_url needs a host and no user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        raise CallbackRefused(f"callback_url host {parts.hostname!r} does not resolve") from None
    if not allow_private:
        for info in infos:
            address = str(info[4][0])
            if not _public(address):
                raise CallbackRefused(f"callback_url resolves to a non-public address "
                                      f"({address}); refused")
    return url


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery attempt."""

    attempt: int
    status_code: int | None
    error: str | None
    delivered: bool
    duration_ms: float


def deliver(url: str, body: bytes, secret: str, *, allow_private: bool, max_attempts: int,
            backoff: float, timeout: float, record: Callable[[Attempt], None],
            sleep: Callable[[float], bool] | None = None) -> bool:
    """POST `body` to `url` until a 2xx answer or `max_attempts` attempts, waiting `backoff`,
    2x`backoff`, 4x`backoff`, ... (capped at 5 minutes) between them; `record` is called after
    every attempt. `sleep(seconds)` returns False to stop early (service shutting down).
    Returns whether the verdict was delivered."""
    def pause(seconds: float) -> bool:
        time.sleep(seconds)
        return True

    wait = sleep or pause
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for attempt in range(1, max_attempts + 1):
            started = time.perf_counter()
            status, error = None, None
            try:
                check_callback_url(url, allow_private=allow_private)  # DNS may have changed
                response = client.post(url, content=body, headers={
                    "Content-Type": "application/json", EVENT_HEADER: "scan.finished",
                    SIGNATURE_HEADER: sign(secret, body), "User-Agent": "IncitementScan"})
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except CallbackRefused as exc:
                error = str(exc)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            delivered = error is None
            record(Attempt(attempt, status, error, delivered,
                           round((time.perf_counter() - started) * 1000, 1)))
            if delivered:
                return True
            if attempt < max_attempts and not wait(min(300.0, backoff * 2 ** (attempt - 1))):
                return False
    return False
