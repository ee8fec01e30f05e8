"""Full round trips with real models: upload → scan → stored verdict, report, evidence
thumbnail and clip → signed webhook received by a local receiver. Once with the local process
pool on SQLite (`incitescan serve` on one machine with no services), once through a real Celery
worker subprocess on our own Redis with PostgreSQL (the production shape)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipelines.media import probe
from service import webhooks
from tests.pipelines.conftest import require_model

from .conftest import WEBHOOK_SECRET, Api, Receiver, _postgres_schema, start_api, unique_copy

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("whisper-tiny.en", "yolo11n-coco-int8", "basegun-firearm")
BASE_ENVIRONMENT = dict(os.environ)  # before ultralytics changes thread settings on import


def wait_until_finished(api: Api, scan_id: str, timeout: float = 600.0) -> dict[str, Any]:
    """Poll GET /v1/scans/{id} until the scan is done or failed; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        scan = api.client.get(f"/v1/scans/{scan_id}", headers=api.auth("uploader")).json()
        if scan["status"] in ("done", "failed") or time.monotonic() > deadline:
            return scan
        time.sleep(1.0)


def check_round_trip(api: Api, receiver: Receiver, video: Path, tmp_path: Path) -> None:
    """Upload `video` (a threat clip with a knife) and check everything a finished scan gives."""
    response = api.upload(unique_copy(video, tmp_path), name=video.name,
                          callback_url=receiver.url, external_id="round-trip")
    assert response.status_code == 202, response.text
    scan_id = response.json()["id"]
    scan = wait_until_finished(api, scan_id)
    assert scan["status"] == "done", scan
    assert scan["flagged"] and scan["risk_score"] >= 0.5 and scan["progress"] == 100
    assert scan["segments"] and "threat_speech" in {s for seg in scan["segments"]
                                                    for s in seg["signals"]}

    assert receiver.received.wait(60), "the webhook never arrived"
    headers, body = receiver.requests[-1]
    assert webhooks.verify(WEBHOOK_SECRET, body, headers["x-incitementscan-signature"])
    payload = json.loads(body)["scan"]
    assert payload["id"] == scan_id and payload["flagged"] and payload["external_id"] == \
        "round-trip"
    assert payload["segments"] == scan["segments"]

    reviewer = api.auth("reviewer")
    report = api.client.get(f"/v1/scans/{scan_id}/report", headers=reviewer).json()
    assert report["risk_score"] == scan["risk_score"] and report["video"]["path"] == video.name
    assert str(api.service.storage_root) not in json.dumps(report)  # no server paths
    with api.service.sessions() as session:
        stored = session.scalar(sa.text("SELECT count(*) FROM segments WHERE scan_id = :s"),
                                {"s": scan_id})
    assert stored == len(report["flagged_segments"])

    if report["evidence"]:
        frame = report["evidence"][0]["frame_index"]
        image = api.client.get(f"/v1/scans/{scan_id}/frames/{frame}", headers=reviewer)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"
    missing = api.client.get(f"/v1/scans/{scan_id}/frames/99999", headers=reviewer)
    assert missing.status_code == 404

    segment = scan["segments"][0]
    end = min(segment["end"], segment["start"] + 4)
    clip = api.client.get(f"/v1/scans/{scan_id}/clip", headers=reviewer,
                          params={"start": segment["start"], "end": end})
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    saved = tmp_path / "clip.mp4"
    saved.write_bytes(clip.content)
    info = probe(saved)
    assert abs(info.duration - (end - segment["start"])) < 1.0 and info.height <= 480
    too_long = api.client.get(f"/v1/scans/{scan_id}/clip", headers=reviewer,
                              params={"start": 0, "end": 100})
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "clip_too_long"


@pytest.fixture()
def models() -> None:
    """The models of the test scans are present (else skip, or fail in CI)."""
    for name in MODELS:
        require_model(name)


@pytest.mark.slow
def test_round_trip_in_the_local_process_pool(models: None, receiver: Receiver,
                                              threat_knife_video: Path, tmp_path: Path) -> None:
    with start_api(f"sqlite:///{tmp_path / 'local.db'}", tmp_path / "storage",
                   local_workers=1) as api:
        check_round_trip(api, receiver, threat_knife_video, tmp_path)


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@pytest.fixture()
def redis_url(tmp_path: Path) -> Iterator[str]:
    """Our own redis-server on a free port (never the shared 127.0.0.1:6379, whose queues
    another engineer's workers may consume)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture()
def celery_worker(redis_url: str, tmp_path: Path, models: None) -> Iterator[Path]:
    """A real `celery worker` subprocess on `redis_url`; yields the shared storage folder."""
    storage = tmp_path / "storage"
    log = tmp_path / "worker.log"
    environment = {**BASE_ENVIRONMENT, "INCITESCAN_BROKER_URL": redis_url,
                   "INCITESCAN_STORAGE": str(storage), "PYTHONWARNINGS": "ignore"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--concurrency", "1",
             "--queues", "scan,detect,speech", "--loglevel", "info", "--hostname",
             "service-test@localhost", "--without-gossip", "--without-mingle",
             "--without-heartbeat"], cwd=REPO_ROOT, env=environment, stdout=output,
            stderr=output, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield storage
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.services
def test_round_trip_through_a_celery_worker(redis_url: str, celery_worker: Path,
                                            receiver: Receiver, threat_knife_video: Path,
                                            tmp_path: Path) -> None:
    for database_url in _postgres_schema():
        with start_api(database_url, celery_worker, broker_url=redis_url) as api:
            check_round_trip(api, receiver, threat_knife_video, tmp_path)
            with api.service.sessions() as session:
                refs = session.scalars(sa.text("SELECT worker_ref FROM scans")).all()
            assert all(refs)  # followed through the distributed scanner
