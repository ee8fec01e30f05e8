"""IncitementScan analysis library: pure stages that turn a video file into an explained incitement
risk report. `scan()` runs them all in one process; workers and the service call the same
functions."""

from __future__ import annotations

from .errors import InvalidMedia, MediaTooLarge, ScanError, WeightsCorrupt, WeightsMissing
from .report import SCHEMA_VERSION, to_dict
from .scan import ScanModels, ScanOptions, load_models, scan
from .types import Detection, FlaggedSegment, ScanResult, ThreatHit, Transcript

__all__ = [
    "SCHEMA_VERSION",
    "Detection",
    "FlaggedSegment",
    "InvalidMedia",
    "MediaTooLarge",
    "ScanError",
    "ScanModels",
    "ScanOptions",
    "ScanResult",
    "ThreatHit",
    "Transcript",
    "WeightsCorrupt",
    "WeightsMissing",
    "load_models",
    "scan",
    "to_dict",
]
