"""The versioned JSON report of a scan and its readable terminal summary. Fields named in
`STABLE_FIELDS` are read by other tools and change only with a new major `schema_version`; the
schema is documented in docs/report-schema.json."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .errors import ReportInvalid
from .matching import REGION_NAMES
from .types import ScanResult, Transcript
from .vision import WEAPON_LABELS
from .vocals import reliability

# 1.1: `skipped`, the optional parts a scan ran without (a 1.0 report has none and stays valid).
SCHEMA_VERSION = "1.1"
STABLE_FIELDS = ("schema_version", "risk_score", "flagged", "flagged_segments")
# Fields that differ between two scans of the same video with the same settings.
VOLATILE_FIELDS = ("scanned_at", "timings", "evidence")


def scanner_version() -> str:
    """The installed incitescan version."""
    try:
        return version("incitescan")
    except PackageNotFoundError:
        return "0+unknown"


def speech_conditions(transcript: Transcript | None) -> dict[str, Any] | None:
    """How the speech was heard, for the reviewer and anything weighing the transcript: whether
    music was under it (and for how many seconds), the front end that cleaned it, and how sure
    Whisper was of its words (mean word probability and a high/medium/low/unknown label). A
    low-reliability transcript still counts in the fused score: a threat misheard is still
    sent to review, and this tells the reviewer to listen rather than read."""
    if transcript is None:
        return None
    probability = transcript.mean_word_probability
    return {"music": transcript.music_seconds > 0, "music_seconds": transcript.music_seconds,
            "front_end": transcript.front_end or "none",
            "mean_word_probability": probability, "reliability": reliability(probability)}


def to_dict(result: ScanResult) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    fusion = result.fusion
    weapons = [asdict(d) for d in result.detections if d.label in WEAPON_LABELS]
    context: dict[str, int] = {}
    for det in result.detections:
        if det.label not in WEAPON_LABELS:
            context[det.label] = context.get(det.label, 0) + 1
    transcript = asdict(result.transcript) if result.transcript else None
    video = asdict(result.media)
    video["path"] = Path(result.media.path).name  # never leak the server's folder layout
    return _plain({
        "schema_version": SCHEMA_VERSION,
        "scanner": {"name": "incitescan", "version": scanner_version()},
        "scanned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "video": video,
        "risk_score": fusion.risk_score,
        "flagged": fusion.flagged,
        "threshold": fusion.threshold,
        "signal_scores": asdict(fusion.signal_scores),
        "flagged_segments": [asdict(s) for s in fusion.flagged_segments],
        "reasons": list(fusion.reasons),
        "models": dict(result.models),
        "settings": result.settings,
        "frames_sampled": result.frames_sampled,
        "weapon_detections": weapons,
        "context_detections": context,
        "threat_hits": [asdict(h) for h in result.threat_hits],
        "transcript": transcript,
        "speech_conditions": speech_conditions(result.transcript),
        "evidence": [asdict(e) for e in result.evidence],
        "timings": result.timings,
        # Re-upload matching (docs/matching.md): what the video's hashes matched in the bank,
        # and the hashes themselves, so that a removed video can be banked from its report.
        "known_matches": [asdict(m) for m in result.known_matches],
        "fingerprint": {"frames": [asdict(h) for h in result.frame_hashes],
                        "audio": [asdict(a) for a in result.audio_fingerprints]},
        # Optional parts that were not installed and so did not run (pipelines/optional.py).
        "skipped": [asdict(s) for s in result.skipped],
    })


def _plain(value: Any) -> Any:
    """Tuples (from the frozen dataclasses) become lists: the report is exactly what JSON holds."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def write_json(report: dict[str, Any] | list[dict[str, Any]], target: Path) -> None:
    """Write `report` to `target` atomically (a crash never leaves half a report)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")
        partial.replace(target)
    except BaseException:  # a full disk, say: no half-written .partial file is left behind
        partial.unlink(missing_ok=True)
        raise


# What the readers of a report (the service's storage, review UI, frame and bank lookups) take
# from it: key -> kind, "?key" optional, [kind] a list, {"*": kind} any keys.
_NUMBER, _INTEGER, _TEXT, _FLAG, _HEX64, _ANY = "number", "integer", "text", "flag", "hex64", "any"
_DETECTION = {"t": _NUMBER, "label": _TEXT, "confidence": _NUMBER, "box": [_NUMBER],
              "model": _TEXT, "?source_label": _TEXT, "?frame_index": _INTEGER}
_THREAT_HIT = {"start": _NUMBER, "end": _NUMBER, "text": _TEXT, "rule": _TEXT, "category": _TEXT,
               "meaning": _TEXT, "weight": _NUMBER, "?segment_text": _TEXT}
_REPORT_SHAPE: dict[str, Any] = {
    "schema_version": _TEXT, "risk_score": _NUMBER, "flagged": _FLAG, "?threshold": _NUMBER,
    "video": {"path": _TEXT}, "?reasons": [_TEXT], "?signal_scores": {"*": _NUMBER},
    "flagged_segments": [{"start": _NUMBER, "end": _NUMBER, "score": _NUMBER,
                          "signals": [_TEXT], "reasons": [_TEXT], "?detections": [_DETECTION],
                          "?threat_hits": [_THREAT_HIT]}],
    "?evidence": [{"path": _TEXT, "frame_index": _INTEGER}],
    "?settings": {"?fps": _NUMBER}, "?known_matches": [_ANY],
    "?speech_conditions": _ANY,
    "?fingerprint": {"?frames": [{"t": _NUMBER, "frame_index": _INTEGER, "quality": _INTEGER,
                                  "pdq": [_HEX64]}],
                     "?audio": [{"start": _NUMBER, "item_s": _NUMBER, "items": [_INTEGER],
                                 "algorithm": _TEXT}]},
    "?skipped": [{"part": _TEXT, "code": _TEXT, "message": _TEXT}],
}
_SPEECH_CONDITIONS = {"music": _FLAG, "music_seconds": _NUMBER, "front_end": _TEXT,
                      "reliability": _TEXT}
_KINDS = {_NUMBER: "a number", _INTEGER: "an integer", _TEXT: "a string", _FLAG: "true or false",
          _HEX64: "64 hex digits"}


def _check_shape(value: Any, shape: Any, where: str) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise ReportInvalid(f"{where} must be an object")
        for key, inner in shape.items():
            if key == "*":
                for name, item in value.items():
                    _check_shape(item, inner, f"{where}.{name}")
                continue
            name = key.lstrip("?")
            if name in value:
                _check_shape(value[name], inner, f"{where}.{name}")
            elif not key.startswith("?"):
                raise ReportInvalid(f"{where} has no {name!r}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise ReportInvalid(f"{where} must be a list")
        for index, item in enumerate(value):
            _check_shape(item, shape[0], f"{where}[{index}]")
    elif shape != _ANY and not _is_kind(value, shape):
        raise ReportInvalid(f"{where} must be {_KINDS[shape]}, not {type(value).__name__}")


def _is_kind(value: Any, kind: str) -> bool:
    if kind == _FLAG:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _HEX64:
        return isinstance(value, str) and len(value) == 64 and all(
            c in "0123456789abcdefABCDEF" for c in value)
    if kind == _INTEGER:
        return isinstance(value, int) and abs(value) < 2**63
    return isinstance(value, int | float) and abs(value) < 1e300  # False for NaN


def check_report(report: Any) -> dict[str, Any]:
    """`report` (JSON read back from a worker, a file or the database) if it has every field the
    service, the review UI and the bank lookups read, with the right types, and is plain JSON
    that any database stores (finite numbers, no NUL characters); else ReportInvalid naming the
    first problem."""
    _check_shape(report, _REPORT_SHAPE, "report")
    if report.get("speech_conditions") is not None:
        _check_shape(report["speech_conditions"], _SPEECH_CONDITIONS, "report.speech_conditions")
        probability = report["speech_conditions"].get("mean_word_probability")
        if probability is not None and not (_is_kind(probability, _NUMBER)
                                            and 0.0 <= probability <= 1.0):
            raise ReportInvalid("report.speech_conditions.mean_word_probability must be a "
                                "number between 0 and 1 or null")
    for index, frame in enumerate(report.get("fingerprint", {}).get("frames", [])):
        if len(frame["pdq"]) != len(REGION_NAMES):  # the bank lookups index every region
            raise ReportInvalid(f"report.fingerprint.frames[{index}].pdq must hold "
                                f"{len(REGION_NAMES)} hashes ({', '.join(REGION_NAMES)})")
    if not str(report["schema_version"]).startswith("1."):
        raise ReportInvalid(f"report schema_version {report['schema_version'][:20]!r} is not "
                            f"1.x; this scanner reads {SCHEMA_VERSION}")
    if not 0.0 <= report["risk_score"] <= 1.0:
        raise ReportInvalid("report risk_score must be between 0 and 1")
    try:
        text = json.dumps(report, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ReportInvalid(f"report is not plain JSON: {exc}") from None
    if "\\u0000" in text:
        raise ReportInvalid("report contains a NUL character")
    return report


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):d}:{rest:04.1f}"


def summary(report: dict[str, Any]) -> str:
    """A few readable lines: verdict, score breakdown, each flagged segment and its reasons."""
    video = report["video"]
    verdict = "FLAGGED" if report["flagged"] else "not flagged"
    signals = report["signal_scores"]
    lines = [
        f"{video['path']}: risk {report['risk_score']:.2f} ({verdict}, threshold "
        f"{report['threshold']:.2f}) — {video['duration']:.1f} s, {video['width']}x"
        f"{video['height']}",
        f"  signals: weapon {signals['weapon']:.2f}, threat speech {signals['threat_speech']:.2f}"
        f", co-occurrence {signals['co_occurrence']:.2f}"
        + (f", known content {signals['known_content']:.2f}"
           if signals.get("known_content") else ""),
    ]
    for match in report.get("known_matches", []):
        lines.append(f"  KNOWN CONTENT: {match['reason']}")
    for segment in report["flagged_segments"]:
        lines.append(f"  [{_clock(segment['start'])}–{_clock(segment['end'])}] score "
                     f"{segment['score']:.2f} ({', '.join(segment['signals'])})")
        lines += [f"      - {reason}" for reason in segment["reasons"]]
    transcript = report.get("transcript")
    if transcript and transcript["segments"]:
        spoken = " ".join(s["text"] for s in transcript["segments"])
        lines.append(f"  speech ({transcript['language']}): {spoken[:300]}"
                     + ("…" if len(spoken) > 300 else ""))
        heard = report.get("speech_conditions") or {}
        if heard.get("music"):
            lines.append(f"  speech under music ({heard['music_seconds']:.0f} s, front end "
                         f"{heard['front_end']}): transcript reliability {heard['reliability']}"
                         + (f" (mean word probability {heard['mean_word_probability']:.2f})"
                            if heard.get("mean_word_probability") is not None else "")
                         + "; listen to the audio before trusting the words")
    elif video["has_audio"]:
        lines.append("  speech: none detected")
    else:
        lines.append("  speech: no audio track")
    return "\n".join(lines)
