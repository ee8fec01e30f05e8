"""Context rules that change what a hit means: negation ("I'm not going to stab anyone") drops
it, reported speech or quotation ("he said 'I'll kill you'") keeps only `REPORTED_FACTOR` of its
weight."""

from __future__ import annotations

import re

from .common import NEGATION_LOOKBACK, REPORTED_FACTOR, SpanHit
from .common import tokens as _tokens

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

_MEDIA_FRAME = re.compile(
    r"\b(?:quote|quoted|quoting)\b|\b(?:film|movie|scene|song|track|lyrics?|line|character|episode"
    r"|show|series|game|book|video|clip|documentary|trailer)\s+(?:where|when|in\s+which|that\s+goes"
    r"|goes|says)\b"
)
# Quotations: "...", or '...' where the opening quote is not an elision ('em, 'cause, 'bout).
_QUOTED = re.compile(
    r"\"[^\"]+\"|(?<![\w'])'(?!(?:em|cause|cos|bout|til|round|n)\b)(?=\w).+?(?<=[\w.!?,])'(?!\w)"
)

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



def _is_negator(tokens: list[tuple[int, int, str]], i: int) -> bool:
    word = tokens[i][2]
    following = tokens[i + 1][2] if i + 1 < len(tokens) else ""
    if word == "no":
        return following == "one"
    if word in _NEGATORS or word.endswith("n't"):
        return following != "wait"  # "can't wait to ride on them" is eager, not negated
    return False


def is_negated(text: str, start: int, end: int) -> bool:
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


def is_reported(text: str, start: int, end: int) -> bool:
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


def in_context(text: str, hit: SpanHit, negation_span: tuple[int, int]) -> SpanHit | None:
    """Apply the negation and reported-speech rules to one hit."""
    if is_negated(text, *negation_span):
        return None
    if is_reported(text, hit.start, hit.end):
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
