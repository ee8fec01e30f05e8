"""The one exception hierarchy of the scanner: every failure a user can cause or fix has a stable
code, a process exit code and a message that says what to do about it."""

from __future__ import annotations


class ScanError(Exception):
    """Base of all expected scanner failures; anything else is an internal error (exit code 1)."""

    code = "scan_error"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidMedia(ScanError):
    """The input is not a readable video (empty, corrupt, truncated, wrong format)."""

    code = "invalid_media"
    exit_code = 2


class UnsupportedMedia(InvalidMedia):
    """The input is readable but something the scanner refuses (no video stream, odd protocol)."""

    code = "unsupported_media"


class MediaTooLarge(InvalidMedia):
    """The input exceeds a configured limit (size, duration, resolution)."""

    code = "media_too_large"


class DecodeLimitExceeded(MediaTooLarge):
    """Decoding the input broke a resource limit (CPU time, memory, wall clock): a
    decompression bomb, or a file built to stall the decoder."""

    code = "decode_limit_exceeded"


class ReportInvalid(ScanError):
    """A report read back (from a worker, a file, the database) lacks a field or has one of the
    wrong type, so it cannot be stored or shown."""

    code = "invalid_report"


class ManifestInvalid(ScanError, ValueError):
    """The weights manifest (weights/manifest.toml or $INCITESCAN_MANIFEST) is malformed; the
    message names the file, the model and the mistake."""

    code = "manifest_invalid"


class WeightsMissing(ScanError):
    """A model file is not in the weights cache."""

    code = "weights_missing"
    exit_code = 3


class WeightsCorrupt(WeightsMissing):
    """A model file is present but its sha256 does not match the manifest."""

    code = "weights_corrupt"
