"""Benchmark of re-upload matching (docs/matching.md), on this machine's CPU:

1. hash cost per minute of video: the frames of every sample decoded at 1 fps as a scan decodes
   them, then PDQ-hashed (`hash_frame`); the audio extracted, then fingerprinted (fpcalc). The
   hashing is reported in seconds per minute of video and against the decode time of the same
   frames;
2. lookup time in a bank of 1,000,000 random PDQ hashes plus the samples' real ones, for one
   query frame and for a minute of video (60 frames at 1 fps), and the time to build the index;
3. match rate and false-match rate: every sample is banked; each of its ffmpeg variants
   (tests/pipelines/variants.py) must match it; a match between videos that share no picture
   (samples/labels.json shot lists) is a false match. Pairs that do share pictures are counted
   apart: matching them is right, as far as pictures go.

    .venv/bin/python bench/bench_matching.py [--bank-size 1000000] [--json FILE]"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pipelines.matching import (  # noqa: E402
    REGION_NAMES,
    BankVideo,
    HashBank,
    fingerprint_audio,
    fingerprint_file,
    hash_frame,
    match_video,
)
from pipelines.media import extract_audio, probe, sample_frames  # noqa: E402
from tests.pipelines.variants import VARIANTS, make_variant  # noqa: E402

SAMPLES = REPO_ROOT / "samples"


def _best(repeat: int, work: Any) -> tuple[float, Any]:
    """The shortest of `repeat` timed runs of `work()` (a shared machine only ever adds time),
    and what it returned."""
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = work()
        best = min(best, time.perf_counter() - started)
    return best, value


def hash_cost(videos: list[Path], repeat: int = 3) -> dict[str, float]:
    """Decode, hashing and fingerprinting seconds over `videos`, per minute of video (each the
    best of `repeat` runs)."""
    decode = hashing = audio_decode = audio_hash = minutes = 0.0
    frames = 0
    for path in videos:
        info = probe(path)
        minutes += info.duration / 60
        seconds, decoded = _best(repeat, lambda info=info: list(sample_frames(info, 1.0, 640)))
        decode += seconds
        hashing += _best(repeat, lambda decoded=decoded: [hash_frame(f) for f in decoded])[0]
        frames += len(decoded)
        if info.has_audio:
            seconds, samples = _best(repeat, lambda info=info: extract_audio(info))
            audio_decode += seconds
            audio_hash += _best(repeat, lambda samples=samples: fingerprint_audio(samples))[0]
    return {"minutes": minutes, "frames": frames,
            "decode_s_per_min": decode / minutes, "hash_s_per_min": hashing / minutes,
            "hash_ms_per_frame": 1000 * hashing / frames, "hash_vs_decode": hashing / decode,
            "audio_decode_s_per_min": audio_decode / minutes,
            "fingerprint_s_per_min": audio_hash / minutes}


def lookup_cost(bank_size: int, real: list[BankVideo], queries: list[BankVideo],
                repeat: int = 3) -> dict[str, float]:
    """Index build and lookup times in a bank of `bank_size` random hashes plus `real`
    (lookups: the best of `repeat` runs)."""
    rng = np.random.default_rng(0)
    bank = HashBank(real)
    started = time.perf_counter()
    chunk = 250_000
    for first in range(0, bank_size, chunk):
        count = min(chunk, bank_size - first)
        bank.add_hashes(f"random-{first}", "random", rng.integers(0, 256, (count, 32), np.uint8),
                        np.arange(count, dtype=np.float32) % 600,
                        rng.integers(0, len(REGION_NAMES), count).astype(np.int8))
    frames = [f for video in queries for f in video.frames]
    bank.lookup(frames[:1])  # builds the index
    build = time.perf_counter() - started
    one_by_one = _best(repeat, lambda: [bank.lookup([f]) for f in frames])[0] / len(frames)
    minute = frames[:60]
    batch = _best(repeat, lambda: bank.lookup(minute))[0]
    return {"bank_hashes": len(bank), "build_s": build, "lookup_ms_per_frame": 1000 * one_by_one,
            "lookup_s_per_min_batch": batch * 60 / len(minute),
            "index_mb": len(bank) * 32 / 1e6}


def shared_pictures(labels: dict[str, Any], a: str, b: str) -> bool:
    """Whether clips `a` and `b` show any same picture (samples/labels.json shot lists)."""
    def pictures(name: str) -> set[str]:
        return {shot["image"] for shot in labels[name]["shots"]}
    return bool(pictures(a) & pictures(b))


def match_rates(videos: list[Path], folder: Path) -> dict[str, Any]:
    """Match rate over the variants and false-match rate over unrelated pairs."""
    labels = json.loads((SAMPLES / "labels.json").read_text())
    originals = {path.name: fingerprint_file(path) for path in videos}
    bank = HashBank(originals.values())
    intro = SAMPLES / "kitchen_benign.mp4"
    per_variant: dict[str, list[int]] = {name: [0, 0] for name in VARIANTS}
    false_pairs, unrelated_pairs, shared_pairs, shared_matched = 0, 0, 0, 0
    misses = []

    def check(query: BankVideo, source: str, variant: str | None, intro_name: str = "") -> None:
        nonlocal false_pairs, unrelated_pairs, shared_pairs, shared_matched
        found = {m.video_id for m in match_video(query.frames, query.audio, bank, interval=1.0)}
        if variant is not None:
            per_variant[variant][1] += 1
            if source in found:
                per_variant[variant][0] += 1
            else:
                misses.append(f"{source}:{variant}")
        for other in originals:
            if other in (source, intro_name):
                continue
            if shared_pictures(labels, source, other):
                shared_pairs += 1
                shared_matched += other in found
            else:
                unrelated_pairs += 1
                false_pairs += other in found

    for path in videos:
        check(originals[path.name], path.name, None)
        for variant in VARIANTS:
            front = intro if path.name != intro.name else SAMPLES / "music_only.mp4"
            made = make_variant(path, variant, folder, intro=front)
            check(fingerprint_file(made), path.name, variant,
                  front.name if variant == "intro" else "")
    matched = sum(v[0] for v in per_variant.values())
    total = sum(v[1] for v in per_variant.values())
    return {"variants": {k: f"{v[0]}/{v[1]}" for k, v in per_variant.items()},
            "match_rate": matched / total, "matched": matched, "variant_queries": total,
            "false_matches": false_pairs, "unrelated_pairs": unrelated_pairs,
            "false_match_rate": false_pairs / unrelated_pairs if unrelated_pairs else 0.0,
            "shared_picture_pairs": shared_pairs, "shared_picture_pairs_matched": shared_matched,
            "misses": misses}


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank-size", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts (3)")
    parser.add_argument("--no-rates", action="store_true",
                        help="skip the variants (match and false-match rates)")
    args = parser.parse_args(argv)
    videos = sorted(SAMPLES.glob("*.mp4"))
    cost = hash_cost(videos, args.repeat)
    print(f"hash cost over {cost['minutes']:.1f} min of samples ({cost['frames']} frames at "
          f"1 fps, 640 px):")
    print(f"  decode frames       {cost['decode_s_per_min']:.3f} s per minute of video")
    print(f"  PDQ, 5 regions      {cost['hash_s_per_min']:.3f} s per minute "
          f"({cost['hash_ms_per_frame']:.1f} ms a frame, {cost['hash_vs_decode']:.2f}x decode)")
    print(f"  decode audio        {cost['audio_decode_s_per_min']:.3f} s per minute")
    print(f"  Chromaprint         {cost['fingerprint_s_per_min']:.3f} s per minute")
    real = [fingerprint_file(path) for path in videos]
    lookups = lookup_cost(args.bank_size, real, real, args.repeat)
    print(f"lookup in a bank of {lookups['bank_hashes']:,} hashes ({lookups['index_mb']:.0f} MB "
          f"index, built in {lookups['build_s']:.2f} s):")
    print(f"  one frame           {lookups['lookup_ms_per_frame']:.1f} ms")
    print(f"  a minute at 1 fps   {lookups['lookup_s_per_min_batch']:.2f} s (one batch)")
    if args.no_rates:
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        rates = match_rates(videos, Path(scratch))
    print(f"matching over {rates['variant_queries']} variants of {len(videos)} samples:")
    for name, score in rates["variants"].items():
        print(f"  {name:<12} {score}")
    print(f"  match rate          {rates['match_rate']:.1%} ({rates['matched']}/"
          f"{rates['variant_queries']}); missed: {', '.join(rates['misses']) or 'none'}")
    print(f"  false-match rate    {rates['false_match_rate']:.1%} ({rates['false_matches']}/"
          f"{rates['unrelated_pairs']} pairs sharing no picture)")
    print(f"  shared pictures     {rates['shared_picture_pairs_matched']}/"
          f"{rates['shared_picture_pairs']} pairs that show a same picture matched")
    if args.json:
        args.json.write_text(json.dumps({"hash_cost": cost, "lookup": lookups,
                                         "matching": rates}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
