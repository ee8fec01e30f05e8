"""Threat and incitement analysis of transcript text, where every hit explains itself (rule,
meaning, span and time). Three analysers run by default:

- `lexicon` (`lexicon.py`, `data/lexicon.csv`): UK drill / road slang and weapon words, weak
  evidence; near-spellings of slang Whisper does not know count at half weight;
- `patterns` (`patterns.py`, `data/patterns.toml`): explicit threats, calls to violence and boasts
  that name who threatens whom, strong evidence;
- the fine-tuned classifier (`classifier.py`, manifest model `incitescan-text`), scored over
  windows of words so that its hit points at the words that carry the threat (`spans.py`).

Context rules (`context.py`) drop hits in a negated clause and down-weight reported speech or
quotation; the classifier is overruled where the rules see negation, quotation or a figurative
idiom. `text_threat_score` (`score.py`) combines a line's evidence so that slang alone never
flags it. Analysers are pluggable (`TextAnalyser`); `RULE_ANALYSERS` leaves the classifier out."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..types import ThreatHit, TranscriptSegment, Word
from .classifier import (
    CLASSIFIER_FLAG_P,
    CLASSIFIER_MIN_P,
    MODEL_NAME,
    TextModel,
    classifier_weight,
    is_held_out,
    load_text_model,
    rule_context,
)
from .common import (
    FLAG_THRESHOLD,
    FUZZY_FACTOR,
    LEXICON_CATEGORIES,
    PATTERN_CATEGORIES,
    REPORTED_FACTOR,
    SLANG_ONLY_CAP,
    SpanHit,
    TextAnalyser,
    data_text,
    normalise,
)
from .lexicon import LexiconAnalyser, decoding_hints, load_lexicon, slang_hint_terms
from .patterns import PatternAnalyser, load_patterns
from .score import text_threat_score
from .spans import ClassifierAnalyser, word_windows

__all__ = [
    "CLASSIFIER_FLAG_P", "CLASSIFIER_MIN_P", "DEFAULT_ANALYSERS", "FLAG_THRESHOLD", "FUZZY_FACTOR",
    "LEXICON_CATEGORIES", "LEXICON_VERSION", "MODEL_NAME", "PATTERN_CATEGORIES",
    "REPORTED_FACTOR", "RULE_ANALYSERS", "SLANG_ONLY_CAP", "ClassifierAnalyser",
    "LexiconAnalyser", "PatternAnalyser", "SpanHit", "TextAnalyser", "TextModel",
    "analyse_text", "analyse_texts", "analyse_transcript", "classifier_weight", "decoding_hints",
    "is_held_out", "load_lexicon", "load_patterns", "load_text_model", "rule_context",
    "slang_hint_terms", "text_threat_score", "word_windows",
]  # fmt: skip


def _rules_digest() -> str:
    data = "".join(data_text(name) for name in ("lexicon.csv", "patterns.toml"))
    return hashlib.sha256(data.encode()).hexdigest()[:8]


# The rules' version for reports: a hand-bumped number + a digest of the lexicon and the patterns
# (the classifier reports its own name@version in every hit).
LEXICON_VERSION = "2+" + _rules_digest()

RULE_ANALYSERS: tuple[TextAnalyser, ...] = (LexiconAnalyser(), PatternAnalyser())
DEFAULT_ANALYSERS: tuple[TextAnalyser, ...] = (*RULE_ANALYSERS, ClassifierAnalyser())


def _find_all(
    texts: Sequence[str], analysers: Sequence[TextAnalyser] | None
) -> list[list[SpanHit]]:
    """The hits of every analyser in each text, sorted by position; analysers that offer
    `find_batch` (the classifier) see all texts at once."""
    chosen = DEFAULT_ANALYSERS if analysers is None else tuple(analysers)
    names = [a.name for a in chosen]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"analyser names must be unique, repeated: {duplicates}")
    found: list[list[SpanHit]] = [[] for _ in texts]
    for analyser in chosen:
        batch = getattr(analyser, "find_batch", None)
        per_text = batch(texts) if batch else [analyser.find(t) for t in texts]
        for hits, new in zip(found, per_text, strict=True):
            hits.extend(new)
    return [sorted(hits, key=lambda h: (h.start, h.end, h.rule)) for hits in found]


def analyse_text(text: str, analysers: Sequence[TextAnalyser] | None = None) -> list[ThreatHit]:
    """Find threatening evidence in one line of text; hits carry times 0 (no timing known).

    `analysers` defaults to `DEFAULT_ANALYSERS` (lexicon, patterns and the learned classifier;
    `RULE_ANALYSERS` leaves the classifier out); their names must be unique.
    """
    return analyse_texts([text], analysers)[0]


def analyse_texts(
    texts: Sequence[str], analysers: Sequence[TextAnalyser] | None = None
) -> list[list[ThreatHit]]:
    """`analyse_text` for many lines at once: the classifier embeds them in one batch."""
    return [
        [ThreatHit(0.0, 0.0, text[h.start : h.end], h.rule, h.category, h.meaning, h.weight,
                   text.strip()) for h in hits]
        for text, hits in zip(texts, _find_all(texts, analysers), strict=True)
    ]  # fmt: skip


def _word_spans(text: str, words: Sequence[Word]) -> list[tuple[int, int] | None]:
    """Character span of each word in `text`, found in order; None where a word can't be placed
    (the words between two found words must be only spaces and punctuation)."""
    norm, cursor = normalise(text), 0
    spans: list[tuple[int, int] | None] = []
    for word in words:
        needle = normalise(word.text).strip()
        at = norm.find(needle, cursor) if needle else -1
        if at < 0 or any(c.isalnum() for c in norm[cursor:at]):
            spans.append(None)
            continue
        spans.append((at, at + len(needle)))
        cursor = at + len(needle)
    return spans


def analyse_transcript(
    segments: Sequence[TranscriptSegment], analysers: Sequence[TextAnalyser] | None = None
) -> list[ThreatHit]:
    """Find threatening evidence in every segment. A hit's start/end are those of the words its
    matched characters cover when the segment has word timestamps, else the segment's own."""
    texts = [segment.text or "".join(w.text for w in segment.words) for segment in segments]
    found = []
    for segment, text, hits in zip(segments, texts, _find_all(texts, analysers), strict=True):
        spans = _word_spans(text, segment.words)
        for h in hits:
            covered = [
                w for w, span in zip(segment.words, spans, strict=True)
                if span is not None and span[0] < h.end and h.start < span[1]
            ]  # fmt: skip
            start = min((w.start for w in covered), default=segment.start)
            end = max((w.end for w in covered), default=segment.end)
            found.append(
                ThreatHit(start, end, text[h.start : h.end], h.rule, h.category, h.meaning,
                          h.weight, text.strip())
            )  # fmt: skip
    return found

