"""Fusion is pure: tables of detections and threat hits in, scores and segments out."""

from __future__ import annotations

import pytest

from pipelines.fusion import FusionOptions, credible_weapon_score, fuse
from pipelines.types import Detection, ThreatHit

FRAME = (1280, 720)


def gun(t: float, conf: float = 0.7, box=(100, 100, 300, 250), frame_index: int | None = None,
        label: str = "firearm") -> Detection:
    return Detection(t=t, label=label, confidence=conf, box=box, model="test@1",
                     frame_index=int(t) if frame_index is None else frame_index)


def threat(start: float, end: float, weight: float = 0.9, category: str = "threat") -> ThreatHit:
    return ThreatHit(start=start, end=end, text="I'm going to shoot you",
                     rule="pattern:first_person_violence", category=category,
                     meaning="speaker threatens to shoot the listener", weight=weight)


def test_nothing_found_scores_zero_and_flags_nothing() -> None:
    result = fuse(30.0, FRAME, 1.0, [], [])
    assert result.risk_score == 0.0
    assert not result.flagged
    assert result.flagged_segments == ()


@pytest.mark.parametrize(
    ("detections", "hits", "flagged"),
    [
        ([gun(5), gun(6)], [], True),  # a persistent, confident firearm
        ([gun(5, conf=0.3)], [], False),  # one weak sighting
        ([], [threat(10, 12)], True),  # an explicit threat
        ([], [threat(10, 12, weight=0.3, category="weapon")], False),  # one weak slang term
        ([gun(5, conf=0.3), gun(6, conf=0.3)], [threat(6, 8, weight=0.45)], True),  # together
        # a kitchen knife alone
        ([gun(5, conf=0.95, label="knife"), gun(6, conf=0.95, label="knife")], [], False),
        ([gun(5, conf=0.6, label="knife"), gun(6, conf=0.6, label="knife")],
         [threat(5, 7, 0.6)], True),  # a knife while a threat is spoken
    ],
)
def test_flagging_table(detections, hits, flagged) -> None:
    assert fuse(30.0, FRAME, 1.0, detections, hits).flagged is flagged


def test_co_occurrence_scores_higher_than_either_signal_alone() -> None:
    weapon_only = fuse(30.0, FRAME, 1.0, [gun(5), gun(6)], []).risk_score
    speech_only = fuse(30.0, FRAME, 1.0, [], [threat(5, 7)]).risk_score
    both = fuse(30.0, FRAME, 1.0, [gun(5), gun(6)], [threat(5, 7)])
    assert both.risk_score > max(weapon_only, speech_only)
    assert both.signal_scores.co_occurrence > 0
    assert "co_occurrence" in both.flagged_segments[0].signals


def test_far_apart_signals_do_not_co_occur() -> None:
    result = fuse(60.0, FRAME, 1.0, [gun(5), gun(6)], [threat(40, 42)])
    assert result.signal_scores.co_occurrence == 0
    assert len(result.flagged_segments) == 2


def test_segment_is_localised_to_its_evidence() -> None:
    result = fuse(60.0, FRAME, 1.0, [], [threat(21.3, 23.9)])
    (segment,) = result.flagged_segments
    assert segment.start == pytest.approx(21.3)
    assert segment.end == pytest.approx(23.9)
    assert segment.signals == ("threat_speech",)
    assert any("I'm going to shoot you" in r and "pattern:first_person_violence" in r
               for r in segment.reasons)
    assert segment.threat_hits[0].meaning.startswith("speaker threatens")


def test_weapon_reason_names_label_time_confidence_and_model() -> None:
    result = fuse(30.0, FRAME, 1.0, [gun(5, conf=0.8), gun(7, conf=0.75)], [])
    (segment,) = result.flagged_segments
    assert segment.signals == ("weapon",)
    assert segment.reasons == ("firearm seen at 5.0–7.0 s in 2 frame(s), max confidence 0.80 "
                               "(test@1)",)
    assert segment.start == 5.0 and segment.end == 8.0


def test_huge_boxes_are_distrusted() -> None:
    options = FusionOptions()
    normal = gun(5, conf=0.5, box=(100, 100, 400, 300))
    huge = gun(5, conf=0.5, box=(0, 0, 1280, 700))
    area = float(FRAME[0] * FRAME[1])
    assert credible_weapon_score(huge, [huge], area, options) < credible_weapon_score(
        normal, [normal], area, options) / 2


@pytest.mark.parametrize(
    ("others", "expected_factor"),
    [
        ([], 0.5),  # seen once, not confident
        ([gun(6, conf=0.4)], 1.0),  # seen again nearby
        ([gun(20, conf=0.4)], 0.5),  # seen again, but far away
        ([gun(6, conf=0.4, label="knife")], 0.5),  # something else nearby
    ],
)
def test_persistence(others, expected_factor) -> None:
    one = gun(5, conf=0.4)
    score = credible_weapon_score(one, [one, *others], 0.0, FusionOptions())
    assert score == pytest.approx(0.4 * expected_factor)


def test_person_and_phone_detections_do_not_score() -> None:
    person = gun(5, conf=0.99, label="person")
    phone = gun(6, conf=0.99, label="phone")
    result = fuse(30.0, FRAME, 1.0, [person, phone], [])
    assert result.risk_score == 0.0


def test_threshold_is_configurable() -> None:
    strict = fuse(30.0, FRAME, 1.0, [gun(5), gun(6)], [], FusionOptions(threshold=0.95))
    assert not strict.flagged and strict.threshold == 0.95
