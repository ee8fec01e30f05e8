"""The Celery tasks of a distributed scan. Each takes a scan id (and a chunk index), calls one
`pipelines.scan` function and stores plain JSON; none holds analysis logic.

- `start_scan` (queue `scan`): probe the stored video, plan its chunks, and dispatch a chord of
  `detect_chunk` (queue `detect`) and `transcribe_chunk` (queue `speech`; it also fingerprints
  the audio for re-upload matching, and runs for that alone with speech off) tasks, one per chunk,
  whose callback is `finish_scan` (queue `scan`): merge, analyse, fuse, store the report.
- Every task is idempotent: chunk results and reports are stored under the scan's result key
  (video sha256 + settings + model versions) and a task whose result is already stored only
  reports it, so a redelivered or duplicated task does no harm and nothing is counted twice.
- Transient errors (connections) are retried with exponential backoff; `ScanError`s (bad input,
  missing weights) and exhausted retries fail the scan at once with a code and a message, and
  every failure is kept in the dead-letter list.
- Models are loaded once per worker process, on first use (or at its start with
  INCITESCAN_PRELOAD=1, for the default options), and kept for later tasks."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import kombu.exceptions
import redis
from celery import Task, chord
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import worker_process_init

from pipelines.errors import InvalidMedia, ScanError
from pipelines.media import probe
from pipelines.optional import usable_options
from pipelines.report import to_dict
from pipelines.scan import (
    AudioPart,
    Chunk,
    ScanOptions,
    VisionPart,
    detect_chunk,
    fingerprints_audio,
    finish,
    listen_chunk,
    load_models,
    model_refs,
    plan_chunks,
    wants_audio,
    wants_speech,
)
from pipelines.speech import Transcriber
from pipelines.types import MediaInfo, Skipped
from pipelines.vision import Detector

from .app import app
from .codec import from_data, to_data
from .config import settings
from .metrics import record_model_load
from .state import FINAL_STATES, ScanStore, now, redis_client, result_key
from .storage import Storage, open_storage

log = logging.getLogger(__name__)
CONFIG = settings()


class PartsMissing(Exception):
    """`finish_scan` ran before every chunk result was stored (possible when a duplicated chunk
    task completes the chord early); it is retried until they are."""


TRANSIENT_ERRORS = (ConnectionError, TimeoutError, redis.ConnectionError, redis.TimeoutError,
                    kombu.exceptions.OperationalError, PartsMissing)


def store() -> ScanStore:
    """The scan store of this process."""
    return ScanStore(redis_client(CONFIG.result_backend), CONFIG.result_ttl)


def media_storage() -> Storage:
    """The shared media storage of this process."""
    return open_storage(CONFIG.storage)


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """The (code, message) a failed scan reports for `exc`."""
    if isinstance(exc, ScanError):
        return exc.code, exc.message
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "time_limit", "a stage of the scan ran over its time limit; the video may be " \
                             "too long for the configured limits"
    if isinstance(exc, PartsMissing):
        return "internal_error", f"chunk results never arrived ({exc}); submit the video again"
    if isinstance(exc, TRANSIENT_ERRORS):
        return "unavailable", f"a service stayed unreachable through every retry ({exc})"
    return "internal_error", f"{type(exc).__name__}: {exc}"


class ScanTask(Task):
    """Base of the scan tasks: reliability settings, and failure bookkeeping."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT_ERRORS
    dont_autoretry_for = (ScanError,)
    retry_backoff = 1
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 10

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """Fail the scan (first failure wins) and keep a dead-letter record."""
        scan_id = (kwargs or {}).get("scan_id")
        code, message = failure_reason(exc)
        records = store()
        record = records.get(scan_id) if scan_id else None
        if record and record.get("key"):
            # Messages name the stored file (its sha256); users know their upload's name.
            message = message.replace(record["key"], record.get("name", "the video"))
        records.dead_letter(scan_id=scan_id, task=self.name, task_id=task_id,
                            kwargs=kwargs, code=code, message=message)
        if scan_id:
            records.transition(scan_id, "failed", error_code=code, error_message=message,
                               finished_at=now())


# ------------------------------------------------------------------ models, once per process

_detectors: dict[tuple[Any, ...], list[Detector]] = {}
_transcribers: dict[tuple[Any, ...], Transcriber] = {}
_loading = threading.Lock()  # a task waits for a preload in progress instead of loading twice


def detectors_for(options: ScanOptions) -> list[Detector]:
    """The detectors `options` name, loaded on first use by this process."""
    key = (options.detectors, options.detector)
    with _loading:
        if key not in _detectors:
            log.info("loading detectors %s in process %d", options.detectors, os.getpid())
            began = time.monotonic()
            _detectors[key] = load_models(replace(options, speech_model="")).detectors
            _loaded(",".join(options.detectors), time.monotonic() - began)
    return _detectors[key]


def transcriber_for(options: ScanOptions) -> Transcriber:
    """The transcriber `options` name, loaded on first use by this process."""
    key = (options.speech_model_name, options.speech, options.music_front_end,
           options.music_speech_model)
    with _loading:
        if key not in _transcribers:
            log.info("loading %s in process %d", options.speech_model_name, os.getpid())
            began = time.monotonic()
            transcriber = load_models(replace(options, detectors=())).transcriber
            assert transcriber is not None
            _loaded(options.speech_model_name, time.monotonic() - began)
            _transcribers[key] = transcriber
    return _transcribers[key]


def _loaded(model: str, seconds: float) -> None:
    log.info("loaded %s in %.1f s", model, seconds)
    try:
        record_model_load(redis_client(CONFIG.broker_url), model, seconds)
    except Exception:  # noqa: BLE001 - a lost sample must not fail the scan
        log.warning("could not record the load time of %s", model, exc_info=True)


@worker_process_init.connect
def preload_models(**_: Any) -> None:
    """With INCITESCAN_PRELOAD set, load the default scan's models as soon as a pool process
    starts (in the background: a slow start would make the pool give up on the process)."""
    if not os.environ.get("INCITESCAN_PRELOAD"):
        return

    def load() -> None:
        detectors_for(ScanOptions())
        transcriber_for(ScanOptions())
        log.info("models preloaded in process %d", os.getpid())

    threading.Thread(target=load, name="preload", daemon=True).start()


# ------------------------------------------------------------------------------- the tasks


@dataclass(frozen=True, slots=True)
class Job:
    """A running scan as the chunk and finish tasks see it."""

    scan_id: str
    name: str  # the upload's file name, shown in the report
    options: ScanOptions
    info: MediaInfo  # path: the local file in the media storage
    chunks: tuple[Chunk, ...]
    result: str  # result key
    speech: bool  # the audio is transcribed
    audio: bool = False  # the audio is extracted (to transcribe it, or only to fingerprint it)
    skipped: tuple[Skipped, ...] = ()  # optional parts left out (not installed), and why

    @property
    def parts(self) -> list[str]:
        """Ids of the chunk parts this scan needs."""
        kinds = ("detect", "speech") if self.audio else ("detect",)
        return [f"{kind}:{c.index}" for kind in kinds for c in self.chunks]


def _local_file(key: str, name: str) -> Path:
    try:
        return media_storage().local_path(key)
    except FileNotFoundError:
        raise InvalidMedia(f"{name}: the uploaded file is no longer in the media storage; "
                           f"submit it again") from None


def open_job(scan_id: str) -> Job | None:
    """The job of a started scan, or None when it is unknown, finished or failed."""
    record = store().get(scan_id)
    if record is None or record["state"] in FINAL_STATES or "info" not in record:
        return None
    options = from_data(ScanOptions, json.loads(record["options"]))
    info = from_data(MediaInfo, json.loads(record["info"]))
    info = replace(info, path=str(_local_file(record["key"], record["name"])))
    return Job(scan_id=scan_id, name=record["name"], options=options, info=info,
               chunks=plan_chunks(info, options), result=record["result"],
               speech=wants_speech(info, options), audio=wants_audio(info, options),
               skipped=tuple(Skipped(**s) for s in json.loads(record.get("skipped") or "[]")))


def _time_limits(hard: float) -> dict[str, float]:
    return {"time_limit": hard, "soft_time_limit": max(1.0, hard - min(60.0, hard / 10))}


@app.task(base=ScanTask, name="incitescan.start_scan", ignore_result=True,
          **_time_limits(CONFIG.scan_time_limit))
def start_scan(*, scan_id: str) -> None:
    """Probe the video, then dispatch its chunk tasks (or finish at once from the cache)."""
    records = store()
    record = records.get(scan_id)
    if record is None:
        log.warning("scan %s is unknown (expired?); nothing to do", scan_id)
        return
    if record["state"] in FINAL_STATES or record.get("dispatched"):
        return  # a redelivered start: the first one got this far
    # Optional parts this worker lacks (fpcalc, weights) are left out of the whole scan, unless
    # required; the chunk tasks read the options stored back here.
    options, skipped = usable_options(from_data(ScanOptions, json.loads(record["options"])))
    info = probe(_local_file(record["key"], record["name"]), options.limits)
    result = result_key(info.sha256, options, model_refs(options))
    if records.report(result) is not None:
        records.update(scan_id, result=result, info=to_data(info))
        records.transition(scan_id, "done", progress=100, started_at=now(), finished_at=now())
        return
    chunks = plan_chunks(info, options)
    speech = wants_audio(info, options)  # a "speech" task also fingerprints the audio
    total = len(chunks) * (2 if speech else 1)
    records.update(scan_id, result=result, info=to_data(info), parts_total=total, parts_done=0,
                   chunks=len(chunks), options=to_data(options),
                   skipped=[to_data(s) for s in skipped])
    if not records.transition(scan_id, "running", started_at=now()):
        return
    priority = int(record.get("priority") or 0)
    header = [detect_chunk_task.si(scan_id=scan_id, index=c.index).set(priority=priority)
              for c in chunks]
    if speech:
        header += [transcribe_chunk_task.si(scan_id=scan_id, index=c.index).set(priority=priority)
                   for c in chunks]
    chord(header)(finish_scan.s(scan_id=scan_id).set(priority=priority))
    records.update(scan_id, dispatched=1)


def _chunk_part(scan_id: str, part: str, compute: Callable[[Job], object]) -> str | None:
    """Compute one part of a scan once: a retried or duplicated task finds it stored."""
    job = open_job(scan_id)
    if job is None:
        return None
    records = store()
    if not records.has_part(job.result, part):
        records.save_part(job.result, part, to_data(compute(job)))
    records.part_done(scan_id, part)
    return part


@app.task(base=ScanTask, name="incitescan.detect_chunk", **_time_limits(CONFIG.chunk_time_limit))
def detect_chunk_task(*, scan_id: str, index: int) -> str | None:
    """Sample and check the frames of one chunk; returns the part id stored."""
    return _chunk_part(scan_id, f"detect:{index}", lambda job: detect_chunk(
        job.info, job.chunks[index], job.options, detectors_for(job.options),
        evidence_dir=CONFIG.storage / "evidence" / job.result))


@app.task(base=ScanTask, name="incitescan.transcribe_chunk",
          **_time_limits(CONFIG.chunk_time_limit))
def transcribe_chunk_task(*, scan_id: str, index: int) -> str | None:
    """Transcribe and fingerprint the audio of one chunk (with its overlap), as the options
    say; returns the part id stored."""
    return _chunk_part(scan_id, f"speech:{index}", lambda job: listen_chunk(
        job.info, job.chunks[index], transcriber_for(job.options) if job.speech else None,
        fingerprint=fingerprints_audio(job.options)))


@app.task(base=ScanTask, name="incitescan.finish_scan", ignore_result=True,
          **_time_limits(CONFIG.scan_time_limit))
def finish_scan(receipts: Any, *, scan_id: str) -> None:
    """Merge the chunk results into the report (`pipelines.scan.finish`) and mark the scan
    done. `receipts` (the chord's results) are ignored: the stored parts are the truth."""
    job = open_job(scan_id)
    if job is None:
        return
    records = store()
    if records.report(job.result) is None:
        parts = records.parts(job.result)
        missing = [p for p in job.parts if p not in parts]
        if missing:
            raise PartsMissing(f"scan {scan_id}: parts {missing} not stored yet")
        vision = [from_data(VisionPart, parts[f"detect:{c.index}"]) for c in job.chunks]
        heard = ([from_data(AudioPart, parts[f"speech:{c.index}"]) for c in job.chunks]
                 if job.audio else [])
        speech = [p.transcript for p in heard if p.transcript is not None] if job.speech else None
        result = finish(replace(job.info, path=job.name), job.options, job.chunks, vision,
                        speech, model_refs(job.options),
                        audio=[p.fingerprint for p in heard if p.fingerprint is not None],
                        skipped=job.skipped)
        report = to_dict(result)
        for item in report["evidence"]:  # never show the server's folders
            item["path"] = os.path.relpath(item["path"], CONFIG.storage)
        records.save_report(job.result, report)
    records.transition(scan_id, "done", progress=100, finished_at=now())
