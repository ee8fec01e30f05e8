"""How a line's evidence becomes one score: a noisy-or in which slang alone never flags."""

from __future__ import annotations

from collections.abc import Iterable

from ..types import ThreatHit
from .common import SLANG_ONLY_CAP, SLANG_WITH_CLASSIFIER


def text_threat_score(hits: Iterable[ThreatHit]) -> float:
    """Score 0..1 of one line/segment from its hits, a noisy-or (1 - prod(1 - w)) of three kinds
    of evidence: slang (lexicon hits), the learned classifier ("classifier:" hits, weighted by
    `classifier_weight`) and explicit threats (pattern hits, and those of any other analyser).
    With a pattern hit everything adds up, so rules and classifier agreeing score higher than
    either. Without one, slang counts at most `SLANG_ONLY_CAP` (below `FLAG_THRESHOLD`), so slang
    alone never flags a line, and next to the classifier only `SLANG_WITH_CLASSIFIER` of that,
    since the classifier has read the same words: the classifier alone flags from
    its flag point (the calibrated threshold), with slang a little below it."""
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
