"""Connection limits of `incitescan serve` that uvicorn does not have: a deadline for the request
line and headers (a client sending one byte every few seconds used to hold a connection open
forever), an idle timeout while a request body is being received, and a cap on the connections
one client address may hold open. They live in a subclass of uvicorn's h11 protocol, checked by
a timer per connection; uvicorn's own keep-alive timeout covers idle connections between
requests. Behind a reverse proxy every connection comes from the proxy: set the per-client cap
to 0 there and let the proxy enforce it (docs/security.md has the proxy settings)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def _raw_response(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 error response with the API's JSON error body, closing the connection
    (written straight to the transport: h11 cannot answer a request it has not parsed)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\n" + extra + b"content-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


REQUEST_TIMEOUT = _raw_response(b"408 Request Timeout", "request_timeout",
                                "the request arrived too slowly")
TOO_MANY = _raw_response(b"503 Service Unavailable", "too_many_connections",
                         "too many open connections from your address",
                         b"retry-after: 5\r\n")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with header and body timeouts and a per-client cap (the
    class attributes; `guarded_protocol` makes a subclass with chosen values)."""

    header_timeout: ClassVar[float] = 10.0
    body_idle_timeout: ClassVar[float] = 30.0
    max_per_client: ClassVar[int] = 16  # 0: no cap
    open_per_client: ClassVar[Counter[str]] = Counter()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else ""
        self._counted = False
        self._watcher: asyncio.TimerHandle | None = None
        if self.max_per_client and self.open_per_client[self._peer] >= self.max_per_client:
            log.warning("refused a connection from %s: %d already open", self._peer,
                        self.open_per_client[self._peer])
            transport.write(TOO_MANY)
            transport.close()
            return
        self.open_per_client[self._peer] += 1
        self._counted = True
        now = self.loop.time()
        self._waiting_since: float | None = now  # for a request line and headers
        self._last_data = now
        self._tick = max(0.05, min(1.0, self.header_timeout / 4, self.body_idle_timeout / 4))
        self._watcher = self.loop.call_later(self._tick, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.open_per_client[self._peer] -= 1
            if self.open_per_client[self._peer] <= 0:
                del self.open_per_client[self._peer]
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)

    def _watch(self) -> None:
        self._watcher = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        state = self.conn.their_state
        if state is h11.IDLE:  # waiting for (the rest of) a request line and headers
            if self._waiting_since is None:
                self._waiting_since = now
            elif now - self._waiting_since > self.header_timeout:
                self._give_up("headers", respond=True)
                return
        else:
            self._waiting_since = None
            # A paused reader is waiting for the app, not for the client.
            if (state is h11.SEND_BODY and not self.flow.read_paused
                    and now - self._last_data > self.body_idle_timeout):
                cycle: Any = self.cycle
                self._give_up("body", respond=cycle is None or not cycle.response_started)
                return
        self._watcher = self.loop.call_later(self._tick, self._watch)

    def _give_up(self, what: str, *, respond: bool) -> None:
        log.warning("closed a connection from %s: its request %s arrived too slowly",
                    self._peer, what)
        if respond:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def guarded_protocol(*, header_timeout: float, body_idle_timeout: float,
                     max_per_client: int) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol subclass with these limits (and its own per-client counts)."""
    return type("ServeH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": header_timeout, "body_idle_timeout": body_idle_timeout,
        "max_per_client": max_per_client, "open_per_client": Counter()})
