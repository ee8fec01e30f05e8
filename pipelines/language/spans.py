"""Spans, not lines: the classifier scores sliding windows of words inside each line as well as
the whole line, so its hit names the words that carry the threat (and, in a transcript, their
seconds) instead of a whole segment."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .classifier import (
    CLASSIFIER_MIN_P,
    TextModel,
    classifier_weight,
    load_text_model,
    rule_context,
    text_model_ref,
)
from .common import SpanHit

WINDOW_WORDS = 10  # a window: about one spoken clause
WINDOW_STRIDE = 3
_WORD = re.compile(r"\S+")
Window = tuple[int, int, int, int]  # first word, last word + 1, start char, end char


def word_windows(text: str) -> list[Window]:
    """(first word, last word + 1, start char, end char) of the whole line and, when it is longer
    than a window, of every window of WINDOW_WORDS words, WINDOW_STRIDE apart (the last one ends
    at the line's end). [] for a blank line."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    n = len(words)
    if not n:
        return []
    found = [(0, n, words[0][0], words[-1][1])]
    if n > WINDOW_WORDS + 2:
        starts = list(range(0, n - WINDOW_WORDS + 1, WINDOW_STRIDE))
        if starts[-1] != n - WINDOW_WORDS:
            starts.append(n - WINDOW_WORDS)
        found += [(i, i + WINDOW_WORDS, words[i][0], words[i + WINDOW_WORDS - 1][1])
                  for i in starts]
    return found


class ClassifierAnalyser:
    """The fine-tuned classifier as an analyser: per line, the best-scoring span (a window of its
    words, or the whole line when that scores higher) becomes one hit when its probability
    reaches CLASSIFIER_MIN_P, unless the rules overrule it (`rule_context`). `find_batch` scores
    every window of every line in one batch (a transcript's segments)."""

    def __init__(self, model: TextModel | None = None) -> None:
        self._model = model

    @property
    def model(self) -> TextModel:
        """The classifier (the shipped one unless another was given)."""
        return self._model or load_text_model()

    @property
    def name(self) -> str:
        return f"classifier:{self._model.name if self._model else text_model_ref()}"

    def _best_spans(self, texts: Sequence[str]) -> list[tuple[float, Window] | None]:
        windows = [word_windows(t) for t in texts]
        pieces = [t[w[2]:w[3]] for t, ws in zip(texts, windows, strict=True) for w in ws]
        probs = iter(self.model.probabilities(pieces) if pieces else [])
        best: list[tuple[float, Window] | None] = []
        for ws in windows:
            scored = [(float(next(probs)), w) for w in ws]
            # The highest probability; among spans within 0.02 of it, the shortest (tight evidence).
            top = max((p for p, _ in scored), default=0.0)
            near = [(p, w) for p, w in scored if p >= top - 0.02]
            best.append(min(near, key=lambda s: (s[1][1] - s[1][0], -s[0])) if near else None)
        return best

    def find_batch(self, texts: Sequence[str]) -> list[list[SpanHit]]:
        """`find` for many lines with one batch through the model."""
        model = self.model
        found: list[list[SpanHit]] = []
        for text, best in zip(texts, self._best_spans(texts), strict=True):
            if best is None or best[0] < CLASSIFIER_MIN_P or rule_context(text):
                found.append([])
                continue
            p, (first, last, start, end) = best
            where = "this line threatens or incites" if (first, last) == (
                0, len(_WORD.findall(text))) else f"words {first + 1}-{last} threaten or incite"
            meaning = (f"learned classifier: p={p:.2f} that {where} violence "
                       f"(flags alone from p={model.threshold:.2f})")
            found.append([SpanHit(start, end, self.name, "threat", meaning,
                                  classifier_weight(p, model.threshold))])
        return found

    def find(self, text: str) -> list[SpanHit]:
        """Return the classifier's hit in `text`, if it is confident enough."""
        return self.find_batch([text])[0]
