"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI spec).
Inputs forbid unknown fields and bound every size, so a hostile client cannot make the service
store or parse more than it means to."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .jsonlimits import MAX_DEPTH, value_depth

Priority = Literal["high", "normal", "low"]
Action = Literal["remove", "restrict", "allow", "escalate"]
Role = Literal["uploader", "reviewer", "admin"]
Status = Literal["queued", "running", "done", "failed"]
MAX_METADATA_BYTES = 16 * 1024


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable code and a message for people."""

    code: str
    message: str
    details: list[Any] | None = None


class ErrorResponse(BaseModel):
    """Every error response of the API."""

    error: ErrorDetail


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Input(BaseModel):
    """Base of request bodies: unknown fields are an error, and so is a NUL character in any
    text (PostgreSQL cannot store it, and no honest client sends it)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


class ScanOptionsIn(Input):
    """Optional fields of a submission (form fields of an upload, or JSON of a reference)."""

    external_id: str | None = Field(None, max_length=200,
                                    description="your own id for the video, echoed back")
    priority: Priority = "normal"
    callback_url: str | None = Field(None, max_length=2000,
                                     description="http(s) URL the signed verdict is POSTed to")
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="free JSON object, at most 16 KiB")

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value_depth(value) > MAX_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_DEPTH} levels")
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is over {MAX_METADATA_BYTES} bytes as JSON")
        return value


class ScanReference(ScanOptionsIn):
    """Submit a video already in the configured media storage, by its content key."""

    storage_key: str = Field(pattern=r"^[0-9a-f]{64}$",
                             description="sha256 of the stored file (its storage key)")
    filename: str | None = Field(None, max_length=255, description="display name only")


class Segment(BaseModel):
    """A flagged stretch of the video."""

    index: int
    start: float
    end: float
    score: float
    signals: list[str]
    reasons: list[str]


class SegmentMark(Input):
    """A reviewer's feedback on one flagged segment (kept for evaluation and retraining)."""

    segment: int = Field(ge=0, le=10_000, description="index of the flagged segment")
    correct: bool = Field(description="whether the segment was rightly flagged")
    comment: str = Field("", max_length=1000,
                         description='e.g. "wrong: this is a phone, not a gun"')


class DecisionIn(Input):
    """A reviewer's decision on a scan."""

    action: Action
    reason: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=5000)
    segment_marks: list[SegmentMark] = Field(default_factory=list, max_length=200)


class Decision(BaseModel):
    """A recorded decision."""

    id: int
    scan_id: str
    reviewer: str = Field(description="id of the reviewer's API key")
    action: Action
    reason: str
    note: str
    segment_marks: list[SegmentMark]
    created_at: datetime


class WebhookStatus(BaseModel):
    """Delivery of the verdict to `callback_url` so far."""

    attempts: int
    delivered: bool
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None


class ScanSummary(BaseModel):
    """A scan as listed."""

    id: str
    status: Status
    progress: float = Field(description="percent, 0..100")
    risk_score: float | None
    flagged: bool | None
    sha256: str
    filename: str
    size_bytes: int
    duration: float | None
    external_id: str | None
    priority: Priority
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorDetail | None


class Scan(ScanSummary):
    """A scan with its flagged segments, decisions and webhook delivery state."""

    callback_url: str | None
    segments: list[Segment]
    decisions: list[Decision]
    webhook: WebhookStatus | None
    known_match: dict[str, Any] | None = Field(
        default=None, description="the strongest match in the bank of removed videos (a "
        "`known_matches` item of the report: video_id, frame_share, segments, reason...); "
        "set while the scan still runs as soon as its first frames match (docs/matching.md)")


class ScanPage(BaseModel):
    """One page of scans, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[ScanSummary]
    next_cursor: str | None


class AuditEntry(BaseModel):
    """One line of the audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    """One page of the audit log, newest first."""

    items: list[AuditEntry]
    next_cursor: str | None


class KeyIn(Input):
    """A new API key."""

    role: Role
    name: str = Field("", max_length=200)


class KeyCreated(BaseModel):
    """A created key; `key` is shown only in this response."""

    id: str
    role: Role
    name: str
    prefix: str
    key: str
    created_at: datetime


class KeyInfo(BaseModel):
    """An API key as listed (never the secret)."""

    id: str
    role: Role
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
