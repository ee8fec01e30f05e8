"""Speech over a drill beat: word error rate and threat-word recall per speech-to-music ratio,
per Whisper model and per front end (docs/speech-music.md).

The set: the shared real speech clips (../shared/data/speech: JFK and FLEURS) and four
project-written verses of three lines spoken with espeak-ng in the sample clips' British voices
(threats whose weapon, harm and target words are listed, and benign lines full of near-misses
such as "gang"), each mixed with
the samples' drill-style beat (808 bass, kick, hats, snares, bell, from samples/make_samples.py)
plus a sustained chord pad, at speech-to-music ratios of +5, 0 and -5 dB, and clean.

For each configuration (model x front end) it prints the WER per ratio (Whisper's English
normaliser, corpus level), the threat-word recall per ratio, false weapon words in benign lines,
how often `detect_music` fired, and the real-time factor (seconds of compute per second of
audio, this process, this CPU). Transcripts are cached in bench/out/bench_music_cache.json,
keyed by configuration, clip and ratio, so re-scoring or adding a configuration does not re-run
the others (--fresh re-transcribes).

    nice -n 15 python bench/bench_music.py [--configs base:none,base:vocals] [--threads 2]
        [--limit N] [--show]

Front ends: none (the audio as it is), or a `pipelines.vocals.isolate_voice` method (bandpass,
repet, repet-soft) applied to every clip, or with "@auto" only where `detect_music` fires (what
the scan does), e.g. base:repet-soft@auto. A model may carry decoding tweaks: base/b5 (beam
size 5), base/novad (no voice-activity filter)."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import signal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.evaluate import normalise_transcript, word_errors  # noqa: E402
from pipelines.speech import SpeechOptions, build_transcriber  # noqa: E402
from pipelines.vocals import detect_music, isolate_voice, mix_at_snr  # noqa: E402
from pipelines.weights import load_manifest  # noqa: E402

SPEECH_DIR = REPO.parent / "shared" / "data" / "speech"
OUT = REPO / "bench" / "out"
SNRS = (None, 5.0, 0.0, -5.0)  # None: clean
MODELS = {"base": "whisper-base", "tiny.en": "whisper-tiny.en"}
PAD_LEVEL = 0.35  # chord pad under the beat, relative to the beat's peak


def _samples_module():  # type: ignore[no-untyped-def]
    path = REPO / "samples" / "make_samples.py"
    spec = importlib.util.spec_from_file_location("make_samples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module
    spec.loader.exec_module(module)
    return module


SAMPLES = _samples_module()
RP, WM, LAN, GB, FEM = (SAMPLES.RP, SAMPLES.WEST_MIDLANDS, SAMPLES.LANCASTER, "en-gb",
                        SAMPLES.FEMALE)

# Verses of (text, voice, speed, threat words: the weapon, harm and target words a reviewer needs
# to hear). Project-written, not real lyrics; the lines of a verse follow each other over one
# beat, as in a music video. Benign lines carry words one sound away from a weapon word ("gang").
# Each line's voice and speed were picked (of five voices) so that whisper-base hears the line
# almost right without music: espeak-ng is robotic ("stab" in most voices comes out as "stop"),
# and the bench measures what the music takes away, not espeak-ng's diction.
VERSES: tuple[tuple[tuple[str, str, int, tuple[str, ...]], ...], ...] = (
    (("We're going to set fire to their area.", WM, 125, ("fire", "area")),
     ("Burn their houses down and leave nothing standing.", RP, 125, ("burn", "houses")),
     ("The gang are going to the studio tonight.", WM, 125, ())),
    (("Pass me the strap, I'm going to shoot him.", LAN, 125, ("strap", "shoot")),
     ("I'm going to stab you when I catch you.", WM, 140, ("stab",)),
     ("My mum is cooking dinner for the family.", WM, 125, ())),
    (("Grab the knife, we are riding on the opps.", RP, 125, ("knife",)),
     ("Bring the gun to the block and kill them all.", RP, 125, ("gun", "block", "kill")),
     ("We had a great time at the football match.", RP, 125, ())),
    (("We will find your brother and cut him up.", FEM, 125, ("brother", "cut")),
     ("Load the pistol, he is dead tonight.", WM, 125, ("pistol", "dead")),
     ("Turn the music up, this beat is hard.", FEM, 140, ())),
)
LINE_GAP_S = 0.4
WEAPON_WORDS = frozenset({"gun", "guns", "knife", "knives", "strap", "pistol", "shank", "skeng",
                          "blade", "shoot", "stab", "burn", "kill", "dead"})


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (espeak-ng and the beat are at 22.05 kHz)."""
    return signal.resample_poly(samples, 16000, rate).astype(np.float32)


def music_bed() -> np.ndarray:
    """The samples' drill beat with the chord pad under it, 16 kHz, peak 1."""
    beat = np.asarray(SAMPLES.drill_beat_loop())
    pad = np.asarray(SAMPLES.chord_pad_loop(beat.size))
    bed = beat + PAD_LEVEL * pad
    return resample_to_16k(bed / np.abs(bed).max(), SAMPLES.AUDIO_RATE)


def clips(limit: int | None = None) -> list[dict]:
    """Every clip: id, reference text, threat words, 16 kHz audio with 0.5 s of lead-in/out."""
    found = []
    pad = np.zeros(8000, np.float32)
    gap = np.zeros(round(LINE_GAP_S * 16000), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for i, verse in enumerate(VERSES):
            parts = [pad]
            for text, voice, speed, words in verse:
                line = SAMPLES.Line(0.0, text, bool(words), voice, speed)
                parts += [resample_to_16k(np.asarray(SAMPLES.synthesise_speech(line, Path(tmp))),
                                          SAMPLES.AUDIO_RATE), gap]
            found.append({"id": f"verse-{i}", "text": " ".join(line[0] for line in verse),
                          "threat_words": tuple(w for line in verse for w in line[3]),
                          "audio": np.concatenate(parts[:-1] + [pad])})
    from bench.slang_asr import decode_16k

    with (SPEECH_DIR / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            text = (SPEECH_DIR / row["transcript_file"]).read_text(encoding="utf-8").strip()
            found.append({"id": f"real-{row['file']}", "text": text, "threat_words": (),
                          "audio": decode_16k(SPEECH_DIR / row["file"])})
    return found[:limit] if limit else found


def condition_audio(clip: dict, snr: float | None, bed: np.ndarray) -> np.ndarray:
    if snr is None:
        return clip["audio"]
    # Start the bed at a clip-dependent offset so that lines do not all meet the same beat.
    offset = (int(clip["id"].encode().hex(), 16) % 97) * 700 % bed.size
    return mix_at_snr(clip["audio"], np.roll(bed, -offset), snr)


def snr_key(snr: float | None) -> str:
    return "clean" if snr is None else f"{snr:+g}dB"


def run_config(config: str, items: list[dict], bed: np.ndarray, cache: dict, threads: int,
               hints: bool) -> None:
    """Transcribe every clip at every ratio with `config` ("model:frontend"), into `cache`."""
    model_part, front = config.split(":")
    model, *tweaks = model_part.split("/")
    table = cache.setdefault(config, {})
    todo = [(c, s) for c in items for s in SNRS if f"{c['id']}@{snr_key(s)}" not in table]
    if not todo:
        return
    options = replace(SpeechOptions(), language="en", cpu_threads=threads)
    for tweak in tweaks:  # "b5": beam size 5; "novad": no voice-activity filter
        if tweak.startswith("b"):
            options = replace(options, beam_size=int(tweak[1:]))
        elif tweak == "novad":
            options = replace(options, vad_filter=False)
        else:
            raise SystemExit(f"unknown tweak {tweak!r} in {config!r}")
    if hints:
        from pipelines.language import decoding_hints

        options = replace(options, hotwords=decoding_hints())
    transcriber = build_transcriber(load_manifest()[MODELS[model]], options)
    for clip, snr in todo:
        audio = condition_audio(clip, snr, bed)
        started = time.perf_counter()
        music = detect_music(audio)
        method, _, when = front.partition("@")  # "repet@auto": only when music is detected
        if method != "none" and (when != "auto" or music.music):
            audio = isolate_voice(audio, method=method)
        transcript = transcriber.transcribe(audio)
        seconds = time.perf_counter() - started
        words = [w for s in transcript.segments for w in s.words]
        table[f"{clip['id']}@{snr_key(snr)}"] = {
            "text": " ".join(s.text for s in transcript.segments).strip(),
            "rejected": " ".join(s.text for s in transcript.rejected).strip(),
            "seconds": round(seconds, 3), "audio_s": round(audio.size / 16000, 3),
            "music": music.music, "bass_share": music.bass_share, "floor_db": music.floor_db,
            "mean_word_prob": round(float(np.mean([w.probability for w in words])), 4)
            if words else None,
        }
        print(f"{config} {clip['id']} {snr_key(snr)}: {seconds:.1f} s", file=sys.stderr)


_WORD = re.compile(r"[a-z']+")


def score(items: list[dict], cache: dict, configs: list[str], bed: np.ndarray) -> dict:
    """Per config and ratio: WER, threat-word recall, false weapon words, music detected (by
    the current `detect_music`, not the cached flag), RTF."""
    detected_at = {snr_key(s): sum(detect_music(condition_audio(c, s, bed)).music for c in items)
                   for s in SNRS}
    results: dict = {}
    for config in configs:
        table = cache[config]
        row: dict = {}
        for snr in SNRS:
            key = snr_key(snr)
            errors = words = recalled = expected = false_weapons = 0
            compute = audio_s = 0.0
            probs = []
            for clip in items:
                got = table[f"{clip['id']}@{key}"]
                e, n = word_errors(clip["text"], got["text"])
                errors, words = errors + e, words + n
                heard = set(_WORD.findall(normalise_transcript(got["text"])))
                expected += len(clip["threat_words"])
                recalled += sum(1 for w in clip["threat_words"] if w in heard)
                said = set(_WORD.findall(normalise_transcript(clip["text"])))
                false_weapons += len((heard - said) & WEAPON_WORDS)
                compute += got["seconds"]
                audio_s += got["audio_s"]
                if got["mean_word_prob"] is not None:
                    probs.append(got["mean_word_prob"])
            row[key] = {
                "wer": round(errors / words, 4),
                "threat_recall": round(recalled / expected, 4) if expected else None,
                "false_weapon_words": false_weapons,
                "music_detected": f"{detected_at[key]}/{len(items)}",
                "rtf": round(compute / audio_s, 3),
                "mean_word_prob": round(float(np.mean(probs)), 3) if probs else None}
        results[config] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="base:none,base:repet,tiny.en:none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="first N clips only (a quick look)")
    parser.add_argument("--hints", action="store_true", help="slang lexicon as hotwords")
    parser.add_argument("--fresh", action="store_true", help="re-transcribe everything")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    cache_path = OUT / ("bench_music_cache" + ("_hints" if args.hints else "") + ".json")
    cache = {} if args.fresh or not cache_path.exists() else json.loads(cache_path.read_text())
    items, bed = clips(args.limit), music_bed()
    configs = args.configs.split(",")
    for config in configs:
        run_config(config, items, bed, cache, args.threads, args.hints)
        cache_path.write_text(json.dumps(cache, indent=1))
    results = score(items, cache, configs, bed)
    (OUT / "bench_music.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.show:
        for clip in items:
            print(f"\n{clip['id']}: {clip['text']}")
            for config in configs:
                for snr in SNRS:
                    print(f"  {config:>16} {snr_key(snr):>6}: "
                          f"{cache[config][clip['id'] + '@' + snr_key(snr)]['text']}")
    print("| model:front end | ratio | WER | threat words recalled | false weapon words "
          "| music detected | mean word prob | RTF |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for config, row in results.items():
        for key, m in row.items():
            recall = "-" if m["threat_recall"] is None else f"{m['threat_recall']:.2f}"
            print(f"| {config} | {key} | {m['wer']:.3f} | {recall} | {m['false_weapon_words']} "
                  f"| {m['music_detected']} | {m['mean_word_prob']} | {m['rtf']:.3f} |")


if __name__ == "__main__":
    main()
