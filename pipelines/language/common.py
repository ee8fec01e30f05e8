"""Shared pieces of the language stage: thresholds, the text normaliser, the hit and analyser
types, and the packaged data files (`pipelines/data/`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Protocol

FLAG_THRESHOLD = 0.5  # a line whose `text_threat_score` reaches this counts as threatening
SLANG_ONLY_CAP = 0.45  # lexicon hits alone never reach FLAG_THRESHOLD
SLANG_WITH_CLASSIFIER = 0.5  # share of the (capped) slang score that adds to a classifier hit
REPORTED_FACTOR = 0.3  # weight kept by a hit in reported speech or quotation
NEGATION_LOOKBACK = 4  # words before a hit searched for "not", "never", "don't" ...
FUZZY_FACTOR = 0.5  # weight kept by a lexicon term matched by near-spelling only

LEXICON_CATEGORIES = frozenset({"weapon", "violence", "target", "taunt", "neutral", "figurative"})
HARMLESS_CATEGORIES = frozenset({"neutral", "figurative"})  # weight 0: they only mask
PATTERN_CATEGORIES = frozenset({"threat", "call_to_action", "taunt"})

_TOKEN = re.compile(r"[a-z0-9']+|[.,!?;:]")
_CHAR_FOLD = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'", "\u201c": '"',
     "\u201d": '"', "\u00a0": " "}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpanHit:
    """A piece of evidence located by character offsets in the analysed text (end exclusive)."""

    start: int
    end: int
    rule: str  # "lexicon:<term>", "pattern:<name>", "classifier:<model>"
    category: str
    meaning: str
    weight: float


class TextAnalyser(Protocol):
    """Finds threatening evidence in one line of text; `name` must be unique among analysers.
    An analyser may also offer `find_batch(texts) -> list[list[SpanHit]]`, which is then used for
    a whole transcript at once (the classifier embeds all segments in one batch)."""

    @property
    def name(self) -> str: ...

    def find(self, text: str) -> list[SpanHit]:
        """Return the hits in `text`, with offsets into `text` itself."""
        ...



def data_text(name: str) -> str:
    """A file of the package's data folder (`pipelines/data/`), as text."""
    return (files("pipelines") / "data" / name).read_text(encoding="utf-8")


def normalise(text: str) -> str:
    """Lower-case and straighten quotes, keeping every character at its offset."""
    folded = text.translate(_CHAR_FOLD)
    lowered = folded.lower()
    if len(lowered) == len(folded):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in folded)  # e.g. "İ"


def tokens(text: str) -> list[tuple[int, int, str]]:
    """Words and punctuation of `text` with their character spans."""
    return [(m.start(), m.end(), m.group().strip("'") or "'") for m in _TOKEN.finditer(text)]
