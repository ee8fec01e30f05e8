"""Speech over music (pipelines/vocals.py): detecting a beat under speech, the vocal front end,
the music-aware transcriber's routing, and how the report states the listening conditions."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import ReportInvalid
from pipelines.report import check_report, speech_conditions
from pipelines.speech import merge_transcripts
from pipelines.types import Transcript, TranscriptSegment, Word
from pipelines.vocals import (
    MusicAwareTranscriber,
    detect_music,
    isolate_voice,
    mix_at_snr,
    reliability,
)

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"


def decode(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1",
                          "-ar", "16000", "-f", "s16le", "pipe:1"], capture_output=True,
                         check=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    """11 s of real read speech (JFK's inaugural address), 16 kHz."""
    return decode(SPEECH / "jfk.wav")


@pytest.fixture(scope="module")
def beat(repo_root: Path) -> np.ndarray:
    """The samples' drill beat with its chord pad, 16 kHz (as bench/bench_music.py mixes it)."""
    import sys

    sys.path.insert(0, str(repo_root))
    from bench.bench_music import music_bed

    return music_bed()


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = reference - reference.mean(), estimate - estimate.mean()
    target = np.dot(estimate, reference) / np.dot(reference, reference) * reference
    error = estimate - target
    return float(10 * np.log10(np.dot(target, target) / np.dot(error, error)))


def test_mix_at_snr_sets_the_speech_to_music_ratio(jfk: np.ndarray, beat: np.ndarray) -> None:
    for snr in (5.0, 0.0, -5.0):
        mix = mix_at_snr(jfk, beat, snr).astype(np.float64)
        voiced = np.abs(jfk) > 0.02 * np.abs(jfk).max()
        scale = np.dot(mix, jfk) / np.dot(jfk, jfk)  # the peak normalisation scaled both
        music = mix - scale * jfk
        ratio = 10 * np.log10(np.mean((scale * jfk[voiced]) ** 2) / np.mean(music[voiced] ** 2))
        assert ratio == pytest.approx(snr, abs=0.3)


def test_music_is_detected_under_speech_and_not_in_clean_speech(jfk: np.ndarray,
                                                                  beat: np.ndarray) -> None:
    assert not detect_music(jfk).music
    for snr in (5.0, 0.0, -5.0):
        found = detect_music(mix_at_snr(jfk, beat, snr))
        assert found.music, (snr, found)
    assert not detect_music(np.zeros(16000 * 3, np.float32)).music
    assert not detect_music(jfk[:8000]).music  # too short to tell


def test_music_detection_on_the_sample_clips(threat_rap_over_beat_video: Path,
                                              music_only_video: Path,
                                              threat_speech_only_video: Path,
                                              kitchen_benign_video: Path) -> None:
    from pipelines.media import extract_audio, probe

    def heard(path: Path) -> bool:
        return detect_music(extract_audio(probe(path))).music

    assert heard(threat_rap_over_beat_video) and heard(music_only_video)
    assert not heard(threat_speech_only_video) and not heard(kitchen_benign_video)


def test_front_end_brings_the_voice_out_of_the_beat(jfk: np.ndarray, beat: np.ndarray) -> None:
    mix = mix_at_snr(jfk, beat, 0.0)
    cleaned = isolate_voice(mix)
    assert cleaned.shape == mix.shape and cleaned.dtype == np.float32
    assert si_sdr(jfk, cleaned) > si_sdr(jfk, mix) + 4.0


class Recorder:
    """A stand-in transcriber that records the audio it was given (routing only)."""

    def __init__(self, name: str, probability: float) -> None:
        self.name, self.heard, self._probability = name, [], probability

    def transcribe(self, audio: np.ndarray) -> Transcript:
        self.heard.append(audio)
        word = Word(start=0.0, end=0.5, text="hello", probability=self._probability)
        segment = TranscriptSegment(start=0.0, end=0.5, text="hello", words=(word,))
        return Transcript(language="en", language_probability=1.0, segments=(segment,),
                          model=self.name, speech_seconds=0.5)


def test_clean_audio_goes_untouched_to_the_plain_model(jfk: np.ndarray, beat: np.ndarray) -> None:
    plain, music = Recorder("plain@1", 0.9), Recorder("music@1", 0.5)
    transcriber = MusicAwareTranscriber(plain, music, front_end="repet")
    clean = transcriber.transcribe(jfk)
    assert len(plain.heard) == 1 and plain.heard[0] is jfk and not music.heard
    assert clean.music_seconds == 0.0 and clean.front_end == ""
    assert clean.mean_word_probability == 0.9

    mix = mix_at_snr(jfk, beat, 0.0)
    under = transcriber.transcribe(mix)
    assert len(music.heard) == 1 and len(plain.heard) == 1
    assert not np.array_equal(music.heard[0], mix)  # the front end cleaned it first
    assert under.music_seconds == pytest.approx(mix.size / 16000, abs=0.01)
    assert under.front_end == "repet" and under.mean_word_probability == 0.5

    raw = Recorder("plain@1", 0.9)
    MusicAwareTranscriber(raw).transcribe(mix)  # the default: music noted, audio untouched
    assert np.array_equal(raw.heard[0], mix)
    with pytest.raises(ValueError, match="unknown front end"):
        MusicAwareTranscriber(raw, front_end="magic")


def test_merged_transcripts_keep_music_time_and_word_probability() -> None:
    def part(start: float, probability: float, music: float) -> Transcript:
        word = Word(start=start + 1, end=start + 1.5, text="word", probability=probability)
        segment = TranscriptSegment(start=start + 1, end=start + 1.5, text="word", words=(word,))
        return Transcript(language="en", language_probability=1.0, segments=(segment,),
                          model="m@1", speech_seconds=10.0, music_seconds=music,
                          front_end="repet" if music else "", mean_word_probability=probability)

    merged = merge_transcripts([part(0.0, 0.9, 0.0), part(8.0, 0.5, 10.0)],
                               [(0.0, 10.0), (8.0, 18.0)])
    assert merged.mean_word_probability == pytest.approx(0.7)
    # Cut at 8.75 s, in the silence before the second part's word: it owns 9.25 of its 10 s.
    assert merged.music_seconds == pytest.approx(9.25)
    assert merged.front_end == "repet"


def test_a_tiny_scan_names_base_as_its_music_model() -> None:
    from pipelines.scan import ScanOptions, model_refs

    tiny = model_refs(ScanOptions(speech_model="tiny.en"))
    assert tiny["speech"].startswith("whisper-tiny.en@")
    assert tiny["speech:music"].startswith("whisper-base@")
    assert "speech:music" not in model_refs(ScanOptions())  # base already
    assert "speech:music" not in model_refs(ScanOptions(speech_model="tiny.en",
                                                        music_speech_model=""))


@pytest.mark.parametrize(("probability", "level"), [
    (0.95, "high"), (0.8, "high"), (0.7, "medium"), (0.3, "low"), (None, "unknown")])
def test_reliability_levels(probability: float | None, level: str) -> None:
    assert reliability(probability) == level


def test_report_states_the_listening_conditions() -> None:
    transcript = Transcript(language="en", language_probability=1.0, segments=(), model="m@1",
                            music_seconds=12.0, front_end="repet", mean_word_probability=0.55)
    conditions = speech_conditions(transcript)
    assert conditions == {"music": True, "music_seconds": 12.0, "front_end": "repet",
                          "mean_word_probability": 0.55, "reliability": "low"}
    assert speech_conditions(replace(transcript, music_seconds=0.0))["music"] is False
    assert speech_conditions(None) is None
    report = {"schema_version": "1.0", "risk_score": 0.2, "flagged": False,
              "video": {"path": "a.mp4"}, "flagged_segments": [],
              "speech_conditions": conditions}
    assert check_report(report) is report
    for broken in ({**conditions, "mean_word_probability": 1.5},
                   {**conditions, "music": "yes"}, {"music": True}):
        with pytest.raises(ReportInvalid):
            check_report({**report, "speech_conditions": broken})


# ------------------------------------------------------------------ end to end, real models


@pytest.mark.slow
def test_threat_rapped_over_the_beat_is_flagged_with_its_words(
        scan_models, threat_rap_over_beat_video: Path, sample_labels: dict) -> None:
    from pipelines import ScanOptions, scan, to_dict
    from pipelines.report import summary

    report = to_dict(scan(threat_rap_over_beat_video, ScanOptions(), models=scan_models))
    assert check_report(report) is report
    conditions = report["speech_conditions"]
    assert conditions["music"] and conditions["front_end"] == "none"
    assert conditions["music_seconds"] > 10 and conditions["mean_word_probability"] is not None
    assert report["flagged"], report["transcript"]
    truth = sample_labels["threat_rap_over_beat.mp4"]["threat_speech"]
    hits = [h for s in report["flagged_segments"] for h in s["threat_hits"]]
    threat_words = {"fire", "strap", "shoot"}
    found = {w for h in hits for w in threat_words if w in h["text"].lower()}
    assert found, hits  # the reviewer sees the threat's own words highlighted
    assert any(truth[0][0] - 1 <= h["start"] <= truth[-1][1] + 1 for h in hits)
    assert "speech under music" in summary(report)


@pytest.mark.slow
def test_clean_speech_is_transcribed_without_the_front_end(scan_models,
                                                            threat_speech_only_video: Path) -> None:
    from pipelines import ScanOptions, scan, to_dict

    report = to_dict(scan(threat_speech_only_video, ScanOptions(), models=scan_models))
    assert report["speech_conditions"]["music"] is False
    assert report["speech_conditions"]["front_end"] == "none"
    assert report["speech_conditions"]["reliability"] in {"high", "medium", "low"}
