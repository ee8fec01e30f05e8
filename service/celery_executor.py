"""Scans through the distributed scanner (issue 6's `worker/`), used when a broker URL is
configured: each job is submitted with `worker.client.submit` from a background thread (the
video is already in the shared media storage, under its content key), then followed by polling
`worker.client.status` until it is done or failed, when `worker.client.result` gives the report.
The worker's scan id is stored on the scan row, so after a restart the service picks the same
distributed scan up again instead of submitting it twice."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pipelines.scan import ScanOptions

from .execution import OnDone, ScanJob, store_outcome
from .settings import ServiceSettings

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class CeleryExecutor:
    """Submits to and follows the Celery workers; see the module docstring."""

    def __init__(self, settings: ServiceSettings, options: ScanOptions, *, on_done: OnDone,
                 on_submitted: Callable[[str, str], None],
                 on_progress: Callable[[str, str, float], None],
                 video_path: Callable[[str], Any]) -> None:
        from worker.config import WorkerSettings

        broker = settings.broker_url or ""
        self.config = replace(WorkerSettings.from_env(), broker_url=broker,
                              result_backend=os.environ.get("INCITESCAN_RESULT_BACKEND") or broker,
                              storage=settings.storage.expanduser())
        self.options = options
        self.on_done, self.on_submitted, self.on_progress = on_done, on_submitted, on_progress
        self.video_path = video_path
        self._jobs: queue.Queue[ScanJob | None] = queue.Queue()
        self._tracked: dict[str, str] = {}  # worker scan id -> our scan id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._submit_loop, name="celery-submit",
                                          daemon=True),
                         threading.Thread(target=self._poll_loop, name="celery-poll",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: ScanJob) -> None:
        """Submit `job` (or, when it has a worker id already, follow that scan)."""
        if job.worker_ref:
            with self._lock:
                self._tracked[job.worker_ref] = job.scan_id
        else:
            self._jobs.put(job)

    def _submit_loop(self) -> None:
        from worker import client

        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            try:
                ref = client.submit(self.video_path(job.storage_key), self.options,
                                    fast_track=job.priority == "high", config=self.config)
            except Exception as exc:  # noqa: BLE001 - the broker is down or the file vanished
                log.exception("could not submit scan %s", job.scan_id)
                store_outcome(self.on_done, job.scan_id, {"error": {
                    "code": "unavailable", "message": f"could not queue the scan: {exc}"}},
                    self._stop)
                continue
            with self._lock:  # followed from now on, even if recording the ref fails
                self._tracked[ref] = job.scan_id
            try:
                self.on_submitted(job.scan_id, ref)
            except Exception:  # noqa: BLE001 - database down: the scan is still followed
                log.warning("could not record the worker scan of %s", job.scan_id,
                            exc_info=True)

    def _poll_loop(self) -> None:
        from worker import client

        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                tracked = list(self._tracked.items())
            for ref, scan_id in tracked:
                try:
                    outcome = self._check(client, ref, scan_id)
                except Exception:  # noqa: BLE001 - Redis restarting: try again next round
                    log.warning("could not poll scan %s", scan_id, exc_info=True)
                    continue
                if outcome is None:
                    continue
                try:
                    self.on_done(scan_id, outcome)
                except Exception:  # noqa: BLE001 - database restarting: store it next round
                    log.warning("could not store the outcome of scan %s", scan_id,
                                exc_info=True)
                    continue
                with self._lock:
                    self._tracked.pop(ref, None)

    def _check(self, client: Any, ref: str, scan_id: str) -> dict[str, Any] | None:
        try:
            current = client.status(ref, config=self.config)
        except client.ScanNotFound:
            return {"error": {"code": "worker_lost", "message": "the distributed scan record "
                              "expired or vanished; submit the video again"}}
        if current.state == "done":
            return {"report": client.result(ref, config=self.config)}
        if current.state == "failed":
            return {"error": {"code": current.error_code or "internal_error",
                              "message": current.error_message or "unknown failure"}}
        self.on_progress(scan_id, current.state, current.progress)
        return None

    def close(self) -> None:
        """Stop submitting and polling (queued jobs stay queued in the database)."""
        self._stop.set()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
