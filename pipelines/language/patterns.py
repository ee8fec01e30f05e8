"""Threat patterns (`data/patterns.toml`): explicit threats, calls to action and boasts, each
naming who threatens whom. Pattern hits are strong evidence."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache

from .common import PATTERN_CATEGORIES, SpanHit, data_text, normalise
from .context import in_context


@dataclass(frozen=True, slots=True)
class ThreatPattern:
    """One `[[patterns]]` entry of `data/patterns.toml`, fragments expanded and compiled."""

    name: str
    category: str
    meaning: str  # template with {subj}, {obj}, {act}
    weight: float
    regex: re.Pattern[str]


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
    data = tomllib.loads(data_text("patterns.toml"))
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


class PatternAnalyser:
    """Explicit threats, calls to action and boasts from `data/patterns.toml`. A match inside a
    longer match of at most the same weight is dropped (the longer one explains more)."""

    name = "patterns"

    def matches(self, text: str) -> list[tuple[SpanHit, tuple[int, int]]]:
        """Every pattern match in `text` with the span its negation check covers, before the
        negation and reported-speech rules."""
        norm = normalise(text)
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
        norm = normalise(text)
        hits = []
        for hit, core in self.matches(text):
            kept = in_context(norm, hit, core)
            if kept is not None:
                hits.append(kept)
        return [h for h in hits if not any(_explains(other, h) for other in hits)]


def _explains(longer: SpanHit, hit: SpanHit) -> bool:
    """True when `longer` strictly contains `hit` and weighs at least as much: "I'll stab you"
    needs no separate "stab you" order once the threat is reported."""
    contains = longer.start <= hit.start and hit.end <= longer.end
    strictly = (longer.start, longer.end) != (hit.start, hit.end)
    return contains and strictly and longer.weight >= hit.weight
