"""Tests of the rule-based threat analysis: tables of threatening, benign, negated and quoted
lines, word-time mapping, the lexicon/pattern data files, and a floor on the labelled text set."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipelines.language import (
    FLAG_THRESHOLD,
    LEXICON_CATEGORIES,
    LEXICON_VERSION,
    SLANG_ONLY_CAP,
    SpanHit,
    analyse_text,
    analyse_transcript,
    load_lexicon,
    load_patterns,
    text_threat_score,
)
from pipelines.types import ThreatHit, TranscriptSegment, Word

LEXICON_CSV = Path(__file__).parents[2] / "pipelines" / "data" / "lexicon.csv"
THREAT_TEXT_CSV = Path(__file__).parents[3] / "shared" / "data" / "text" / "threat_text.csv"


def rules(text: str) -> set[str]:
    return {hit.rule for hit in analyse_text(text)}


def score(text: str) -> float:
    return text_threat_score(analyse_text(text))


THREATS = [
    ("I'm gonna stab you", "pattern:first_person_future_violence"),
    ("I’m going to kill you bruv", "pattern:first_person_future_violence"),
    ("we're gonna ride on the opps tonight", "pattern:first_person_future_violence"),
    ("man will wet you up", "pattern:first_person_future_violence"),
    ("imma put you on a shirt", "pattern:first_person_future_violence"),
    ("I can't wait to slide on them", "pattern:first_person_future_violence"),
    ("if I see you I'll wet you", "pattern:conditional_threat"),
    ("if you don't pay we'll cheff you", "pattern:conditional_threat"),
    ("if I catch him, he's dead", "pattern:conditional_death_threat"),
    ("go and shoot him", "pattern:call_to_violence"),
    ("come we spin the block", "pattern:call_to_violence"),
    ("let's ride on them", "pattern:call_to_violence"),
    ("grab the skeng and ride out", "pattern:weapon_call"),
    ("you're dead", "pattern:you_are_dead"),
    ("he's a dead man when I find him", "pattern:third_person_dead"),
    ("you're getting shot", "pattern:threatened_harm"),
    ("he's gonna get wet", "pattern:threatened_harm"),
    ("I wet him up", "pattern:boast_of_violence"),
    ("we cheffed him", "pattern:boast_of_violence"),
    ("stab him, stab him", "pattern:imperative_violence"),
    ("go kill yourself", "pattern:death_wish"),
]

BENIGN = [
    "this song kills",
    "you killed it",
    "the shot was great",
    "knife and fork",
    "I'm dead",
    "I'm dead, that's too funny",
    "that ting was peng",
    "that thing was bang",
    "bless up mandem",
    "I'm going to kill this exam",
    "we killed them in the final",
    "shoot me a message",
    "I'll shoot you a text",
    "let's go shoot a video",
    "I'm going to take you out for dinner",
    "I'm going to cut him off",
    "let's ride out to the beach",
    "let's slide out to the party",
    "I'm gonna kill them with kindness",
    "if you think that you're dead wrong",
    "if I see you I'll say hi",
    "you're dead to me",
    "she's dead good at singing",
    "he's getting shot in the next scene",
    "this tune is banging, the beat is hard",
    "mum's gonna kill me",
    "grab the scan and slide",  # slang only: capped below the threshold
    "skeng shank wet opps",
]

NEUTRAL_ONLY = ["bless up mandem", "wagwan fam", "peng ting innit bruv", "the mandum from the ends"]

NEGATED = [
    "I'm not going to stab anyone",
    "I would never shoot",
    "don't kill",
    "we won't ride on them",
    "I swear I'll never stab you",
    "I never wet him",
]

REPORTED = [
    "he said 'I'll kill you'",
    'he said "I\'ll kill you"',
    "the film where he says I'll kill you",
    "he was saying we're gonna stab you",
]


@pytest.mark.parametrize(("line", "rule"), THREATS)
def test_threatening_line_is_flagged_by_expected_rule(line: str, rule: str) -> None:
    assert score(line) >= FLAG_THRESHOLD
    assert rule in rules(line)


@pytest.mark.parametrize("line", BENIGN)
def test_benign_line_is_not_flagged(line: str) -> None:
    assert all(not r.startswith("pattern:") for r in rules(line)), rules(line)
    assert score(line) < FLAG_THRESHOLD


@pytest.mark.parametrize("line", NEUTRAL_ONLY)
def test_neutral_slang_gives_no_hit(line: str) -> None:
    assert analyse_text(line) == []


@pytest.mark.parametrize("line", NEGATED)
def test_negated_threat_is_suppressed(line: str) -> None:
    assert analyse_text(line) == []


@pytest.mark.parametrize("line", REPORTED)
def test_reported_threat_is_down_weighted(line: str) -> None:
    hits = analyse_text(line)
    assert any(h.rule.startswith("pattern:") and "reported" in h.meaning for h in hits)
    assert text_threat_score(hits) < FLAG_THRESHOLD


def test_speaker_introducing_own_threat_is_not_reported_speech() -> None:
    assert score("I told him I'll wet him") >= FLAG_THRESHOLD


@pytest.mark.parametrize(
    ("line", "who"),
    [
        ("I'm gonna stab you", ("the speaker (I)", "stab the listener (you)")),
        ("we're gonna ride on the opps", ("the speaker's group (we)", "rivals (the opps)")),
        ("I wet him up", ("the speaker (I)", "a third person (him)")),
    ],
)
def test_meaning_names_who_threatens_whom(line: str, who: tuple[str, str]) -> None:
    meanings = [h.meaning for h in analyse_text(line) if h.rule.startswith("pattern:")]
    assert any(all(part in m for part in who) for m in meanings), meanings


def test_hit_fields() -> None:
    line = "  yo I'm gonna stab you  "
    hit = next(h for h in analyse_text(line) if h.rule.startswith("pattern:"))
    assert hit.text == "I'm gonna stab you"
    assert hit.category == "threat"
    assert (hit.start, hit.end) == (0.0, 0.0)
    assert hit.segment_text == "yo I'm gonna stab you"
    assert 0.7 <= hit.weight <= 0.95


def _words(*timed: tuple[str, float, float]) -> tuple[Word, ...]:
    return tuple(Word(start=s, end=e, text=t, probability=0.9) for t, s, e in timed)


def test_hit_times_come_from_the_matched_words() -> None:
    words = _words(
        (" Listen,", 10.0, 10.4),
        (" I'll", 10.5, 10.7),
        (" stab", 10.8, 11.1),
        (" you", 11.2, 11.4),
        (" bruv.", 11.5, 11.9),
    )
    segment = TranscriptSegment(
        start=9.8, end=12.0, text=" Listen, I’ll stab you bruv.", words=words
    )
    hits = {h.rule: h for h in analyse_transcript([segment])}
    threat = hits["pattern:first_person_future_violence"]
    assert (threat.start, threat.end) == (10.5, 11.4)
    assert threat.text == "I’ll stab you"
    assert threat.segment_text == "Listen, I’ll stab you bruv."
    assert (hits["lexicon:stab"].start, hits["lexicon:stab"].end) == (10.8, 11.1)


def test_hit_times_fall_back_to_the_segment() -> None:
    without_words = TranscriptSegment(start=3.0, end=5.5, text="you're dead")
    unalignable = TranscriptSegment(
        start=7.0, end=9.0, text="you're dead", words=_words((" something", 7.1, 8.0))
    )
    for segment in (without_words, unalignable):
        hit = next(h for h in analyse_transcript([segment]) if h.rule == "pattern:you_are_dead")
        assert (hit.start, hit.end) == (segment.start, segment.end)


def test_score_combines_hits() -> None:
    def hit(rule: str, weight: float) -> ThreatHit:
        return ThreatHit(0, 0, "x", rule, "weapon", "m", weight)

    assert text_threat_score([]) == 0.0
    slang = [hit("lexicon:skeng", 0.6), hit("lexicon:wet", 0.6), hit("lexicon:opps", 0.6)]
    assert text_threat_score(slang) == SLANG_ONLY_CAP
    assert text_threat_score([hit("pattern:x", 0.8), hit("lexicon:wet", 0.5)]) == 0.9
    assert text_threat_score([hit("classifier:m", 0.7)]) == 0.7  # non-lexicon: not capped


class _ShoutAnalyser:
    """Stand-in for a learned classifier: flags any line written in capitals."""

    name = "classifier:shout"

    def find(self, text: str) -> list[SpanHit]:
        if not text.isupper():
            return []
        return [SpanHit(0, len(text), "classifier:shout", "threat", "shouting", 0.6)]


def test_extra_analysers_plug_in_and_names_must_be_unique() -> None:
    hits = analyse_text("GET OUT", analysers=[_ShoutAnalyser()])
    assert [h.rule for h in hits] == ["classifier:shout"]
    assert text_threat_score(hits) == 0.6
    with pytest.raises(ValueError, match="unique"):
        analyse_text("x", analysers=[_ShoutAnalyser(), _ShoutAnalyser()])


def test_lexicon_file_is_valid() -> None:
    with LEXICON_CSV.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["term", "variants", "meaning", "category", "weight"]
        rows = list(reader)
    spellings: list[str] = []
    for row in rows:
        weight = float(row["weight"])
        assert row["category"] in LEXICON_CATEGORIES, row
        assert row["meaning"].strip(), row
        if row["category"] == "neutral":
            assert weight == 0, row
        elif row["category"] in {"weapon", "violence"}:
            assert 0.3 <= weight <= 0.6, row
        else:
            assert 0 < weight <= 0.6, row
        spellings += [row["term"].lower()]
        spellings += [v.lower() for v in row["variants"].split("|") if v]
    duplicates = {s for s in spellings if spellings.count(s) > 1}
    assert not duplicates
    assert len(load_lexicon()) == len(rows)
    assert {"skeng", "mandem", "opps", "wet"} <= {e.term for e in load_lexicon()}
    assert "scan" in next(e for e in load_lexicon() if e.term == "skeng").variants


def test_patterns_file_is_valid() -> None:
    patterns = load_patterns()
    names = [p.name for p in patterns]
    assert len(names) == len(set(names))
    assert all(0.7 <= p.weight <= 0.95 for p in patterns)
    assert LEXICON_VERSION.startswith("1+")


@pytest.mark.skipif(not THREAT_TEXT_CSV.exists(), reason="../shared/data not present")
def test_f1_on_labelled_threat_text() -> None:
    """ETHOS/Davidson/Jigsaw lines (hate speech, not drill): measured F1 0.57 (P 1.00, R 0.39)
    when written; the floor leaves room for rule changes aimed at drill, not at this file."""
    with THREAT_TEXT_CSV.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    predicted = [score(r["text"]) >= FLAG_THRESHOLD for r in rows]
    actual = [r["label"] == "1" for r in rows]
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    precision = tp / max(sum(predicted), 1)
    recall = tp / max(sum(actual), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    assert f1 >= 0.45, (precision, recall, f1)
