"""The scan service behind the HTTP API: submitting videos (deduplicated by content and by
idempotency key, probed before they are accepted), reading scans with role-based visibility,
storing a finished scan's segments, evidence and report, delivering its webhook, reviewers'
decisions, API keys and the audit log. Routes in `service.api` are thin shells over this class;
it knows nothing of HTTP except the `ApiError`s it raises."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import secrets
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.errors import InvalidMedia, MediaTooLarge, ReportInvalid
from pipelines.matching import BankVideo, fingerprint_from_report, match_video
from pipelines.media import probe
from pipelines.report import check_report
from pipelines.scan import model_refs
from worker.storage import Storage, open_storage

from . import schemas
from .auth import Principal, authenticate, create_key
from .bank import DatabaseBank, store_video, with_known_matches
from .children import end_stale_children
from .clips import MIN_CLIP_S, cut_clip
from .db import make_engine, migrate, session_factory
from .errors import ApiError
from .execution import Executor, LocalExecutor, Outcome, ScanJob
from .models import (
    FINAL_STATUSES,
    ApiKey,
    AuditEntry,
    Decision,
    Evidence,
    Report,
    Scan,
    Segment,
    UiSession,
    WebhookDelivery,
    utcnow,
)
from .settings import ServiceSettings
from .throttle import AuthThrottle
from .uploads import StagedUpload
from .webhooks import Attempt, CallbackRefused, check_callback_url, deliver

log = logging.getLogger(__name__)
SYSTEM = "system"


def options_fingerprint(options: Any) -> str:
    """Hash of everything that changes a scan's result: the options and the model versions."""
    identity = {"settings": asdict(options), "models": model_refs(options)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def encode_cursor(*values: Any) -> str:
    """An opaque pagination cursor holding `values`."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, count: int) -> list[Any]:
    """The values of a cursor made by `encode_cursor`, or a 422 ApiError."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(values, list) and len(values) == count:
            return values
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise ApiError(422, "invalid_cursor", "cursor is not one this API returned")


def check_clip_range(start: float, end: float, duration: float | None, max_seconds: float
                     ) -> tuple[float, float]:
    """The clip range `[start, end)` to cut, checked before any command is built: finite,
    start >= 0, at most `max_seconds` long, inside the video (an end past it is cut back to
    the end) and then at least MIN_CLIP_S long; a 422 ApiError otherwise."""
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ApiError(422, "invalid_range", "start must be >= 0 and end after start")
    if end - start > max_seconds:
        raise ApiError(422, "clip_too_long", f"clips are at most {max_seconds:g} s long")
    if duration is not None:
        if start >= duration:
            raise ApiError(422, "invalid_range", f"start is past the end of the video "
                           f"({duration:g} s)")
        end = min(end, duration)
    if end - start < MIN_CLIP_S:
        raise ApiError(422, "invalid_range", f"clips are at least {MIN_CLIP_S:g} s long")
    return start, end


def as_utc(value: datetime, name: str) -> datetime:
    """`value` (timezone-aware) in UTC, or a 422 ApiError when that falls outside the calendar
    (year 1 with a positive offset, year 9999 with a negative one)."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(422, "invalid_request", f"{name} is outside the dates this API "
                       "handles (years 1-9999 in UTC)") from None


def _not_found(what: str = "scan") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


class ScanService:
    """Everything the API does, over one database, one media storage and one executor."""

    def __init__(self, settings: ServiceSettings, executor: Executor | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.sessions = session_factory(self.engine)
        self.storage_root = Path(settings.storage).expanduser()
        self.storage: Storage = open_storage(self.storage_root)
        self.options = settings.scan_options()
        self.options_hash = options_fingerprint(self.options)
        self.bank = DatabaseBank(self.engine)  # removed videos, for re-upload matching
        self.executor = executor or self._default_executor()
        self._webhooks = ThreadPoolExecutor(4, thread_name_prefix="webhook")
        self._stopping = threading.Event()
        self.throttle = AuthThrottle(settings.auth_max_failures, settings.auth_failure_window_s,
                                     settings.auth_lockout_s)

    def _default_executor(self) -> Executor:
        if self.settings.broker_url:
            from .celery_executor import CeleryExecutor

            return CeleryExecutor(self.settings, self.options, on_done=self.finish,
                                  on_submitted=self.record_worker_ref,
                                  on_progress=self.record_progress,
                                  video_path=self.storage.local_path)
        return LocalExecutor(workers=self.settings.local_workers, options=self.options,
                             storage_root=self.storage_root,
                             database_url=self.settings.database_url,
                             video_path=self.storage.local_path, on_done=self.finish)

    # ------------------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Migrate the database, then resubmit scans and webhooks left open by a stop."""
        migrate(self.engine)
        self.storage_root.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()
        end_stale_children(self.storage_root)  # pool processes of a server killed before
        threading.Thread(target=self._sweep_periodically, name="staging-sweep",
                         daemon=True).start()
        with self.sessions() as session:
            open_scans = session.scalars(select(Scan).where(Scan.status.in_(
                ("queued", "running"))).order_by(Scan.created_at)).all()
            undelivered = session.scalars(select(Scan.id).where(
                Scan.status.in_(FINAL_STATUSES), Scan.callback_url.is_not(None),
                ~select(WebhookDelivery.id).where(
                    WebhookDelivery.scan_id == Scan.id,
                    or_(WebhookDelivery.delivered.is_(True),
                        WebhookDelivery.attempt >= self.settings.webhook_max_attempts))
                .exists())).all()
        for row in open_scans:
            self.executor.submit(ScanJob(row.id, row.sha256, row.filename, row.priority,
                                         row.worker_ref))
        for scan_id in undelivered:
            self._webhooks.submit(self._deliver_webhook, scan_id)

    def _sweep_staging(self) -> int:
        """Remove staged uploads and partial storage writes older than `staging_max_age_s`
        (left by a crash, or by a failure path that missed them); returns how many."""
        cutoff = time.time() - self.settings.staging_max_age_s
        stale = [*(self.storage_root / ".incoming").glob(".upload-*"),
                 *self.storage_root.glob(".put-*")]
        removed = 0
        for path in stale:
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < cutoff:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed += 1
        if removed:
            log.warning("removed %d stale staged upload(s) from %s", removed, self.storage_root)
        return removed

    def _sweep_periodically(self) -> None:
        interval = min(600.0, max(0.5, self.settings.staging_max_age_s / 6))
        while not self._stopping.wait(interval):
            try:
                self._sweep_staging()
            except Exception:  # noqa: BLE001 - the sweep must never stop
                log.exception("sweeping the staging folder failed")

    def close(self) -> None:
        """Stop the executor and webhook deliveries; release database connections."""
        self._stopping.set()
        self.executor.close()
        self._webhooks.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()

    # --------------------------------------------------------------------------- auth

    def authenticate(self, key: str) -> Principal | None:
        """The caller holding API key `key`, or None."""
        with self.sessions() as session:
            return authenticate(session, key)

    def check_throttle(self, address: str) -> None:
        """A 429 ApiError while `address` is locked out for sending wrong keys."""
        wait = self.throttle.retry_after(address)
        if wait > 0:
            raise ApiError(429, "too_many_attempts", f"too many wrong API keys from your "
                           f"address; try again in {wait:.0f} s",
                           headers={"Retry-After": str(max(1, round(wait)))})

    def authenticate_from(self, key: str, address: str, via: str) -> Principal | None:
        """`authenticate(key)` for a client at `address`, rate limited: a locked-out address
        gets a 429 ApiError without the key being checked; a wrong key is counted and audited
        (`auth.failure`), and the one that locks the address out too (`auth.lockout`)."""
        self.check_throttle(address)
        principal = self.authenticate(key)
        if principal is None:
            locked = self.throttle.failed(address)
            prefix = key.split("_")[1][:16] if key.count("_") >= 2 else ""
            with self.sessions.begin() as session:
                session.add(AuditEntry(actor="anonymous", action="auth.failure",
                                       target=f"client:{address}"[:200],
                                       details={"via": via, "prefix": prefix}))
                if locked:
                    session.add(AuditEntry(actor=SYSTEM, action="auth.lockout",
                                           target=f"client:{address}"[:200],
                                           details={"via": via,
                                                    "failures": self.throttle.max_failures,
                                                    "seconds": self.throttle.lockout_s}))
            if locked:
                log.warning("locked out %s for %.0f s after %d wrong API keys", address,
                            self.throttle.lockout_s, self.throttle.max_failures)
        return principal

    # --------------------------------------------------------------------- UI sessions

    @staticmethod
    def _session_hash(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def open_ui_session(self, principal: Principal, seconds: float) -> str:
        """A new server-side UI session of `principal`; returns its id (for the cookie)."""
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        with self.sessions.begin() as session:
            session.add(UiSession(id=self._session_hash(session_id), key_id=principal.key_id,
                                  created_at=now, expires_at=now + timedelta(seconds=seconds)))
        return session_id

    def ui_session_open(self, session_id: str, key_id: str) -> bool:
        """Whether UI session `session_id` of key `key_id` exists, unexpired and not ended."""
        with self.sessions() as session:
            row = session.get(UiSession, self._session_hash(session_id))
        return (row is not None and row.key_id == key_id and row.revoked_at is None
                and row.expires_at > utcnow())

    def close_ui_session(self, session_id: str) -> None:
        """End UI session `session_id` (logout): its cookie stops working at once."""
        with self.sessions.begin() as session:
            row = session.get(UiSession, self._session_hash(session_id))
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()

    # ----------------------------------------------------------------------- submitting

    def by_idempotency_key(self, principal: Principal, key: str) -> Scan | None:
        """The scan `principal` submitted earlier with Idempotency-Key `key`, if any."""
        with self.sessions() as session:
            return session.scalars(select(Scan).where(
                Scan.uploader_key_id == principal.key_id, Scan.idempotency_key == key)).first()

    def submit_upload(self, principal: Principal, staged: StagedUpload,
                      fields: schemas.ScanOptionsIn, idempotency_key: str | None
                      ) -> tuple[Scan, bool]:
        """Accept a streamed upload (the staging file is always removed); returns the scan and
        whether it is new."""
        try:
            return self._submit(principal, sha256=staged.sha256, media=staged.path,
                                filename=staged.filename, fields=fields,
                                idempotency_key=idempotency_key, staged=staged)
        finally:
            staged.discard()

    def submit_reference(self, principal: Principal, reference: schemas.ScanReference,
                         idempotency_key: str | None) -> tuple[Scan, bool]:
        """Accept a video already in the media storage, by its key. Keys are scoped to their
        owner: only a key that uploaded this content before may name it (a sha256 is no secret:
        anyone who knows a video's hash must not get its report or clips)."""
        if not (self.owns_media(principal, reference.storage_key)
                and self.storage.exists(reference.storage_key)):
            # The same answer whether the object is missing or someone else's: no oracle.
            raise ApiError(422, "storage_key_not_found",
                           "no object with that storage_key among the videos you uploaded")
        return self._submit(principal, sha256=reference.storage_key,
                            media=self.storage.local_path(reference.storage_key),
                            filename=reference.filename or "", fields=reference,
                            idempotency_key=idempotency_key, staged=None)

    def owns_media(self, principal: Principal, sha256: str) -> bool:
        """Whether `principal` uploaded the content `sha256` (has a scan of it)."""
        with self.sessions() as session:
            return session.scalars(select(Scan.id).where(
                Scan.sha256 == sha256, Scan.uploader_key_id == principal.key_id).limit(1)
            ).first() is not None

    def _check_callback(self, url: str | None) -> str | None:
        if url is None:
            return None
        if self.settings.webhook_secret is None:
            raise ApiError(422, "webhooks_disabled", "this server has no webhook secret "
                           "(INCITESCAN_WEBHOOK_SECRET), so callback_url cannot be used")
        try:
            return check_callback_url(url, allow_private=self.settings.webhook_allow_private)
        except CallbackRefused as exc:
            raise ApiError(422, "callback_url_refused", str(exc)) from None

    def _submit(self, principal: Principal, *, sha256: str, media: Path, filename: str,
                fields: schemas.ScanOptionsIn, idempotency_key: str | None,
                staged: StagedUpload | None) -> tuple[Scan, bool]:
        callback_url = self._check_callback(fields.callback_url)
        active_key = f"{principal.key_id}:{sha256}:{self.options_hash}"
        with self.sessions() as session:
            existing = session.scalars(select(Scan).where(Scan.active_key == active_key)).first()
        if existing is not None:
            return existing, False
        try:
            info = probe(media, self.settings.media_limits())
        except MediaTooLarge as exc:
            raise ApiError(413, exc.code, exc.message) from None
        except InvalidMedia as exc:
            raise ApiError(422, exc.code, exc.message) from None
        if info.sha256 != sha256:
            raise ApiError(422, "storage_key_mismatch",
                           "the stored object's content does not match its key")
        if staged is not None:
            self.storage.put(staged.path)
        row = Scan(id=str(uuid.uuid4()), sha256=sha256, options_hash=self.options_hash,
                   active_key=active_key, idempotency_key=idempotency_key,
                   filename=filename, size_bytes=info.size_bytes, duration=info.duration,
                   status="queued", progress=0.0, external_id=fields.external_id,
                   priority=fields.priority, callback_url=callback_url,
                   metadata_=fields.metadata, uploader_key_id=principal.key_id)
        try:
            with self.sessions.begin() as session:
                session.add(row)
                session.add(AuditEntry(actor=principal.key_id, action="scan.submit",
                                       target=f"scan:{row.id}",
                                       details={"sha256": sha256, "size_bytes": info.size_bytes,
                                                "external_id": fields.external_id}))
        except IntegrityError:  # a concurrent duplicate won the race: answer with its scan
            with self.sessions() as session:
                found = session.scalars(select(Scan).where(or_(
                    Scan.active_key == active_key,
                    (Scan.uploader_key_id == principal.key_id)
                    & (Scan.idempotency_key == idempotency_key)))).first()
            if found is None:
                raise
            if found.idempotency_key == idempotency_key and found.sha256 != sha256:
                raise ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used "
                               "for another video; use a new key for a new video") from None
            return found, False
        earlier = self._earlier_report(sha256)
        if earlier is not None:  # the same video with the same settings was scanned already
            self.finish(row.id, {"report": earlier})
        else:
            self.executor.submit(ScanJob(row.id, sha256, filename, row.priority))
        return row, True

    def _earlier_report(self, sha256: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            return session.scalars(select(Report.body).join(Scan, Scan.id == Report.scan_id)
                                   .where(Scan.sha256 == sha256,
                                          Scan.options_hash == self.options_hash,
                                          Scan.status == "done").limit(1)).first()

    # ----------------------------------------------------------------------- finishing

    def record_worker_ref(self, scan_id: str, worker_ref: str) -> None:
        """Remember the distributed scan that runs scan `scan_id`."""
        with self.sessions.begin() as session:
            session.execute(update(Scan).where(Scan.id == scan_id).values(
                worker_ref=worker_ref, updated_at=utcnow()))

    def record_progress(self, scan_id: str, status: str, progress: float) -> None:
        """Record the state and progress of a scan that has not finished."""
        values: dict[str, Any] = {"status": status, "progress": min(99.0, progress),
                                  "updated_at": utcnow()}
        with self.sessions.begin() as session:
            row = session.get(Scan, scan_id)
            if row is None or row.status in FINAL_STATUSES:
                return
            if status == "running" and row.started_at is None:
                values["started_at"] = utcnow()
            session.execute(update(Scan).where(Scan.id == scan_id).values(**values))

    def finish(self, scan_id: str, outcome: Outcome) -> None:
        """Store the outcome of a scan (once: a scan already done or failed is left alone),
        then deliver its webhook."""
        report = None
        if "report" in outcome:
            try:  # a malformed report (version skew, a damaged result) fails the scan, once
                report = self._match_bank(check_report(outcome["report"]))
            except ReportInvalid as exc:
                outcome = {"error": exc.to_dict()}
        with self.sessions.begin() as session:
            row = session.get(Scan, scan_id, with_for_update=True)
            if row is None or row.status in FINAL_STATUSES:
                return
            now = utcnow()
            if report is not None:
                self._store_report(session, row, report)
                row.status, row.progress = "done", 100.0
            else:
                error = outcome.get("error") or {}
                row.status = "failed"
                row.error_code = str(error.get("code", "internal_error"))[:64]
                row.error_message = str(error.get("message", "unknown failure"))
                row.active_key = None  # a new upload of the same video may try again
            row.started_at = row.started_at or now
            row.finished_at = row.updated_at = now
            session.add(AuditEntry(actor=SYSTEM, action="scan.finish", target=f"scan:{row.id}",
                                   details={"status": row.status, "risk_score": row.risk_score,
                                            "error_code": row.error_code}))
            callback = row.callback_url
        if callback and not self._stopping.is_set():
            # RuntimeError: shutting down; it is delivered after the next start.
            with contextlib.suppress(RuntimeError):
                self._webhooks.submit(self._deliver_webhook, scan_id)

    def _match_bank(self, report: dict[str, Any]) -> dict[str, Any]:
        """`report` matched against the bank of removed videos, unless the scan did that
        itself (a local pool scan checks the bank as it runs, for the fast path)."""
        frames, audio = fingerprint_from_report(report)
        if report.get("known_matches") or not frames:
            return report
        bank = self.bank.current()
        if not bank.videos:
            return report
        fps = float((report.get("settings") or {}).get("fps") or self.options.fps)
        matches = match_video(frames, audio, bank, interval=1.0 / fps,
                              options=self.options.match)
        return with_known_matches(report, matches, self.options.fusion) if matches else report

    def _store_report(self, session: Session, row: Scan, report: dict[str, Any]) -> None:
        report = json.loads(json.dumps(report))  # a private copy, plain JSON
        report["video"]["path"] = row.filename or row.sha256
        row.risk_score = float(report["risk_score"])
        row.flagged = bool(report["flagged"])
        if report.get("known_matches"):
            row.known_match = report["known_matches"][0]
        session.add(Report(scan_id=row.id, schema_version=str(report["schema_version"]),
                           body=report))
        for index, found in enumerate(report["flagged_segments"]):
            segment = Segment(scan_id=row.id, index=index, start=found["start"],
                              end=found["end"], score=found["score"],
                              signals=list(found["signals"]), reasons=list(found["reasons"]))
            session.add(segment)
            session.flush()  # the evidence rows need the segment's id
            for det in found.get("detections", []):
                session.add(Evidence(
                    scan_id=row.id, segment_id=segment.id, kind="detection", start=det["t"],
                    end=det["t"], label=det["label"], score=det["confidence"],
                    source=det["model"], details={"box": det["box"],
                                                  "source_label": det.get("source_label", ""),
                                                  "frame_index": det.get("frame_index", -1)}))
            for hit in found.get("threat_hits", []):
                session.add(Evidence(
                    scan_id=row.id, segment_id=segment.id, kind="threat_hit",
                    start=hit["start"], end=hit["end"], label=hit["category"],
                    score=hit["weight"], source=hit["rule"],
                    details={"text": hit["text"], "meaning": hit["meaning"],
                             "segment_text": hit.get("segment_text", "")}))

    # ------------------------------------------------------------------------- webhooks

    def webhook_payload(self, scan_id: str) -> bytes:
        """The JSON body POSTed to a scan's callback URL."""
        with self.sessions() as session:
            row = session.get(Scan, scan_id)
            if row is None:
                raise _not_found()
            view = self._view(session, row)
        scan = view.model_dump(mode="json", exclude={"decisions", "webhook", "callback_url"})
        return json.dumps({"event": "scan.finished", "scan": scan}, sort_keys=True).encode()

    def _deliver_webhook(self, scan_id: str) -> None:
        secret = self.settings.webhook_secret
        with self.sessions() as session:
            row = session.get(Scan, scan_id)
            done = session.scalar(select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.scan_id == scan_id))
        if row is None or not row.callback_url or secret is None:
            return
        url, body = row.callback_url, self.webhook_payload(scan_id)

        def record(attempt: Attempt) -> None:
            with self.sessions.begin() as session:
                session.add(WebhookDelivery(
                    scan_id=scan_id, url=url, attempt=attempt.attempt + (done or 0),
                    status_code=attempt.status_code, error=attempt.error,
                    delivered=attempt.delivered, duration_ms=attempt.duration_ms))

        remaining = self.settings.webhook_max_attempts - (done or 0)
        if remaining <= 0:
            return
        try:
            deliver(url, body, secret.get_secret_value(),
                    allow_private=self.settings.webhook_allow_private, max_attempts=remaining,
                    backoff=self.settings.webhook_backoff, timeout=self.settings.webhook_timeout,
                    record=record, sleep=lambda s: not self._stopping.wait(s))
        except Exception:  # noqa: BLE001 - a failing receiver must not take the service down
            log.exception("webhook delivery of scan %s failed", scan_id)

    # -------------------------------------------------------------------------- reading

    def _visible(self, session: Session, principal: Principal, scan_id: str) -> Scan:
        row = session.get(Scan, scan_id)
        if row is None or not (principal.can("scans:read_all")
                               or row.uploader_key_id == principal.key_id):
            raise _not_found()  # another uploader's scan does not exist, as far as you know
        return row

    def _audit_view(self, session: Session, principal: Principal, action: str,
                    target: str) -> None:
        if principal.role == "reviewer":  # reviewers' views are part of the review record
            session.add(AuditEntry(actor=principal.key_id, action=action, target=target,
                                   details={}))

    def get_scan(self, principal: Principal, scan_id: str) -> schemas.Scan:
        """A scan with its segments, decisions and webhook state."""
        with self.sessions.begin() as session:
            row = self._visible(session, principal, scan_id)
            self._audit_view(session, principal, "scan.view", f"scan:{scan_id}")
            return self._view(session, row)

    def summary(self, row: Scan) -> dict[str, Any]:
        """The fields of `schemas.ScanSummary` for `row`."""
        return {
            "id": row.id, "status": row.status, "progress": row.progress,
            "risk_score": row.risk_score, "flagged": row.flagged, "sha256": row.sha256,
            "filename": row.filename, "size_bytes": row.size_bytes, "duration": row.duration,
            "external_id": row.external_id, "priority": row.priority,
            "metadata": row.metadata_, "created_at": row.created_at,
            "updated_at": row.updated_at, "started_at": row.started_at,
            "finished_at": row.finished_at,
            "error": {"code": row.error_code, "message": row.error_message or ""}
            if row.error_code else None,
        }

    def _view(self, session: Session, row: Scan) -> schemas.Scan:
        segments = session.scalars(select(Segment).where(Segment.scan_id == row.id)
                                   .order_by(Segment.index)).all()
        decisions = session.scalars(select(Decision).where(Decision.scan_id == row.id)
                                    .order_by(Decision.id)).all()
        webhook = None
        if row.callback_url:
            attempts = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.scan_id == row.id).order_by(WebhookDelivery.id)).all()
            last = attempts[-1] if attempts else None
            webhook = schemas.WebhookStatus(
                attempts=len(attempts), delivered=any(a.delivered for a in attempts),
                last_status_code=last.status_code if last else None,
                last_error=last.error if last else None, last_attempt_at=last.at if last else None)
        return schemas.Scan(
            **self.summary(row), callback_url=row.callback_url, known_match=row.known_match,
            segments=[schemas.Segment(index=s.index, start=s.start, end=s.end, score=s.score,
                                      signals=s.signals, reasons=s.reasons) for s in segments],
            decisions=[self._decision_view(d) for d in decisions], webhook=webhook)

    @staticmethod
    def _decision_view(row: Decision) -> schemas.Decision:
        return schemas.Decision(id=row.id, scan_id=row.scan_id, reviewer=row.reviewer_key_id,
                                action=row.action, reason=row.reason, note=row.note,  # type: ignore[arg-type]
                                segment_marks=row.segment_marks, created_at=row.created_at)

    def list_scans(self, principal: Principal, *, status: str | None = None,
                   min_score: float | None = None, max_score: float | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None,
                   external_id: str | None = None, limit: int = 50,
                   cursor: str | None = None) -> schemas.ScanPage:
        """Scans newest first, filtered; uploaders see only their own."""
        query = select(Scan)
        if not principal.can("scans:read_all"):
            query = query.where(Scan.uploader_key_id == principal.key_id)
        if status is not None:
            query = query.where(Scan.status == status)
        if min_score is not None:
            query = query.where(Scan.risk_score >= min_score)
        if max_score is not None:
            query = query.where(Scan.risk_score <= max_score)
        if created_after is not None:
            query = query.where(Scan.created_at >= as_utc(created_after, "created_after"))
        if created_before is not None:
            query = query.where(Scan.created_at < as_utc(created_before, "created_before"))
        if external_id is not None:
            query = query.where(Scan.external_id == external_id)
        if cursor is not None:
            at, last_id = decode_cursor(cursor, 2)
            try:
                when = datetime.fromisoformat(str(at))
            except ValueError:
                raise ApiError(422, "invalid_cursor", "cursor is not one this API returned"
                               ) from None
            if when.tzinfo is None:
                raise ApiError(422, "invalid_cursor", "cursor is not one this API returned")
            try:
                when = when.astimezone(UTC)
            except (OverflowError, ValueError):
                raise ApiError(422, "invalid_cursor", "cursor is not one this API returned"
                               ) from None
            query = query.where(or_(Scan.created_at < when,
                                    (Scan.created_at == when) & (Scan.id < str(last_id))))
        query = query.order_by(Scan.created_at.desc(), Scan.id.desc()).limit(limit + 1)
        with self.sessions() as session:
            rows = session.scalars(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return schemas.ScanPage(
            items=[schemas.ScanSummary(**self.summary(r)) for r in rows],
            next_cursor=encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id)
            if more else None)

    def report(self, principal: Principal, scan_id: str) -> dict[str, Any]:
        """The full JSON report of a finished scan."""
        with self.sessions.begin() as session:
            row = self._visible(session, principal, scan_id)
            report = session.get(Report, scan_id)
            if report is None:
                raise self._not_ready(row)
            self._audit_view(session, principal, "report.view", f"scan:{scan_id}")
            return report.body

    @staticmethod
    def _not_ready(row: Scan) -> ApiError:
        if row.status == "failed":
            return ApiError(409, "scan_failed", f"the scan failed ({row.error_code}): "
                            f"{row.error_message}")
        return ApiError(409, "scan_not_finished", f"the scan is {row.status}; try again later")

    def frame(self, principal: Principal, scan_id: str, frame_index: int) -> Path:
        """The evidence thumbnail of sampled frame `frame_index` of a finished scan."""
        report = self.report(principal, scan_id)
        for item in report.get("evidence", []):
            if item.get("frame_index") == frame_index:
                path = (self.storage_root / str(item["path"])).resolve()
                # Evidence images only: never a stored video or another folder of the store.
                if path.is_relative_to(self.evidence_root()) and path.is_file():
                    return path
                raise ApiError(404, "evidence_missing", "the evidence image is no longer stored")
        raise ApiError(404, "not_found", "no evidence image for that frame; see the report's "
                                         "`evidence` list for the frames that have one")

    def evidence_root(self) -> Path:
        """The folder every evidence image lives under."""
        return (self.storage_root / "evidence").resolve()

    def clip(self, principal: Principal, scan_id: str, start: float, end: float) -> Path:
        """A short MP4 of `[start, end)` seconds of the scanned video (a temporary file)."""
        with self.sessions.begin() as session:
            row = self._visible(session, principal, scan_id)
            self._audit_view(session, principal, "clip.view", f"scan:{scan_id}")
        start, end = check_clip_range(start, end, row.duration,
                                      self.settings.clip_max_seconds)
        try:
            source = self.storage.local_path(row.sha256)
        except FileNotFoundError:
            raise ApiError(404, "media_missing", "the video is no longer stored") from None
        try:
            return cut_clip(source, start, end, max_seconds=self.settings.clip_max_seconds)
        except InvalidMedia as exc:
            raise ApiError(422, "clip_failed", exc.message) from None

    # ------------------------------------------------------------------------- deciding

    def decide(self, principal: Principal, scan_id: str, decision: schemas.DecisionIn
               ) -> schemas.Decision:
        """Record a reviewer's decision (and its audit entry)."""
        with self.sessions.begin() as session:
            row = self._visible(session, principal, scan_id)
            if row.status not in FINAL_STATUSES:
                raise ApiError(409, "scan_not_finished",
                               f"the scan is {row.status}; decide once it has finished")
            count = session.scalar(select(func.count()).select_from(Segment).where(
                Segment.scan_id == scan_id)) or 0
            unknown = sorted({m.segment for m in decision.segment_marks if m.segment >= count})
            if unknown:
                raise ApiError(422, "unknown_segment", f"the scan has {count} flagged "
                               f"segments; no segment {unknown[0]}")
            marks = [m.model_dump() for m in decision.segment_marks]
            entry = Decision(scan_id=scan_id, reviewer_key_id=principal.key_id,
                             action=decision.action, reason=decision.reason,
                             note=decision.note, segment_marks=marks)
            session.add(entry)
            session.flush()
            session.add(AuditEntry(actor=principal.key_id, action="decision.create",
                                   target=f"scan:{scan_id}",
                                   details={"decision_id": entry.id, "action": decision.action,
                                            "reason": decision.reason,
                                            "segment_marks": len(marks)}))
            if decision.action == "remove":
                self._bank_scan(session, row, entry)
            return self._decision_view(entry)

    def _bank_scan(self, session: Session, row: Scan, decision: Decision) -> None:
        """Put the hashes of a removed scan's video into the bank, so re-uploads match."""
        report = session.get(Report, row.id)
        frames, audio = fingerprint_from_report(report.body if report is not None else {})
        if not frames:  # a failed scan, or one from before re-upload matching
            return
        video = BankVideo(video_id=row.id, label=f"removed by reviewer: {decision.reason}",
                          frames=frames, audio=audio)
        hashes = store_video(session, video, f"decision:{decision.id}")
        session.add(AuditEntry(actor=decision.reviewer_key_id, action="bank.add",
                               target=f"scan:{row.id}",
                               details={"decision_id": decision.id, "hashes": hashes}))

    # ------------------------------------------------------------------------ audit log

    def audit(self, *, actor: str | None = None, action: str | None = None,
              target: str | None = None, limit: int = 100, cursor: str | None = None
              ) -> schemas.AuditPage:
        """The audit log, newest first."""
        query = select(AuditEntry)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        if target is not None:
            query = query.where(AuditEntry.target == target)
        if cursor is not None:
            (last_id,) = decode_cursor(cursor, 1)
            if (not isinstance(last_id, int) or isinstance(last_id, bool)
                    or not 0 <= last_id < 2**63):  # a database integer
                raise ApiError(422, "invalid_cursor", "cursor is not one this API returned")
            query = query.where(AuditEntry.id < last_id)
        with self.sessions() as session:
            rows = session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return schemas.AuditPage(
            items=[schemas.AuditEntry(id=r.id, at=r.at, actor=r.actor, action=r.action,
                                      target=r.target, details=r.details) for r in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None)

    # ------------------------------------------------------------------------- API keys

    def create_key(self, principal: Principal | None, request: schemas.KeyIn
                   ) -> schemas.KeyCreated:
        """Create an API key (its text is returned once, never stored)."""
        with self.sessions.begin() as session:
            row, key = create_key(session, request.role, request.name,
                                  actor=principal.key_id if principal else SYSTEM)
        return schemas.KeyCreated(id=row.id, role=request.role, name=row.name,
                                  prefix=row.prefix, key=key, created_at=row.created_at)

    def list_keys(self) -> list[schemas.KeyInfo]:
        """Every API key, newest first (never a secret)."""
        with self.sessions() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())).all()
        return [schemas.KeyInfo(id=r.id, role=r.role, name=r.name, prefix=r.prefix,  # type: ignore[arg-type]
                                created_at=r.created_at, revoked_at=r.revoked_at) for r in rows]

    def revoke_key(self, principal: Principal, key_id: str) -> schemas.KeyInfo:
        """Revoke an API key (idempotent); it stops working at once."""
        with self.sessions.begin() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise _not_found("API key")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.add(AuditEntry(actor=principal.key_id, action="key.revoke",
                                       target=f"key:{key_id}", details={}))
            return schemas.KeyInfo(id=row.id, role=row.role, name=row.name,  # type: ignore[arg-type]
                                   prefix=row.prefix, created_at=row.created_at,
                                   revoked_at=row.revoked_at)
