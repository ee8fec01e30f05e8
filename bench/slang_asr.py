"""How much UK drill slang survives Whisper, and what decoding hints and fuzzy matching win back.

Drill-slang lines (and benign lines full of near-homophones: "scan the form", "the chef", "that
thing was bad") are spoken with espeak-ng in two British voices, resampled to 16 kHz and
transcribed with whisper-base (English) through the scanner's own transcriber, once per setting:
no hints, the lexicon primer as `initial_prompt`, as `hotwords`, and both. For each transcript it
counts the lexicon terms of the reference line that the lexicon analyser finds again, exactly and
with fuzzy matching, and the slang it finds that the speaker never said (false insertions). The
real-speech check is the word error rate on ../shared/data/speech (JFK and FLEURS), with Whisper's
English normaliser, with and without hints.

    python bench/slang_asr.py [--out runs/slang_asr/slang_asr.json] [--threads 2] [--show]

Transcripts are cached in the output JSON's folder (`slang_asr_transcripts.json`), keyed by
configuration and clip, so re-scoring after a lexicon change does not re-run Whisper (pass
--fresh to re-transcribe). Synthetic speech is a weak proxy for drill vocals; the numbers say
which way each change goes, not what it does on real music."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.language import LexiconAnalyser, decoding_hints  # noqa: E402
from pipelines.speech import SpeechOptions, build_transcriber  # noqa: E402
from pipelines.weights import load_manifest  # noqa: E402

SPEECH_DIR = REPO.parent / "shared" / "data" / "speech"
VOICES = ("en-gb", "en-gb-x-rp")  # espeak-ng's British and Received Pronunciation voices
LANGUAGE = "en"  # whisper-base's language detection misfires on 2-s robotic lines (Thai, Malay)
SPEED = 140  # words per minute: slower than espeak's default, which Whisper garbles

# Project-written lines (not real lyrics). Slang lines carry lexicon terms; benign lines carry
# everyday words that sound like slang, to catch hints that make Whisper hear slang not said.
SLANG_LINES = (
    "Grab the skeng, we're riding on the opps.",
    "Free the mandem, bless up.",
    "That ting was peng.",
    "Man are gonna cheff him up.",
    "We're gonna wet him up tonight.",
    "Spin the block, it's on sight.",
    "Pass me the strap, we're sliding.",
    "He got duppied on the opp block.",
    "Bring the bora and the shank.",
    "Wagwan bruv, link the mandem in the ends.",
    "Put him on a t-shirt, his mum's crying.",
    "Back the ting and let it bang.",
    "Splash him with the nina.",
    "Rambo in my waist, zombie knife.",
    "The dotty's in the bally, innit blud.",
)
BENIGN_LINES = (
    "Can you scan the form and send it to me?",
    "The chef cooked a lovely dinner for us.",
    "That thing was bad, but the film was good.",
    "The ops team will fix the server tonight.",
    "Mind the wet paint on the bench.",
    "Send the manual to the man at the front desk.",
    "She packed a blanket and a flask for the trip.",
    "My mum is buying a new kettle.",
)

CONFIGS = ("none", "initial_prompt", "hotwords", "both", "hotwords_framed", "hotwords_unguarded")


def hint_options(config: str, threads: int) -> SpeechOptions:
    """Scanner speech options for one hint setting (everything else at the scan's defaults):
    the lexicon primer as a bare list, or framed as a finished sentence ("Slang: ...") so that
    the decoder is less tempted to continue the list. Hotwords are guarded as in a scan (a
    window whose hinted decode fails is decoded without them); "hotwords_unguarded" is
    faster-whisper's own handling, every fallback primed (issue 26)."""
    hints = decoding_hints()
    prompt = hints if config in {"initial_prompt", "both"} else None
    hotwords = {"hotwords": hints, "both": hints, "hotwords_framed": f"Slang: {hints}.",
                "hotwords_unguarded": hints}.get(config)
    options = replace(
        SpeechOptions(),
        language=LANGUAGE,
        initial_prompt=prompt,
        hotwords=hotwords,
        cpu_threads=threads,
    )
    return replace(options, hint_max_tokens=0) if config == "hotwords_unguarded" else options


def decode_16k(path: Path) -> np.ndarray:
    """Any audio file as float32 mono 16 kHz samples (ffmpeg)."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-ac",
            "1",
            "-ar",
            "16000",
            "-f",
            "s16le",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def synthesise(text: str, voice: str, folder: Path) -> np.ndarray:
    """Speak `text` with espeak-ng and return it at 16 kHz, with a half-second lead-in."""
    wav = folder / "line.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(wav), text], check=True)
    audio = decode_16k(wav)
    pad = np.zeros(8000, np.float32)
    return np.concatenate([pad, audio, pad])


def clips() -> list[dict]:
    """Every clip of the bench: id, kind (slang / benign / real), reference text, audio."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, lines in (("slang", SLANG_LINES), ("benign", BENIGN_LINES)):
            for i, text in enumerate(lines):
                for voice in VOICES:
                    found.append(
                        {
                            "id": f"{kind}-{i:02d}-{voice}",
                            "kind": kind,
                            "text": text,
                            "audio": synthesise(text, voice, Path(tmp)),
                        }
                    )
    with (SPEECH_DIR / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            text = (SPEECH_DIR / row["transcript_file"]).read_text(encoding="utf-8").strip()
            found.append(
                {
                    "id": f"real-{row['file']}",
                    "kind": "real",
                    "text": text,
                    "audio": decode_16k(SPEECH_DIR / row["file"]),
                }
            )
    return found


def transcribe_all(items: list[dict], cache: Path, threads: int, fresh: bool,
                   configs: tuple[str, ...] = CONFIGS) -> dict:
    """config -> clip id -> transcript text, from the cache where present."""
    done: dict[str, dict[str, str]] = {}
    if cache.exists() and not fresh:
        done = json.loads(cache.read_text())
    guard = SpeechOptions().hint_max_tokens
    setup = f"hints={decoding_hints()}; language={LANGUAGE}; guard={guard}"
    if done.get("_setup") != setup:
        done = {"_setup": setup}  # type: ignore[dict-item]
    spec = load_manifest()["whisper-base"]
    for config in configs:
        table = done.setdefault(config, {})
        todo = [c for c in items if c["id"] not in table]
        if not todo:
            continue
        transcriber = build_transcriber(spec, hint_options(config, threads))
        started = time.perf_counter()
        for clip in todo:
            transcript = transcriber.transcribe(clip["audio"])
            table[clip["id"]] = " ".join(s.text for s in transcript.segments).strip()
        seconds = time.perf_counter() - started
        done.setdefault("_seconds", {})[config] = round(seconds, 1)  # type: ignore[index]
        fallbacks = getattr(transcriber, "hint_fallbacks", 0)
        done.setdefault("_hint_fallbacks", {})[config] = fallbacks  # type: ignore[index]
        print(f"{config}: {len(todo)} clips in {seconds:.0f} s, {fallbacks} windows decoded "
              "again without hints", file=sys.stderr)
        cache.write_text(json.dumps(done, indent=1))
    return done


def lexicon_terms(text: str, analyser: LexiconAnalyser) -> set[str]:
    """Lexicon terms found in `text` (neutral ones too: "mandem" recovered counts)."""
    return {entry.term for _, entry in analyser.matches(text)}


def score(items: list[dict], transcripts: dict, configs: tuple[str, ...] = CONFIGS) -> dict:
    """Per config and matcher: slang terms recovered, false insertions, WER on real speech."""
    import jiwer
    from whisper.normalizers import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    matchers = {"exact": LexiconAnalyser(fuzzy=False), "fuzzy": LexiconAnalyser(fuzzy=True)}
    results: dict = {"hints": decoding_hints(), "configs": {}}
    for config in configs:
        heard = transcripts[config]
        row: dict = {}
        for name, matcher in matchers.items():
            expected = recovered = inserted_slang = inserted_benign = 0
            for clip in items:
                said = lexicon_terms(clip["text"], matchers["exact"])
                got = lexicon_terms(heard[clip["id"]], matcher)
                if clip["kind"] == "slang":
                    expected += len(said)
                    recovered += len(said & got)
                    inserted_slang += len(got - said)
                else:
                    inserted_benign += len(got - said)
            row[name] = {
                "expected": expected,
                "recovered": recovered,
                "inserted_in_slang": inserted_slang,
                "inserted_in_benign": inserted_benign,
            }
        for kind in ("benign", "real"):
            refs = [normalise(c["text"]) for c in items if c["kind"] == kind]
            hyps = [normalise(heard[c["id"]]) for c in items if c["kind"] == kind]
            row[f"wer_{kind}"] = round(jiwer.wer(refs, hyps), 4)
        results["configs"][config] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "slang_asr" / "slang_asr.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="re-transcribe everything")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated hint settings of {', '.join(CONFIGS)}")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    configs = tuple(c for c in args.configs.split(",") if c)
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown hint setting(s): {', '.join(unknown)}")
    items = clips()
    transcripts = transcribe_all(
        items, args.out.with_name("slang_asr_transcripts.json"), args.threads, args.fresh, configs
    )
    results = score(items, transcripts, configs)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.show:
        for clip in items:
            print(f"\n{clip['id']}: {clip['text']}")
            for config in configs:
                print(f"  {config:>14}: {transcripts[config][clip['id']]}")
    print(
        "| hints | matcher | slang terms recovered | inserted (slang lines) "
        "| inserted (benign lines) | WER benign synth | WER real speech |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for config, row in results["configs"].items():
        for name in ("exact", "fuzzy"):
            m = row[name]
            print(
                f"| {config} | {name} | {m['recovered']}/{m['expected']} "
                f"| {m['inserted_in_slang']} | {m['inserted_in_benign']} "
                f"| {row['wer_benign']:.3f} | {row['wer_real']:.3f} |"
            )


if __name__ == "__main__":
    main()
