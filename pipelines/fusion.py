"""Fusion of all signals into one explained incitement risk score. `fuse()` is pure: detections
and threat hits in, scores and flagged segments out, no I/O.

The video is cut into fixed windows. In each window:
- the weapon signal is the strongest credible weapon detection: a detection counts fully when it
  is confident or persists (the same category seen again within `persistence_s`), half otherwise;
  boxes covering most of the frame (a known failure of the firearm model) count a quarter;
- the speech signal is the language analysis' score of the threat hits in the window;
- the co-occurrence signal is the weaker of the two signals nearby (within `co_occurrence_s`):
  a weapon on screen while a threat is spoken counts more than either alone.
A window's score is a noisy-or of the weighted signals; the video's score is its highest window.
Windows over the threshold merge into flagged segments that carry their evidence and reasons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .language import text_threat_score
from .types import (
    Detection,
    FlaggedSegment,
    FusionResult,
    KnownMatch,
    SignalScores,
    ThreatHit,
)

# A confident, persistent firearm alone can flag a video (displaying guns glamorises them);
# knives and bats alone cannot (kitchens, tools, sport: 0.75 * 0.6 = 0.45 < 0.5), they need
# threatening speech nearby. See docs/accuracy.md, "weapons alone".
WEAPON_SEVERITY = {"firearm": 1.0, "knife": 0.6, "blunt": 0.4}


@dataclass(frozen=True, slots=True)
class FusionOptions:
    """Weights and thresholds of the fusion; see the module docstring for their roles."""

    threshold: float = 0.5
    window_s: float = 2.0
    persistence_s: float = 3.0
    confident_detection: float = 0.6
    huge_box_fraction: float = 0.6
    co_occurrence_s: float = 5.0
    weapon_weight: float = 0.75
    # A line that the language analysis counts as threatening (score >= 0.5) flags a window on its
    # own; slang alone (capped at 0.45) never does (docs/language.md, "calibration").
    speech_weight: float = 1.0
    co_occurrence_weight: float = 0.7
    min_weapon_signal: float = 0.15  # below this a window's weapon evidence is not reported
    # A match in the bank of removed videos (its score is 0.7..1) flags a video on its own.
    known_content_weight: float = 1.0


@dataclass(frozen=True, slots=True)
class _Window:
    start: float
    end: float
    weapon: float
    speech: float
    co: float
    score: float
    detections: tuple[Detection, ...]
    hits: tuple[ThreatHit, ...]


def credible_weapon_score(
    detection: Detection, others: Sequence[Detection], frame_area: float, options: FusionOptions
) -> float:
    """How much one weapon detection counts (0..1), after persistence and box-size checks."""
    severity = WEAPON_SEVERITY.get(detection.label, 0.0)
    if severity == 0.0:
        return 0.0
    x1, y1, x2, y2 = detection.box
    huge = frame_area > 0 and (x2 - x1) * (y2 - y1) / frame_area > options.huge_box_fraction
    persistent = any(
        o.label == detection.label and o.frame_index != detection.frame_index
        and abs(o.t - detection.t) <= options.persistence_s
        for o in others
    )
    credibility = 1.0 if detection.confidence >= options.confident_detection or persistent else 0.5
    if huge:
        credibility *= 0.25
    return severity * detection.confidence * credibility


def _noisy_or(*values: float) -> float:
    remaining = 1.0
    for value in values:
        remaining *= 1.0 - min(max(value, 0.0), 1.0)
    return 1.0 - remaining


def _windows(
    duration: float, frame_size: tuple[int, int], detections: Sequence[Detection],
    hits: Sequence[ThreatHit], options: FusionOptions,
) -> list[_Window]:
    weapons = [d for d in detections if d.label in WEAPON_SEVERITY]
    area = float(frame_size[0] * frame_size[1])
    credible = {id(d): credible_weapon_score(d, weapons, area, options) for d in weapons}
    count = max(1, int(-(-duration // options.window_s)))
    bounds = [(i * options.window_s, min(duration, (i + 1) * options.window_s))
              for i in range(count)]

    def weapon_in(start: float, end: float) -> tuple[float, list[Detection]]:
        inside = [d for d in weapons if start <= d.t < end]
        return max((credible[id(d)] for d in inside), default=0.0), inside

    def speech_in(start: float, end: float) -> tuple[float, list[ThreatHit]]:
        inside = [h for h in hits if h.start < end and h.end >= start]
        return (text_threat_score(inside) if inside else 0.0), inside

    windows = []
    near = options.co_occurrence_s
    for start, end in bounds:
        weapon, dets = weapon_in(start, end)
        speech, window_hits = speech_in(start, end)
        co = min(weapon_in(start - near, end + near)[0], speech_in(start - near, end + near)[0])
        score = _noisy_or(options.weapon_weight * weapon, options.speech_weight * speech,
                          options.co_occurrence_weight * co)
        windows.append(_Window(start, end, weapon, speech, co, score, tuple(dets),
                               tuple(window_hits)))
    return windows


def _reasons(detections: Sequence[Detection], hits: Sequence[ThreatHit]) -> tuple[str, ...]:
    reasons: list[str] = []
    by_label: dict[tuple[str, str], list[Detection]] = {}
    for det in detections:
        by_label.setdefault((det.label, det.model), []).append(det)
    for (label, model), dets in sorted(by_label.items()):
        times = sorted(d.t for d in dets)
        best = max(d.confidence for d in dets)
        span = f"{times[0]:.1f} s" if len(times) == 1 else f"{times[0]:.1f}–{times[-1]:.1f} s"
        reasons.append(f"{label} seen at {span} in {len(dets)} frame(s), "
                       f"max confidence {best:.2f} ({model})")
    seen: set[tuple[str, float]] = set()
    for hit in sorted(hits, key=lambda h: (h.start, -h.weight)):
        if (hit.rule, hit.start) in seen:
            continue
        seen.add((hit.rule, hit.start))
        reasons.append(f"\"{hit.text}\" at {hit.start:.1f} s: {hit.meaning} "
                       f"[{hit.rule}, {hit.category}, weight {hit.weight:.2f}]")
    return tuple(reasons)


def _segment(group: Sequence[_Window], frame_interval: float,
             options: FusionOptions) -> FlaggedSegment:
    detections = tuple(d for w in group for d in w.detections)
    hits = tuple(dict.fromkeys(h for w in group for h in w.hits))  # hits span windows: dedupe
    reported = tuple(d for d in detections if d.confidence > 0 and WEAPON_SEVERITY.get(d.label))
    starts = [d.t for d in reported] + [h.start for h in hits]
    ends = [d.t + frame_interval for d in reported] + [h.end for h in hits]
    signals = []
    if max(w.weapon for w in group) >= options.min_weapon_signal:
        signals.append("weapon")
    if max(w.speech for w in group) > 0:
        signals.append("threat_speech")
    if max(w.co for w in group) > 0:
        signals.append("co_occurrence")
    return FlaggedSegment(
        start=round(min(starts, default=group[0].start), 3),
        end=round(max(ends, default=group[-1].end), 3),
        score=round(max(w.score for w in group), 4),
        signals=tuple(signals),
        reasons=_reasons(reported if "weapon" in signals else (), hits),
        detections=reported,
        threat_hits=hits,
    )


def fuse(
    duration: float,
    frame_size: tuple[int, int],
    frame_interval: float,
    detections: Sequence[Detection],
    hits: Sequence[ThreatHit],
    options: FusionOptions = FusionOptions(),
) -> FusionResult:
    """Fuse weapon detections and threat hits of one video into its risk score and segments.

    `frame_size` is the video's (width, height) in the pixels the boxes use; `frame_interval` is
    the time between sampled frames, used as the visible span of a single detection."""
    windows = _windows(duration, frame_size, detections, hits, options)
    groups: list[list[_Window]] = []
    for window in windows:
        if window.score < options.threshold:
            continue
        if groups and abs(groups[-1][-1].end - window.start) < 1e-6:
            groups[-1].append(window)
        else:
            groups.append([window])
    segments = tuple(_segment(g, frame_interval, options) for g in groups)
    risk = round(max((w.score for w in windows), default=0.0), 4)
    signal_scores = SignalScores(
        weapon=round(max((w.weapon for w in windows), default=0.0), 4),
        threat_speech=round(max((w.speech for w in windows), default=0.0), 4),
        co_occurrence=round(max((w.co for w in windows), default=0.0), 4),
    )
    reasons = tuple(r for s in segments for r in s.reasons)
    return FusionResult(risk_score=risk, flagged=risk >= options.threshold,
                        threshold=options.threshold, signal_scores=signal_scores,
                        flagged_segments=segments, reasons=reasons)


def add_known_content(result: FusionResult, matches: Sequence[KnownMatch],
                      options: FusionOptions = FusionOptions()) -> FusionResult:
    """Raise `result` for matches in the bank of removed videos: the known-content signal is
    the strongest match's score, combined with the other signals by noisy-or; each matched
    segment becomes a flagged segment with signal `known_content` and the match's reason."""
    if not matches:
        return result
    signal = max(m.score for m in matches)
    risk = round(_noisy_or(result.risk_score, options.known_content_weight * signal), 4)
    known = [FlaggedSegment(start=seg.start, end=seg.end,
                            score=round(options.known_content_weight * match.score, 4),
                            signals=("known_content",),
                            reasons=(f"known content: the same as {seg.bank_start:.1f}–"
                                     f"{seg.bank_end:.1f} s of banked video {match.video_id} "
                                     f"({match.label}): {seg.frames} frame(s), mean PDQ "
                                     f"distance {seg.mean_distance:.0f}",))
             for match in matches for seg in match.segments]
    segments = tuple(sorted((*result.flagged_segments, *known), key=lambda s: (s.start, s.end)))
    return FusionResult(
        risk_score=risk, flagged=risk >= options.threshold, threshold=result.threshold,
        signal_scores=replace(result.signal_scores, known_content=round(signal, 4)),
        flagged_segments=segments,
        reasons=(*(m.reason for m in matches), *result.reasons))
