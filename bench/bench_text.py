"""Speed of the language analysis on one minute of speech: the rules alone (the baseline, in the
same process) against rules + the fine-tuned classifier over word windows, as seconds per minute
of speech and the ratio between them.

The transcript is made of real labelled lines (the evaluation set), cut into Whisper-sized
segments with word timestamps at 2.6 words a second (about 156 words a minute, a fast talker).

    .venv/bin/python bench/bench_text.py [--minutes N] [--repeat R]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.language import RULE_ANALYSERS, analyse_transcript, load_text_model  # noqa: E402
from pipelines.types import TranscriptSegment, Word  # noqa: E402

WORDS_PER_SECOND = 2.6
EVAL = Path(__file__).resolve().parent.parent / "pipelines" / "data" / "text" / \
    "threat_lines_eval.csv"


def transcript(minutes: float) -> list[TranscriptSegment]:
    """Segments of about 12-25 words with word times, `minutes` long."""
    with open(EVAL, newline="", encoding="utf-8") as f:
        lines = [r["text"] for r in csv.DictReader(f)]
    segments: list[TranscriptSegment] = []
    t, index = 0.0, 0
    while t < minutes * 60:
        text = " ".join(lines[(index + k) % len(lines)] for k in range(2))
        index += 2
        words = []
        for word in text.split():
            words.append(Word(start=round(t, 2), end=round(t + 0.3, 2), text=" " + word,
                              probability=0.9))
            t += 1 / WORDS_PER_SECOND
        segments.append(TranscriptSegment(start=words[0].start, end=words[-1].end,
                                          text=" " + text, words=tuple(words)))
    return segments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    segments = transcript(args.minutes)
    words = sum(len(s.words) for s in segments)
    started = time.perf_counter()
    load_text_model()
    load_s = time.perf_counter() - started
    analyse_transcript(segments[:2])  # warm-up: first call allocates

    def timed(analysers: object) -> float:
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            analyse_transcript(segments, analysers)  # type: ignore[arg-type]
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    rules = timed(RULE_ANALYSERS)
    full = timed(None)
    per_minute = 1 / args.minutes
    print(f"| analysis | s per minute of speech ({words} words, {len(segments)} segments, "
          f"median of {args.repeat}) | ratio to rules alone |")
    print("| --- | --- | --- |")
    print(f"| rules alone (baseline) | {rules * per_minute:.3f} | 1.0x |")
    print(f"| rules + classifier over word windows | {full * per_minute:.3f} | "
          f"{full / max(rules, 1e-9):.1f}x |")
    print(f"\nclassifier load (once per process): {load_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
