"""The service's tables as SQLAlchemy 2 models: scans and what a finished scan found (segments,
evidence, the full report), reviewers' decisions, the append-only audit log, API keys and
webhook delivery attempts. The schema itself is created by the Alembic migrations in
`service/migrations`; these classes must match them (a test compares the two)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

SCAN_STATUSES = ("queued", "running", "done", "failed")
FINAL_STATUSES = ("done", "failed")
ROLES = ("uploader", "reviewer", "admin")
DECISION_ACTIONS = ("remove", "restrict", "allow", "escalate")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of every table."""

    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    """An API key: only a salted HMAC of its secret is stored; `prefix` finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class UiSession(Base):
    """A reviewer UI session; the cookie names it (signed), only its sha256 is stored. Logging
    out revokes it here, so an old cookie stops working at once."""

    __tablename__ = "ui_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's id
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"),
                                        index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Scan(Base):
    """One submitted video and, once finished, its verdict."""

    __tablename__ = "scans"
    __table_args__ = (
        UniqueConstraint("uploader_key_id", "idempotency_key", name="uq_scans_idempotency"),
        Index("ix_scans_created", "created_at", "id"),
        Index("ix_scans_content", "sha256", "options_hash"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    options_hash: Mapped[str] = mapped_column(String(64))
    # uploader + sha256 + options while the scan is not failed: a unique column (NULLs never
    # clash) makes a concurrent duplicate upload fail to insert instead of scanning twice.
    active_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255), default="")  # display only, never a path
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    duration: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    risk_score: Mapped[float | None] = mapped_column(Float, index=True)
    flagged: Mapped[bool | None] = mapped_column(Boolean)
    external_id: Mapped[str | None] = mapped_column(String(200), index=True)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    callback_url: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    uploader_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    worker_ref: Mapped[str | None] = mapped_column(String(64))  # the Celery scan id, if any
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # The first match in the bank of removed videos, recorded while the scan still runs (the
    # re-upload fast path, docs/matching.md); the finished report has every match.
    known_match: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Segment(Base):
    """A flagged stretch of a finished scan."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    signals: Mapped[list[Any]] = mapped_column(JSON)
    reasons: Mapped[list[Any]] = mapped_column(JSON)


class Evidence(Base):
    """One piece of evidence of a segment: a weapon detection or a threat hit."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"),
                                            index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "detection" or "threat_hit"
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(64))  # detection label or threat category
    score: Mapped[float] = mapped_column(Float)  # confidence or rule weight
    source: Mapped[str] = mapped_column(String(200))  # model ref or rule name
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class Report(Base):
    """The full versioned JSON report of a finished scan."""

    __tablename__ = "reports"

    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"),
                                         primary_key=True)
    schema_version: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Decision(Base):
    """A reviewer's decision on a scan, with optional per-segment feedback marks."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    reviewer_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")
    segment_marks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One line of the append-only audit log (updates and deletes are refused)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # key id, or "system"
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookDelivery(Base):
    """One attempt to deliver a scan's verdict to its callback URL."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)


class BankedVideo(Base):
    """A video in the bank of removed content: re-uploads of it are matched (docs/matching.md).
    Its id is the scan id for videos a reviewer removed, or the id an imported list gave it."""

    __tablename__ = "bank_videos"

    video_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))  # why it is banked
    source: Mapped[str] = mapped_column(String(200))  # "decision:<id>", "import:<file>"
    audio: Mapped[list[Any]] = mapped_column(JSON, default=list)  # Chromaprint fingerprints
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class BankedHash(Base):
    """One PDQ hash of one sampled frame region of a banked video."""

    __tablename__ = "bank_hashes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("bank_videos.video_id", ondelete="CASCADE"),
                                          index=True)
    t: Mapped[float] = mapped_column(Float)
    quality: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(8))
    pdq: Mapped[str] = mapped_column(String(64), index=True)  # 64 hex digits


class AppendOnlyError(RuntimeError):
    """An attempt to change or delete an audit log entry."""


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, context: Any, instances: Any) -> None:
    """The audit log is append-only in code too (the database refuses it with triggers)."""
    for entry in (*session.dirty, *session.deleted):
        if isinstance(entry, AuditEntry) and (entry in session.deleted
                                              or session.is_modified(entry)):
            raise AppendOnlyError("the audit log is append-only")


@event.listens_for(Session, "do_orm_execute")
def _refuse_audit_statements(state: Any) -> None:
    """Bulk UPDATE/DELETE statements on the audit log are refused as well."""
    if (state.is_update or state.is_delete) and any(
            mapper.class_ is AuditEntry for mapper in state.all_mappers):
        raise AppendOnlyError("the audit log is append-only")
