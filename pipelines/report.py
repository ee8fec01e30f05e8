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

from .types import ScanResult
from .vision import WEAPON_LABELS

SCHEMA_VERSION = "1.0"
STABLE_FIELDS = ("schema_version", "risk_score", "flagged", "flagged_segments")
# Fields that differ between two scans of the same video with the same settings.
VOLATILE_FIELDS = ("scanned_at", "timings", "evidence")


def scanner_version() -> str:
    """The installed incitescan version."""
    try:
        return version("incitescan")
    except PackageNotFoundError:
        return "0+unknown"


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
        "evidence": [asdict(e) for e in result.evidence],
        "timings": result.timings,
        # Re-upload matching (docs/matching.md): what the video's hashes matched in the bank,
        # and the hashes themselves, so that a removed video can be banked from its report.
        "known_matches": [asdict(m) for m in result.known_matches],
        "fingerprint": {"frames": [asdict(h) for h in result.frame_hashes],
                        "audio": [asdict(a) for a in result.audio_fingerprints]},
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
    elif video["has_audio"]:
        lines.append("  speech: none detected")
    else:
        lines.append("  speech: no audio track")
    return "\n".join(lines)
