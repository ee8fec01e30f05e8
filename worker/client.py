"""Python API of the distributed scanner: `submit` a video (stored in the shared media storage,
scanned by whichever workers are running), follow it with `status`, fetch its report with
`result` (the same JSON as `incitescan scan --json`). Every function takes an optional
`WorkerSettings`; by default they come from the environment (`worker.config`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.scan import ScanOptions, model_refs

from .app import make_app
from .codec import to_data
from .config import FAST_TRACK_PRIORITY, NORMAL_PRIORITY, WorkerSettings, settings
from .state import FINAL_STATES, ScanStore, redis_client
from .storage import open_storage


class ScanNotFound(LookupError):
    """No scan has this id (never submitted, or its record expired)."""


class ScanNotFinished(Exception):
    """The scan is still queued or running."""

    def __init__(self, status: ScanStatus) -> None:
        super().__init__(f"scan {status.scan_id} is {status.state} ({status.progress:.0f} %)")
        self.status = status


class ScanFailed(Exception):
    """The scan failed; `code` and `message` say why (see `pipelines.errors`)."""

    def __init__(self, status: ScanStatus) -> None:
        super().__init__(f"{status.name}: {status.error_message} [{status.error_code}]")
        self.status = status
        self.code = status.error_code or "internal_error"
        self.message = status.error_message or "unknown failure"


@dataclass(frozen=True, slots=True)
class ScanStatus:
    """Where one submitted scan stands."""

    scan_id: str
    state: str  # "queued" | "running" | "done" | "failed"
    progress: float  # percent of chunk parts finished; 100 when done
    name: str  # the submitted file's name
    fast_track: bool
    submitted_at: str
    started_at: str | None = None
    finished_at: str | None = None
    parts_done: int = 0
    parts_total: int = 0
    error_code: str | None = None
    error_message: str | None = None
    requeues: int = 0  # tasks of this scan re-enqueued because their worker died or stopped

    @property
    def finished(self) -> bool:
        """Done or failed."""
        return self.state in FINAL_STATES


def _store(config: WorkerSettings) -> ScanStore:
    return ScanStore(redis_client(config.result_backend), config.result_ttl)


def submit(path: Path | str, options: ScanOptions | None = None, *, fast_track: bool = False,
           config: WorkerSettings | None = None) -> str:
    """Store the video at `path` and queue its scan with `options` (default `ScanOptions()`);
    returns the new scan's id. A fast-track scan is served before every normal one queued.

    Raises OSError when the file cannot be read and ValueError for unknown model names."""
    config = config or settings()
    options = options or ScanOptions()
    model_refs(options)  # unknown model names fail here, not in a worker
    key = open_storage(config.storage).put(Path(path))
    scan_id = uuid.uuid4().hex
    priority = FAST_TRACK_PRIORITY if fast_track else NORMAL_PRIORITY
    _store(config).create(scan_id, name=Path(path).name, key=key, options=to_data(options),
                          priority=priority, fast_track=fast_track)
    make_app(config).send_task("incitescan.start_scan", kwargs={"scan_id": scan_id},
                               queue="scan", priority=priority)
    return scan_id


def status(scan_id: str, *, config: WorkerSettings | None = None) -> ScanStatus:
    """The state and progress of scan `scan_id` (raises ScanNotFound)."""
    record = _store(config or settings()).get(scan_id)
    if record is None:
        raise ScanNotFound(f"no scan with id {scan_id!r}")
    return ScanStatus(
        scan_id=scan_id, state=record["state"], progress=float(record.get("progress") or 0),
        name=record.get("name", ""), fast_track=record.get("fast_track") == "true",
        submitted_at=record.get("submitted_at", ""), started_at=record.get("started_at"),
        finished_at=record.get("finished_at"), parts_done=int(record.get("parts_done") or 0),
        parts_total=int(record.get("parts_total") or 0), error_code=record.get("error_code"),
        error_message=record.get("error_message"), requeues=int(record.get("requeues") or 0))


def history(scan_id: str, *, config: WorkerSettings | None = None) -> list[dict[str, Any]]:
    """What happened to scan `scan_id` besides its state changes (re-enqueued tasks and
    why), oldest first."""
    return _store(config or settings()).history(scan_id)


def result(scan_id: str, *, config: WorkerSettings | None = None) -> dict[str, Any]:
    """The report of a finished scan (raises ScanNotFound, ScanNotFinished or ScanFailed)."""
    config = config or settings()
    current = status(scan_id, config=config)
    if current.state == "failed":
        raise ScanFailed(current)
    if current.state != "done":
        raise ScanNotFinished(current)
    store = _store(config)
    record = store.get(scan_id) or {}
    report = store.report(record.get("result", ""))
    if report is None:
        raise ScanNotFound(f"the report of scan {scan_id} has expired")
    # The report may have been made for an identical upload under another name.
    report["video"]["path"] = current.name
    return report


def wait(scan_ids: list[str], timeout: float, *, poll: float = 0.5,
         config: WorkerSettings | None = None) -> dict[str, ScanStatus]:
    """Poll until every scan in `scan_ids` is done or failed, or `timeout` seconds pass;
    returns their last statuses."""
    deadline = time.monotonic() + timeout
    while True:
        states = {i: status(i, config=config) for i in scan_ids}
        if all(s.finished for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(poll)


def dead_letters(count: int = 100, *, config: WorkerSettings | None = None
                 ) -> list[dict[str, Any]]:
    """The newest `count` records of failed tasks."""
    return _store(config or settings()).dead_letters(count)
