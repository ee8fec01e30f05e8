"""Webhooks: the verdict of a finished scan is POSTed to its `callback_url`, signed as
`X-IncitementScan-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the
deployment's webhook secret. Delivery is retried with exponential backoff up to a bounded number
of attempts and every attempt is recorded. Callback URLs that resolve to loopback, private,
link-local or otherwise non-public addresses are refused (checked at submission and again
before each attempt) unless the configuration allows them; IPv4 addresses inside IPv6 ones
(NAT64, 6to4, IPv4-compatible/-mapped) are checked as IPv4. The host is resolved once per
attempt and the request connects to that checked address (no second lookup to rebind), with
the original Host header and TLS server name; redirects are never followed."""

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


# Special-purpose blocks (IANA registries) a callback may never reach, on top of what
# `ipaddress` calls private/loopback/link-local/multicast/reserved (Python 3.11 misses some).
_SPECIAL_V4 = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")]
_SPECIAL_V6 = [ipaddress.ip_network(n) for n in (
    "::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")]
# IPv6 forms that carry an IPv4 address: the IPv4 address is what gets reached.
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:AABB:CCDD::)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _IPV4_COMPATIBLE or any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def public_address(address: str) -> bool:
    """Whether a callback may connect to `address`: a globally routable unicast address in no
    special-purpose block, with any IPv4 address embedded in an IPv6 one checked as IPv4."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return False  # a tunnel to anywhere
        inner = embedded_ipv4(ip)
        if inner is not None:
            ip = inner
        elif any(ip in net for net in _SPECIAL_V6):
            return False
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in _SPECIAL_V4):
        return False
    return (ip.is_global and not ip.is_multicast and not ip.is_reserved
            and not ip.is_private and not ip.is_loopback and not ip.is_link_local
            and not ip.is_unspecified)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked callback URL and the one address it resolved to, which is the address
    connected to (pinned: a second DNS answer can never redirect the request)."""

    url: str
    host: str
    port: int
    address: str

    def pinned_url(self) -> httpx.URL:
        """`url` with its host replaced by the checked address."""
        return httpx.URL(self.url).copy_with(host=self.address)

    def host_header(self) -> str:
        """The Host header of the original URL."""
        parts = urlsplit(self.url)
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if parts.port is None else f"{name}:{parts.port}"


def resolve_callback(url: str, *, allow_private: bool) -> Target:
    """Check `url` and resolve its host once; CallbackRefused saying why it may not be called.
    Every address the host has must be public unless `allow_private`."""
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
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise CallbackRefused(f"callback_url host {parts.hostname!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not public_address(address):
                raise CallbackRefused(f"callback_url resolves to a non-public address "
                                      f"({address}); refused")
    return Target(url=url, host=parts.hostname, port=port, address=addresses[0])


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """`url` if the service may call it, else CallbackRefused saying why (see
    `resolve_callback`)."""
    resolve_callback(url, allow_private=allow_private)
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
                # Resolved once per attempt (DNS may have changed since the submission) and
                # the request goes to that checked address; TLS still verifies the name.
                target = resolve_callback(url, allow_private=allow_private)
                response = client.post(target.pinned_url(), content=body, headers={
                    "Host": target.host_header(), "Content-Type": "application/json",
                    EVENT_HEADER: "scan.finished", SIGNATURE_HEADER: sign(secret, body),
                    "User-Agent": "IncitementScan"},
                    extensions={"sni_hostname": target.host})
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
