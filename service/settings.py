"""Settings of the scan service, read from `INCITESCAN_*` environment variables (or passed in by
tests): where the database, the media storage and the broker are, the upload limits, the webhook
policy and the scan options. Unknown keys are rejected, so a typo in a deployment fails loudly
instead of silently using a default."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.media import MediaLimits
from pipelines.optional import parse_require
from pipelines.scan import ScanOptions

DATA_DIR = Path("~/.local/share/incitescan").expanduser()
_LIMITS = MediaLimits()  # the defaults of the media limits


class ServiceSettings(BaseSettings):
    """Everything the API process needs; one object per app."""

    model_config = SettingsConfigDict(env_prefix="INCITESCAN_", extra="forbid", frozen=True)

    database_url: str = f"sqlite:///{DATA_DIR / 'incitescan.db'}"
    # The same variable the worker reads: API and workers must share the media storage.
    storage: Path = DATA_DIR / "storage"
    # None: scans run in a local process pool (no services needed); a Redis URL: through Celery.
    broker_url: str | None = None
    # 0: scans are queued but never run (benchmarks, API-only tests).
    local_workers: int = Field(default=1, ge=0, le=64)

    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_duration: float = Field(default=3 * 3600.0, gt=0)  # seconds of video
    max_pixels: int = Field(default=_LIMITS.max_pixels, gt=0)  # width x height of a frame
    # Each ffmpeg child's address space (below 1 GiB even ordinary decodes fail now and then:
    # threads reserve address space), and the longest wait for its next frame (seconds).
    decode_memory_bytes: int = Field(default=_LIMITS.decode_memory_bytes, ge=1024**3)
    decode_stall_s: float = Field(default=_LIMITS.decode_stall_s, gt=0)
    clip_max_seconds: float = Field(default=30.0, gt=0)
    # Staged uploads (and partial writes to the store) older than this are swept (seconds).
    staging_max_age_s: float = Field(default=3600.0, gt=0)

    # Connections (`incitescan serve`): seconds for a request line and headers, the longest
    # pause inside a request body, idle seconds between requests, open connections per client
    # address (0: no cap; set 0 behind a reverse proxy) and in all.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_idle_timeout_s: float = Field(default=30.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    max_connections_per_client: int = Field(default=16, ge=0)
    max_connections: int = Field(default=1000, ge=1)

    # Wrong API keys (API or UI login) one client address may send within the window before
    # it is locked out for `auth_lockout_s` seconds.
    auth_max_failures: int = Field(default=10, ge=1)
    auth_failure_window_s: float = Field(default=300.0, gt=0)
    auth_lockout_s: float = Field(default=900.0, gt=0)

    webhook_secret: SecretStr | None = None  # None: callback_url is refused
    # Signs reviewer UI session cookies; None: a random one per process (sessions end on restart
    # and are not shared between server processes; set it when running several).
    session_secret: SecretStr | None = None
    webhook_allow_private: bool = False  # allow loopback/private callback targets (tests, LANs)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    # Seconds before the 2nd attempt, doubled before each later one.
    webhook_backoff: float = Field(default=2.0, ge=0)
    webhook_timeout: float = Field(default=10.0, gt=0)

    speech_model: Literal["tiny.en", "base", "none"] = "base"
    fps: float = Field(default=1.0, gt=0, le=30)
    threshold: float | None = Field(default=None, ge=0, le=1)
    # Optional parts every scan must run ("fingerprint,speech", "all"): missing, they fail the
    # scan; otherwise a scan runs without them and its report lists them (`skipped`).
    require: str = ""

    @field_validator("require")
    @classmethod
    def _known_parts(cls, value: str) -> str:
        parse_require(value)  # ValueError names the unknown part
        return value

    def scan_options(self) -> ScanOptions:
        """The pipeline options every scan of this service uses."""
        options = ScanOptions()
        return replace(
            options,
            fps=self.fps,
            speech_model="" if self.speech_model == "none" else self.speech_model,
            limits=replace(options.limits, max_bytes=self.max_upload_bytes,
                           max_duration=self.max_duration, max_pixels=self.max_pixels,
                           decode_memory_bytes=self.decode_memory_bytes,
                           decode_stall_s=self.decode_stall_s),
            fusion=options.fusion if self.threshold is None
            else replace(options.fusion, threshold=self.threshold),
            require=parse_require(self.require),
        )

    def media_limits(self) -> MediaLimits:
        """The limits uploads are checked against before they are accepted."""
        return self.scan_options().limits

