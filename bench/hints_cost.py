"""What the slang hints cost Whisper, before and after issue 26, in one process.

    .venv/bin/python bench/hints_cost.py [--threads 2] [--repeat 1]

whisper-base (the scan's transcriber, English) transcribes a few clips with three settings:
no hints, the slang hotwords as faster-whisper handles them (`hint_max_tokens=0`: every
fallback decode primed with the list), and the hotwords guarded as a scan now uses them (one
greedy hinted decode per window, at most `hint_max_tokens` tokens, else the window is decoded
as without hints). The settings take turns on each clip, so load from other work on a shared
machine hits them alike; read the ratios. Clips, from `samples/`:

- `beat-then-drill`: music_only (15 s of beat, no voice) then threat_gun_drill (speech over
  the beat), with the voice filter off: the windows of beat that a voice filter lets through,
  where the hinted decoder writes the list again and again.
- `speech-1min`: the perf benchmark's minute of speech (threat_knife, threat_gun_drill,
  threat_speech_only), voice filter on, as a scan.
- `speech-over-beat`: the same minute with the beat mixed under it all through, filter on."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.language import decoding_hints  # noqa: E402
from pipelines.speech import SpeechOptions, build_transcriber  # noqa: E402
from pipelines.weights import load_manifest  # noqa: E402

SAMPLES = REPO / "samples"
THREATS = ("threat_knife.mp4", "threat_gun_drill.mp4", "threat_speech_only.mp4")


def audio_of(*clips: str, beat_under: bool = False) -> np.ndarray:
    """The clips' audio one after the other (16 kHz mono float32), the beat mixed under it."""
    inputs = [arg for clip in clips for arg in ("-i", str(SAMPLES / clip))]
    joined = "".join(f"[{i}:a]" for i in range(len(clips)))
    graph = f"{joined}concat=n={len(clips)}:v=0:a=1[s]"
    if beat_under:
        inputs += ["-stream_loop", "-1", "-i", str(SAMPLES / "music_only.mp4")]
        graph += (f";[{len(clips)}:a]volume=0.8[m];"
                  "[s][m]amix=inputs=2:duration=first:normalize=0[s2]")
    out = "[s2]" if beat_under else "[s]"
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", *inputs, "-filter_complex", graph,
                          "-map", out, "-ac", "1", "-ar", "16000", "-f", "s16le", "pipe:1"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    clips = {
        "beat-then-drill": (audio_of("music_only.mp4", "threat_gun_drill.mp4"), False),
        "speech-1min": (audio_of(*THREATS), True),
        "speech-over-beat": (audio_of(*THREATS, beat_under=True), True),
    }
    spec = load_manifest()["whisper-base"]
    hints = decoding_hints()
    settings = {
        "no hints": SpeechOptions(language="en", cpu_threads=args.threads),
        "hotwords, unguarded (before)": SpeechOptions(language="en", cpu_threads=args.threads,
                                                      hotwords=hints, hint_max_tokens=0),
        "hotwords, guarded (after)": SpeechOptions(language="en", cpu_threads=args.threads,
                                                   hotwords=hints),
    }
    print("| clip | seconds of audio | setting | transcribe s (each run) | windows decoded "
          "again without hints | words |")
    print("| --- | --- | --- | --- | --- | --- |")
    for clip, (audio, vad) in clips.items():
        models = {name: build_transcriber(spec, replace(options, vad_filter=vad))
                  for name, options in settings.items()}
        seconds: dict[str, list[float]] = {name: [] for name in settings}
        words: dict[str, int] = {}
        for i in range(args.repeat):
            order = list(settings) if i % 2 == 0 else list(settings)[::-1]
            for name in order:
                started = time.perf_counter()
                transcript = models[name].transcribe(audio)
                seconds[name].append(time.perf_counter() - started)
                words[name] = sum(len(s.words) for s in transcript.segments)
        for name in settings:
            runs = ", ".join(f"{s:.1f}" for s in seconds[name])
            fallbacks = getattr(models[name], "hint_fallbacks", 0)
            print(f"| {clip} | {audio.size / 16000:.0f} | {name} | {runs} | {fallbacks} "
                  f"| {words[name]} |", flush=True)


if __name__ == "__main__":
    main()
