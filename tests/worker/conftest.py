"""Fixtures for the distributed scanner: a Redis server of our own (started on a free port with
an append-only file, so a test can restart it without touching anybody's Redis and without
losing queued tasks), a clean database and media storage per test, and real `celery worker`
subprocesses. Tests using them are marked `services`; they skip when `redis-server` is not
installed, and when the weights are missing (unless INCITESCAN_REQUIRE_WEIGHTS is set)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from pipelines.errors import WeightsMissing
from pipelines.weights import model_path
from worker.config import WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
# The environment before any test ran: importing ultralytics sets OMP_NUM_THREADS=1 and more in
# this process, and a worker inheriting that would decode speech with other thread settings
# than an in-process scan, which changes Whisper's figures in the last digits.
BASE_ENVIRONMENT = dict(os.environ)
TEST_DB = 15
MODELS = ("yolo11n-coco-int8", "basegun-firearm", "whisper-tiny.en")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server subprocess on 127.0.0.1:`port`; `restart` keeps its data (AOF)."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = TEST_DB) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM: the append-only file is flushed)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, down_for: float = 2.0) -> None:
        """Stop, stay down `down_for` seconds, start again with the same data."""
        self.stop()
        time.sleep(down_for)
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Our own Redis for the worker tests (never the shared 127.0.0.1:6379)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(port=_free_port(), folder=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker_models() -> None:
    """The models the worker tests scan with are present (else skip, or fail in CI)."""
    for name in MODELS:
        try:
            model_path(name)
        except WeightsMissing as exc:
            if os.environ.get("INCITESCAN_REQUIRE_WEIGHTS"):
                pytest.fail(f"weights required: {exc.message}")
            pytest.skip(exc.message)


@pytest.fixture
def worker_config(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerSettings]:
    """Settings of one test: an emptied Redis database, a fresh storage folder, and a short
    visibility timeout so the task of a killed worker is redelivered within seconds."""
    client = redis.Redis.from_url(redis_server.url())
    client.flushdb()
    client.close()
    yield WorkerSettings(broker_url=redis_server.url(), result_backend=redis_server.url(),
                         storage=tmp_path / "storage", visibility_timeout=20.0,
                         chunk_time_limit=240.0, scan_time_limit=120.0, result_ttl=3600.0)


@dataclass
class Worker:
    """One `celery worker` subprocess (its own process group: the pool child dies with it)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
        """Send `sig` to the worker and its pool processes and wait for it to exit (killing
        it outright after `wait` seconds)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _environment(config: WorkerSettings) -> dict[str, str]:
    return {**BASE_ENVIRONMENT,
            "INCITESCAN_BROKER_URL": config.broker_url,
            "INCITESCAN_RESULT_BACKEND": config.result_backend,
            "INCITESCAN_STORAGE": str(config.storage),
            "INCITESCAN_VISIBILITY_TIMEOUT": str(config.visibility_timeout),
            "INCITESCAN_CHUNK_TIME_LIMIT": str(config.chunk_time_limit),
            "INCITESCAN_SCAN_TIME_LIMIT": str(config.scan_time_limit),
            "INCITESCAN_RESULT_TTL": str(config.result_ttl),
            "INCITESCAN_LEASE_TIMEOUT": str(config.lease_timeout),
            "INCITESCAN_HEARTBEAT": str(config.heartbeat),
            "INCITESCAN_SHUTDOWN_GRACE": str(config.shutdown_grace),
            "PYTHONWARNINGS": "ignore"}  # the worker's own logs only


@pytest.fixture
def start_worker(worker_config: WorkerSettings, worker_models: None, tmp_path: Path
                 ) -> Iterator[Callable[..., Worker]]:
    """Factory of worker subprocesses (concurrency 1, all queues); all stopped at teardown.
    `start_worker(name)` returns once the worker is consuming; `via_cli=True` starts it with
    `incitescan worker` instead of `celery worker`; `config` replaces the test's settings;
    `pause` stops the worker's pool process at that point (see tests/worker/faults.py); `env`
    adds to (or replaces in) its environment."""
    started: list[Worker] = []

    def start(name: str, queues: str = "scan,detect,speech", via_cli: bool = False,
              config: WorkerSettings | None = None, pause: str = "",
              env: dict[str, str] | None = None) -> Worker:
        log = tmp_path / f"worker-{name}.log"
        if via_cli:
            command = ["-m", "service.cli", "worker", "--concurrency", "1", "--queues", queues,
                       "--loglevel", "info", "--name", f"{name}@test"]
        else:
            command = ["-m", "celery", "-A", "worker.app", "worker", "--concurrency", "1",
                       "--queues", queues, "--loglevel", "info", "--hostname", f"{name}@test",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"]
        environment = _environment(config or worker_config)
        if pause:  # stop the pool process at that point (tests/worker/faults.py)
            command = ["-c", "import sys, tests.worker.faults; from celery.__main__ import "
                       "main; sys.argv[0] = 'celery'; main()", *command[2:]]
            environment["INCITESCAN_TEST_PAUSE"] = pause
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=REPO_ROOT, env={**environment, **(env or {})}, stdout=output, stderr=output,
                stdin=subprocess.DEVNULL, start_new_session=True)
        worker = Worker(name, process, log)
        started.append(worker)
        deadline = time.monotonic() + 60
        while " ready." not in worker.output():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{worker.output()[-3000:]}")
            time.sleep(0.2)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill(signal.SIGTERM, wait=20.0)
