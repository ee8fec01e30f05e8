"""Faults while scans are in flight, with the real parts: a private PostgreSQL cluster stopped
and started under the running service, a really full filesystem (a small tmpfs filled to the
last byte) under the report writer and the media storage, and a corrupted model file. After
each, every submitted scan ends done or failed with a reason; none vanishes or is stored twice.
(Workers killed mid-scan and Redis restarts are in tests/worker/test_distributed.py.)

The PostgreSQL cluster is our own (initdb + pg_ctl in /tmp, run as the `postgres` user when the
tests run as root, on a free port): the shared server on 5432 is never touched. The tmpfs needs
the right to mount; without it the report writer is filled up by RLIMIT_FSIZE instead (a child
process whose files may not grow past a few KB), and the storage test skips."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from service.models import AuditEntry, Report
from tests.pipelines.conftest import require_model
from tests.worker.conftest import _free_port

from . import test_roundtrip
from .conftest import Api, start_api, unique_copy

DETECTORS = ("yolo11n-coco-int8", "basegun-firearm")
# Fixtures of the round-trip tests: our own Redis and a real `celery worker` subprocess.
redis_url, celery_worker, models = (test_roundtrip.redis_url, test_roundtrip.celery_worker,
                                    test_roundtrip.models)
# Light scans: both detectors, few frames, no speech; the behaviour under test is not analysis.
LIGHT = {"local_workers": 1, "speech_model": "none", "fps": 0.5}


@pytest.fixture(scope="module")
def detectors() -> None:
    """The default detectors are present (else skip, or fail in CI)."""
    for name in DETECTORS:
        require_model(name)


def wait_finished(api: Api, scan_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll GET /v1/scans/{id} until every scan is done or failed (answers other than 200, as
    while the database is down, are polled through); returns the last view of each."""
    deadline = time.monotonic() + timeout
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for scan_id in scan_ids:
            response = api.client.get(f"/v1/scans/{scan_id}", headers=api.auth("uploader"))
            if response.status_code == 200:
                last[scan_id] = response.json()
        if len(last) == len(scan_ids) and all(s["status"] in ("done", "failed")
                                              for s in last.values()):
            break
        time.sleep(0.5)
    return last


def finishes_per_scan(api: Api, scan_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(scan.finish audit entries, stored reports) of each scan: (1, 1) done, (1, 0) failed."""
    with api.service.sessions() as session:
        return {scan_id: (
            session.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.action == "scan.finish", AuditEntry.target == f"scan:{scan_id}")) or 0,
            session.scalar(select(func.count()).select_from(Report).where(
                Report.scan_id == scan_id)) or 0) for scan_id in scan_ids}


# ------------------------------------------------------------------ database restarted


def _server_binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return found[0] if found else shutil.which(name)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own on 127.0.0.1:`port` (trust auth, user `incitescan`)."""

    folder: Path
    port: int
    pg_ctl: str
    as_user: list[str]  # ["runuser", "-u", "postgres", "--"] when we are root

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://incitescan@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.folder / "data"), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=60")
        self._ctl("-o", options, "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` is a crash (no shutdown checkpoint, clients cut off)."""
        self._ctl("-m", mode, "-w", "stop")


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster for this module's tests, removed at the end."""
    initdb, pg_ctl = _server_binary("initdb"), _server_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="incitescan-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            shutil.rmtree(folder)
            pytest.skip("running as root, and no `postgres` user or runuser to run initdb as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = [runuser, "-u", "postgres", "--"]
    subprocess.run([*as_user, initdb, "-D", str(folder / "data"), "-U", "incitescan",
                    "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                   timeout=120)
    server = PrivatePostgres(folder, _free_port(), pg_ctl, as_user)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("fast")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.services
@pytest.mark.slow
def test_no_scan_is_lost_or_stored_twice_when_the_database_restarts(
        private_postgres: PrivatePostgres, detectors: None, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, benign_street_video: Path,
        threat_gun_drill_video: Path, threat_knife_video: Path, music_only_video: Path) -> None:
    """Four scans queued on the local pool. The database crashes while the second one is
    analysing frames and stays down for 20 s: that scan finishes meanwhile (its outcome must
    wait for the database, not be dropped), the next ones wait for it before they start, and
    the API answers 503 with a code. Once it is back every scan is done, each finished once."""
    videos = [unique_copy(v, tmp_path) for v in (benign_street_video, threat_gun_drill_video,
                                                 threat_knife_video, music_only_video)]
    with start_api(private_postgres.url, tmp_path / "storage", **{**LIGHT, "fps": 1.0}) as api:
        responses = [api.upload(video) for video in videos]
        assert [r.status_code for r in responses] == [202] * 4, responses[0].text
        scan_ids = [r.json()["id"] for r in responses]

        def second_scan_is_analysing() -> bool:
            scan = api.client.get(f"/v1/scans/{scan_ids[1]}", headers=api.auth("uploader")).json()
            assert scan["status"] != "done", "missed the second scan; slow the test down"
            return bool(scan["status"] == "running" and scan["progress"] > 0)

        deadline = time.monotonic() + 180
        while not second_scan_is_analysing():
            assert time.monotonic() < deadline, "the second scan never started"
            time.sleep(0.05)

        private_postgres.stop("immediate")
        down_since = time.monotonic()
        during = api.upload(unique_copy(benign_street_video, tmp_path))
        assert during.status_code == 503, during.text
        assert during.json()["error"]["code"] == "database_unavailable"
        read = api.client.get(f"/v1/scans/{scan_ids[0]}", headers=api.auth("uploader"))
        assert read.status_code == 503 and read.headers["retry-after"]
        time.sleep(max(0.0, 20 - (time.monotonic() - down_since)))
        private_postgres.start()

        final = wait_finished(api, scan_ids, timeout=300)
        assert {i: final[i]["status"] for i in scan_ids} == dict.fromkeys(scan_ids, "done"), final
        assert finishes_per_scan(api, scan_ids) == dict.fromkeys(scan_ids, (1, 1))
        # The outage really overlapped a finished scan, whose outcome waited for the database.
        assert f"could not store the outcome of scan {scan_ids[1]}" in caplog.text
        again = api.upload(unique_copy(benign_street_video, tmp_path))
        assert again.status_code == 202, again.text


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="intermittent since the owner-scoped storage keys and "
                   "worker leases landed together (1 failure in 2 full runs, 2026-12-02: a "
                   "submission during the outage did not find its stored upload); open in "
                   "issue 23's fault matrix")
def test_celery_scans_survive_a_database_restart(
        private_postgres: PrivatePostgres, redis_url: str, celery_worker: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, benign_street_video: Path,
        threat_gun_drill_video: Path, threat_knife_video: Path) -> None:
    """The same crash with scans on a real Celery worker, once the first scan is done: the
    service's poll loop must ride out the outage (it used to die on the first outcome it could
    not store, leaving every scan running for ever) and store each outcome once the database
    is back."""
    videos = [unique_copy(v, tmp_path) for v in (benign_street_video, threat_gun_drill_video,
                                                 threat_knife_video)]
    with start_api(private_postgres.url, celery_worker, broker_url=redis_url,
                   speech_model="none", fps=1.0) as api:
        responses = [api.upload(video) for video in videos]
        assert [r.status_code for r in responses] == [202] * 3, responses[0].text
        scan_ids = [r.json()["id"] for r in responses]
        deadline = time.monotonic() + 240  # the worker loads its models for the first one
        while api.client.get(f"/v1/scans/{scan_ids[0]}", headers=api.auth("uploader")
                             ).json()["status"] != "done":
            assert time.monotonic() < deadline, "the first scan never finished"
            time.sleep(0.1)
        private_postgres.stop("immediate")
        time.sleep(30)  # the worker finishes the other two meanwhile
        private_postgres.start()
        final = wait_finished(api, scan_ids, timeout=300)
        assert {i: final[i]["status"] for i in scan_ids} == dict.fromkeys(scan_ids, "done"), final
        assert finishes_per_scan(api, scan_ids) == dict.fromkeys(scan_ids, (1, 1))
        assert "could not store the outcome of scan" in caplog.text  # outcomes came meanwhile


# ----------------------------------------------------------------------------- disk full


@dataclass
class FullDisk:
    """A folder where writing fails: a filled tmpfs (`limit_child` None), or, without the right
    to mount, an ordinary folder plus a `limit_child` that caps a child's file size (RLIMIT_FSIZE,
    SIGXFSZ ignored so the write fails with EFBIG instead of killing it)."""

    folder: Path
    limit_child: Callable[[], None] | None
    how: str


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `folder`; None when it worked, else why not."""
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


def _fill(folder: Path) -> None:
    """Write a filler file until the file system has no byte left."""
    with (folder / "filler").open("wb", buffering=0) as filler:
        for size in (65536, 1):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError:
                pass


def _limit_file_size() -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    """See `FullDisk`; the tmpfs holds an old report.json written before it filled up."""
    folder = tmp_path / "full"
    folder.mkdir()
    why = _mount_tmpfs(folder, "1m")
    if why is not None:
        (folder / "report.json").write_text('{"old": true}\n')
        yield FullDisk(folder, _limit_file_size, f"RLIMIT_FSIZE (no tmpfs: {why})")
        return
    try:
        (folder / "report.json").write_text('{"old": true}\n')
        _fill(folder)
        yield FullDisk(folder, None, "a full 1 MiB tmpfs")
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_report_write_on_a_full_disk_fails_whole(full_disk: FullDisk) -> None:
    """`write_json` in a child process: it fails with the OS's reason, the old report is intact
    and no half-written `.partial` file is left."""
    target = full_disk.folder / "report.json"
    code = ("import sys; from pathlib import Path; from pipelines.report import write_json; "
            "write_json({'risk_score': 0.5, 'reasons': ['x' * 100] * 500}, Path(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                          text=True, preexec_fn=full_disk.limit_child, timeout=60)
    assert done.returncode != 0, full_disk.how
    assert "No space left on device" in done.stderr or "File too large" in done.stderr
    assert json.loads(target.read_text()) == {"old": True}, full_disk.how
    assert not (full_disk.folder / "report.json.partial").exists(), full_disk.how


@pytest.mark.slow
def test_command_line_report_on_a_full_disk_is_one_line(full_disk: FullDisk, detectors: None,
                                                         weapon_silent_video: Path) -> None:
    target = full_disk.folder / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "scan", str(weapon_silent_video), "--quiet",
         "--speech-model", "none", "--fps", "0.5", "--json", str(target)],
        capture_output=True, text=True, preexec_fn=full_disk.limit_child, timeout=600)
    assert done.returncode == 1, (full_disk.how, done.stderr)
    assert "weapon_silent.mp4: risk" in done.stdout  # the scan itself ran
    lines = done.stderr.strip().splitlines()
    assert lines == [f"incitescan: could not write the report to {target}: "
                     + ("No space left on device" if full_disk.limit_child is None
                        else "File too large")], full_disk.how
    assert json.loads(target.read_text()) == {"old": True}
    assert not (full_disk.folder / "report.json.partial").exists()


@pytest.mark.slow
def test_a_full_media_storage_fails_the_scan_with_a_reason(
        tmp_path: Path, detectors: None, threat_gun_drill_video: Path) -> None:
    """The media storage fills up after the upload was stored, before the scan writes its
    evidence images (the gun clip at 1 fps gives some): the scan fails with `storage_error` (no
    report is stored, nothing half done), and once space is freed the same video scans again."""
    storage = tmp_path / "storage"
    storage.mkdir()
    why = _mount_tmpfs(storage, "16m")
    if why is not None:
        pytest.skip(f"cannot mount a tmpfs to fill ({why})")
    try:
        database = f"sqlite:///{tmp_path / 'incitescan.db'}"
        with start_api(database, storage, **{**LIGHT, "fps": 1.0}) as api:
            video = unique_copy(threat_gun_drill_video, tmp_path)
            response = api.upload(video)
            assert response.status_code == 202, response.text
            scan_id = response.json()["id"]
            _fill(storage)  # the pool process is still loading its models
            scan = wait_finished(api, [scan_id], timeout=300)[scan_id]
            assert scan["status"] == "failed", scan
            assert scan["error"]["code"] == "storage_error"
            assert "disk full" in scan["error"]["message"]
            assert finishes_per_scan(api, [scan_id]) == {scan_id: (1, 0)}
            report = api.client.get(f"/v1/scans/{scan_id}/report", headers=api.auth("uploader"))
            assert report.status_code == 409 and report.json()["error"]["code"] == "scan_failed"

            (storage / "filler").unlink()
            retry = api.upload(video)
            assert retry.status_code == 202 and retry.json()["id"] != scan_id, retry.text
            again = wait_finished(api, [retry.json()["id"]], timeout=300)[retry.json()["id"]]
            assert again["status"] == "done", again
            evidence = api.client.get(f"/v1/scans/{again['id']}/report",
                                      headers=api.auth("uploader")).json()["evidence"]
            assert evidence and all((storage / e["path"]).is_file() for e in evidence)
    finally:
        subprocess.run(["umount", "-l", str(storage)], check=False)


# ---------------------------------------------------------------------- corrupted model


@pytest.fixture
def corrupt_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detectors: None) -> Path:
    """A copy of the detectors' weights (never the real cache) in which one byte of
    yolo11n.bin is flipped, made the weights cache by INCITESCAN_WEIGHTS_DIR; returns the file."""
    from pipelines.weights import model_path

    cache = tmp_path / "weights"
    for name in DETECTORS:
        source = model_path(name)
        shutil.copytree(source, cache / source.name)
    damaged = cache / "yolo11n-coco-int8_openvino_model" / "yolo11n.bin"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(data)
    monkeypatch.setenv("INCITESCAN_WEIGHTS_DIR", str(cache))  # spawned pool processes too
    return damaged


@pytest.mark.slow
def test_a_corrupt_model_fails_scans_naming_the_file_and_the_fix(
        corrupt_weights: Path, tmp_path: Path, threat_knife_video: Path) -> None:
    fix = "incitescan weights fetch yolo11n-coco-int8"
    database = f"sqlite:///{tmp_path / 'incitescan.db'}"
    with start_api(database, tmp_path / "storage", **LIGHT) as api:
        response = api.upload(unique_copy(threat_knife_video, tmp_path))
        assert response.status_code == 202, response.text
        scan_id = response.json()["id"]
        scan = wait_finished(api, [scan_id], timeout=300)[scan_id]
        assert scan["status"] == "failed", scan
        assert scan["error"]["code"] == "weights_corrupt"
        assert str(corrupt_weights) in scan["error"]["message"]
        assert scan["error"]["message"].endswith(fix)
        assert finishes_per_scan(api, [scan_id]) == {scan_id: (1, 0)}

    done = subprocess.run([sys.executable, "-m", "service.cli", "scan", str(threat_knife_video),
                           "--quiet", "--speech-model", "none"], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "yolo11n.bin has sha256" in line and line.endswith(fix)
