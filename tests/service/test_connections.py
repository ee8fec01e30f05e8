"""Slow and greedy clients against the real server (`service.server.server_config`: uvicorn
with `service.connections`) on 127.0.0.1, with short limits: a request line and headers sent a
byte at a time, a body that stops arriving, and more open connections than one client may
hold. Without the limits each of these connections stayed open indefinitely."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.api import create_app
from service.schemas import KeyIn
from service.server import server_config
from service.settings import ServiceSettings


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """The API served by uvicorn on a free loopback port with 1 s header and body timeouts and
    at most 3 connections per client; yields the port and an uploader key."""
    import uvicorn

    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                               storage=tmp_path / "storage", local_workers=0,
                               header_timeout_s=1.0, body_idle_timeout_s=1.0,
                               max_connections_per_client=3)
    app = create_app(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(server_config(app, settings, "127.0.0.1", port,
                                            log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    key = app.state.service.create_key(None, KeyIn(role="uploader", name="slow clients")).key
    try:
        yield port, key
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


def _connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    return connection


def _closed_within(connection: socket.socket, seconds: float, drip: bytes = b"") -> tuple[
        float, bytes]:
    """Send `drip` a byte every 0.2 s (if any) until the server closes the connection; returns
    how long that took and what the server sent."""
    started = time.monotonic()
    received = b""
    connection.settimeout(0.2)
    index = 0
    while time.monotonic() - started < seconds:
        if index < len(drip):
            try:
                connection.sendall(drip[index:index + 1])
            except OSError:
                break
            index += 1
        try:
            chunk = connection.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    else:
        pytest.fail(f"the connection was still open after {seconds} s")
    return time.monotonic() - started, received


def test_headers_sent_a_byte_at_a_time_are_cut_off(server: tuple[int, str]) -> None:
    port, _ = server
    with _connect(port) as connection:
        took, answer = _closed_within(connection, 8.0, drip=b"GET /v1/scans HTTP/1.1\r\n"
                                                        b"Host: x\r\nX-Slow: " + b"a" * 200)
    assert took < 4.0
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


def test_an_idle_connection_without_a_request_is_closed(server: tuple[int, str]) -> None:
    port, _ = server
    with _connect(port) as connection:
        took, _ = _closed_within(connection, 8.0)
    assert took < 4.0


def test_a_body_that_stops_arriving_is_cut_off_and_nothing_stays_staged(
        server: tuple[int, str], tmp_path: Path) -> None:
    port, key = server
    head = (f"POST /v1/scans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'
            ).encode() + b"\x00" * 5000
    with _connect(port) as connection:
        connection.sendall(head)
        took, _ = _closed_within(connection, 8.0)
    assert took < 4.0
    deadline = time.monotonic() + 5
    staging = tmp_path / "storage" / ".incoming"
    while any(staging.glob(".upload-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(staging.glob(".upload-*"))


def test_one_client_may_hold_only_so_many_connections(server: tuple[int, str]) -> None:
    port, _ = server
    held: list[socket.socket] = [_connect(port) for _ in range(3)]
    try:
        time.sleep(0.2)
        with _connect(port) as extra:
            took, answer = _closed_within(extra, 3.0)
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.3)
    with _connect(port) as again:  # the count drops when connections close
        again.sendall(b"GET /v1/scans HTTP/1.1\r\nHost: x\r\n\r\n")
        again.settimeout(5)
        assert again.recv(100).startswith(b"HTTP/1.1 401")


def test_serve_uses_the_guarded_protocol() -> None:
    config: Any = server_config(object(), ServiceSettings(header_timeout_s=7))
    assert config.http.header_timeout == 7 and config.timeout_keep_alive == 5
