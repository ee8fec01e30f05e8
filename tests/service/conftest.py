"""Fixtures of the API tests: a database per backend and test session (a SQLite file, or a
fresh randomly named schema in the PostgreSQL database `test` on 127.0.0.1, dropped at the end,
so other users of that database are untouched), an `Api` helper that starts the app on it with
test settings and holds one key per role, a synthetic finished report, and a local webhook
receiver on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.scans import ScanService
from service.schemas import KeyIn
from service.settings import ServiceSettings

PG_ADMIN = os.environ.get("INCITESCAN_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
WEBHOOK_SECRET = "test-webhook-secret"


def _postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database; yields a URL whose search_path is that schema."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    schema = f"incitescan_test_{secrets.token_hex(4)}"
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed at {PG_ADMIN}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql",
                                                                 marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """One database per backend for the whole session (tests isolate by their own keys)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'incitescan.db'}"
    else:
        yield from _postgres_schema()


@pytest.fixture(scope="session")
def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The media storage folder of the session."""
    return tmp_path_factory.mktemp("storage")


class Api:
    """A running app (TestClient) with one fresh API key per role."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.service: ScanService = client.app.state.service  # type: ignore[attr-defined]
        self.keys = {role: self.new_key(role) for role in ("uploader", "reviewer", "admin")}

    def new_key(self, role: str) -> str:
        """A new API key with `role`."""
        return self.service.create_key(None, KeyIn(role=role, name=f"test {role}")).key  # type: ignore[arg-type]

    def auth(self, role: str) -> dict[str, str]:
        """The Authorization header of this Api's key for `role`."""
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def upload(self, path: Path, role: str = "uploader", *, name: str | None = None,
               headers: dict[str, str] | None = None, **fields: Any) -> Any:
        """POST /v1/scans with `path` as a multipart upload."""
        data = {k: json.dumps(v) if k == "metadata" else str(v) for k, v in fields.items()}
        with path.open("rb") as handle:
            return self.client.post("/v1/scans", headers={**self.auth(role), **(headers or {})},
                                    files={"file": (name or path.name, handle, "video/mp4")},
                                    data=data)

    def key_id(self, role: str) -> str:
        """The id of this Api's key for `role`."""
        principal = self.service.authenticate(self.keys[role])
        assert principal is not None
        return principal.key_id


@contextmanager
def start_api(database_url: str, storage: Path, **overrides: Any) -> Iterator[Api]:
    """Start the app on `database_url` and `storage` with test settings: scans are queued but
    not run (local_workers=0) unless `overrides` say otherwise."""
    values: dict[str, Any] = {
        "database_url": database_url, "storage": storage, "local_workers": 0,
        "webhook_secret": WEBHOOK_SECRET, "webhook_allow_private": True,
        "webhook_backoff": 0.05, "speech_model": "tiny.en",
        # Tests send many wrong keys from one address; test_sessions.py tests the lock-out.
        "auth_max_failures": 100_000, **overrides}
    app = create_app(ServiceSettings(**values))
    with TestClient(app) as client:
        yield Api(client)


@pytest.fixture()
def make_api(database_url: str, storage_dir: Path) -> Callable[..., Any]:
    """`with make_api(**settings) as api:` starts the app on the session's database."""

    def start(**overrides: Any) -> Any:
        return start_api(database_url, storage_dir, **overrides)

    return start


@pytest.fixture()
def api(make_api: Callable[..., Any]) -> Iterator[Api]:
    """The app with default test settings."""
    with make_api() as started:
        yield started


def fake_report(risk: float = 0.8, segments: int = 1) -> dict[str, Any]:
    """A minimal finished report, as a scan would return it, with `segments` flagged ones
    holding one detection and one threat hit each."""
    return {
        "schema_version": "1.0", "risk_score": risk, "flagged": risk >= 0.5, "threshold": 0.5,
        "video": {"path": "x", "duration": 20.0}, "evidence": [],
        "flagged_segments": [{
            "start": 4.0 + 5 * i, "end": 8.0 + 5 * i, "score": risk,
            "signals": ["weapon", "threat_speech"], "reasons": [f"reason {i}"],
            "detections": [{"t": 5.0, "label": "knife", "confidence": 0.7,
                            "box": [1.0, 2.0, 3.0, 4.0], "model": "yolo@1",
                            "source_label": "knife", "frame_index": 5}],
            "threat_hits": [{"start": 4.8, "end": 5.5, "text": "I'm going to stab you",
                             "rule": "pattern:first_person_future_violence",
                             "category": "threat", "meaning": "threat", "weight": 0.85,
                             "segment_text": "I'm going to stab you"}],
        } for i in range(segments)],
    }


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers with the queued statuses (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.received = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = outer.statuses.pop(0) if outer.statuses else 200
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    outer.received.set()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    """A local webhook receiver (see `Receiver`)."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="session")
def samples(repo_root: Path) -> list[Path]:
    """Every sample clip, in name order."""
    return sorted((repo_root / "samples").glob("*.mp4"))


def unique_copy(video: Path, folder: Path) -> Path:
    """A copy of MP4 `video` with a random `free` box appended: still the same valid video, but
    new content (so no earlier scan of it is reused)."""
    import secrets as random_bytes
    import struct

    target = folder / f"{random_bytes.token_hex(4)}-{video.name}"
    payload = random_bytes.token_bytes(16)
    target.write_bytes(video.read_bytes() + struct.pack(">I", 8 + len(payload)) + b"free"
                       + payload)
    return target
