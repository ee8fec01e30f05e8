"""Running scans for the API. `LocalExecutor` runs them in a background process pool on this
machine (models loaded once per pool process, highest priority first, a crashed pool process
retried once on a fresh pool), so `incitescan serve` works with no other service; with a broker
configured, `CeleryExecutor` hands them to the distributed workers through `worker.client`.

Either way the outcome of a scan reaches the service through one callback,
`on_done(scan_id, outcome)`, where an outcome is `{"report": <report JSON>}` or
`{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, update
from sqlalchemy.exc import InterfaceError, OperationalError

from pipelines.errors import ScanError
from pipelines.report import to_dict
from pipelines.scan import ScanModels, ScanOptions, load_models, scan
from pipelines.types import KnownMatch

from .bank import DatabaseBank
from .children import die_with_parent
from .db import make_engine
from .models import Scan, utcnow

log = logging.getLogger(__name__)

Outcome = dict[str, Any]
OnDone = Callable[[str, Outcome], None]
PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}
MAX_ATTEMPTS = 2  # a scan whose pool process died is tried once more, then failed
T = TypeVar("T")
STORE_RETRY_MAX_S = 10.0  # longest pause between attempts to store an outcome


def store_outcome(on_done: OnDone, scan_id: str, outcome: Outcome, stop: threading.Event
                  ) -> bool:
    """Call `on_done(scan_id, outcome)` until it succeeds: while the database restarts the
    outcome waits here (retried with backoff) instead of being dropped. Gives up only when
    `stop` is set (shutting down: the scan stays open and is resubmitted at the next start).
    `on_done` must be idempotent: `ScanService.finish` stores an outcome once."""
    delay = 0.5
    while True:
        try:
            on_done(scan_id, outcome)
            return True
        except (OperationalError, InterfaceError):  # the database is unreachable: retried
            log.warning("could not store the outcome of scan %s; trying again in %.1f s",
                        scan_id, delay, exc_info=True)
        except Exception as exc:  # noqa: BLE001 - this outcome can never be stored
            log.exception("could not store the outcome of scan %s", scan_id)
            if "report" not in outcome:
                return False  # left open; resubmitted at the next start
            outcome = {"error": {"code": "internal_error", "message": "the scan's result could "
                                 f"not be stored ({type(exc).__name__}: {exc})"}}
            continue
        if stop.wait(delay):
            return False
        delay = min(STORE_RETRY_MAX_S, delay * 2)


@dataclass(frozen=True, slots=True)
class ScanJob:
    """A scan to run: the stored video (by storage key) and how urgent it is."""

    scan_id: str
    storage_key: str
    filename: str
    priority: str = "normal"
    worker_ref: str | None = None  # the distributed scan already submitted for it, if any


class Executor(Protocol):
    """Something that runs scans and reports each outcome to the service's `on_done`."""

    def submit(self, job: ScanJob) -> None:
        """Queue `job`; returns at once."""
        ...

    def close(self) -> None:
        """Stop taking jobs and release processes and threads."""
        ...


# ------------------------------------------------------------ inside a local pool process

_models: dict[ScanOptions, ScanModels] = {}
_engines: dict[str, Engine] = {}
_banks: dict[str, DatabaseBank] = {}


def _engine(url: str) -> Engine:
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def _set_progress(url: str, scan_id: str, **values: Any) -> None:
    """Record progress in the scans table (best effort: a failed write never fails a scan)."""
    try:
        with _engine(url).begin() as connection:
            connection.execute(update(Scan).where(
                Scan.id == scan_id, Scan.status.in_(("queued", "running"))).values(
                    updated_at=utcnow(), **values))
    except Exception:  # noqa: BLE001 - progress is cosmetic; the outcome is what counts
        log.warning("could not record progress of scan %s", scan_id, exc_info=True)


def _wait_for_database(read: Callable[[], T], patience_s: float = 300.0) -> T:
    """`read()`, retried with backoff while the database is unreachable (restarting), for up to
    `patience_s` seconds; then its OperationalError is raised."""
    delay, deadline = 0.5, time.monotonic() + patience_s
    while True:
        try:
            return read()
        except OperationalError:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable; trying again in %.1f s", delay)
            time.sleep(delay)
            delay = min(STORE_RETRY_MAX_S, delay * 2)


def run_local_scan(video: str, options: ScanOptions, storage_root: str, database_url: str,
                   scan_id: str) -> Outcome:
    """Scan `video` in this pool process (loading the models on first use) and return the
    outcome; evidence thumbnails go to `<storage_root>/evidence/<scan_id>` and the report names
    them relative to the storage root."""
    _set_progress(database_url, scan_id, status="running", started_at=utcnow(), progress=0.0)
    last = [0.0]

    def progress(stage: str, done: float, total: float) -> None:
        now = time.monotonic()
        if stage == "frames" and total and now - last[0] >= 1.0:
            last[0] = now
            _set_progress(database_url, scan_id, progress=round(min(99.0, 100 * done / total), 1))

    root = Path(storage_root)
    try:
        if options not in _models:
            log.info("loading models in pool process %d", os.getpid())
            _models[options] = load_models(options)
        if database_url not in _banks:
            _banks[database_url] = DatabaseBank(_engine(database_url))

        def known_match(match: KnownMatch) -> None:  # the fast path: seen before the end
            _set_progress(database_url, scan_id, known_match=asdict(match))

        result = scan(video, options, models=_models[options],
                      evidence_dir=root / "evidence" / scan_id, progress=progress,
                      bank=_wait_for_database(_banks[database_url].current),
                      on_known_match=known_match)
    except ScanError as exc:
        return {"error": exc.to_dict()}
    except OperationalError as exc:
        return {"error": {"code": "database_unavailable", "message": "the database stayed "
                          f"unreachable during the scan ({exc.orig}); submit the video again"}}
    except OSError as exc:  # the media storage is full or unwritable (evidence images)
        return {"error": {"code": "storage_error", "message": f"the media storage failed "
                          f"during the scan ({exc.strerror or exc}); free space or fix it and "
                          "submit the video again"}}
    report = to_dict(result)
    for item in report["evidence"]:  # never show the server's folders
        item["path"] = os.path.relpath(item["path"], root)
    return {"report": report}


# ------------------------------------------------------------------------ the local pool


class LocalExecutor:
    """Scans in a pool of `workers` spawned processes; jobs wait in a priority queue here (not in
    the pool) so that a high-priority upload overtakes the backlog."""

    def __init__(self, *, workers: int, options: ScanOptions, storage_root: Path,
                 database_url: str, video_path: Callable[[str], Path], on_done: OnDone) -> None:
        self.workers, self.options = workers, options
        self.storage_root, self.database_url = storage_root, database_url
        self.video_path, self.on_done = video_path, on_done
        self._queue: list[tuple[int, int, ScanJob, int]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False
        self._closing = threading.Event()
        self._pool: ProcessPoolExecutor | None = None
        # Outcomes are stored off the pool's own management thread.
        self._callbacks = ThreadPoolExecutor(1, thread_name_prefix="scan-done")
        self._dispatcher = threading.Thread(target=self._dispatch, name="scan-dispatch",
                                            daemon=True)
        if workers > 0:
            self._dispatcher.start()

    def submit(self, job: ScanJob, attempt: int = 1) -> None:
        """Queue `job` by priority (then submission order)."""
        with self._cond:
            heapq.heappush(self._queue, (PRIORITY_ORDER.get(job.priority, 1),
                                         next(self._order), job, attempt))
            self._cond.notify_all()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: the API process has threads, which fork would copy in an unknown state. The
        # processes die with this one (a pool process is ~1.4 GB; see service.children).
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent,
                                   initargs=(os.getpid(), str(self.storage_root)))

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue or self._running >= self.workers):
                    self._cond.wait()
                if self._closed:
                    return
                _, _, job, attempt = heapq.heappop(self._queue)
                self._running += 1
                if self._pool is None:
                    self._pool = self._new_pool()
                pool = self._pool
            try:
                future = pool.submit(run_local_scan, str(self.video_path(job.storage_key)),
                                     self.options, str(self.storage_root), self.database_url,
                                     job.scan_id)
            except Exception as exc:  # noqa: BLE001 - a broken pool or a vanished file
                future = Future()
                future.set_exception(exc)
            future.add_done_callback(functools.partial(self._done, job, attempt, pool))

    def _done(self, job: ScanJob, attempt: int, pool: ProcessPoolExecutor,
              future: Future[Outcome]) -> None:
        if self._closed:
            return  # shutting down: the scan stays open in the database and is resubmitted
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self._callbacks.submit(self._finished, job, attempt, pool, future)

    def _finished(self, job: ScanJob, attempt: int, pool: ProcessPoolExecutor,
                  future: Future[Outcome]) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()
        try:
            outcome = future.result()
        except BrokenProcessPool:
            with self._cond:
                if self._pool is pool:  # the first of its jobs to notice replaces the pool
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
            if self._closed:
                return
            if attempt < MAX_ATTEMPTS:
                log.warning("pool process died during scan %s; trying again", job.scan_id)
                self.submit(job, attempt + 1)
                return
            outcome = {"error": {"code": "worker_lost", "message":
                                 "the scanning process died (out of memory or killed) twice; "
                                 "the video may be too demanding for this server"}}
        except FileNotFoundError:
            outcome = {"error": {"code": "media_missing", "message":
                                 "the video is no longer in the media storage; submit it again"}}
        except Exception as exc:  # noqa: BLE001 - every scan must end with a reason
            log.exception("scan %s failed", job.scan_id)
            outcome = {"error": {"code": "internal_error", "message": f"{type(exc).__name__}: "
                                 f"{exc}"}}
        store_outcome(self.on_done, job.scan_id, outcome, self._closing)

    def close(self) -> None:
        """Stop dispatching, cancel queued scans (they stay queued in the database and are
        resubmitted at the next start) and end the pool processes."""
        with self._cond:
            self._closed = True
            self._closing.set()
            self._cond.notify_all()
            pool, self._pool = self._pool, None
        if pool is not None:
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # a scan in flight is recovered at the next start
                process.terminate()
            for process in processes:
                process.join(timeout=10)
        self._callbacks.shutdown(wait=True)
