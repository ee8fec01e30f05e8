"""Transcription with the real Whisper weights, and the hallucination guard."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest
from whisper.normalizers import EnglishTextNormalizer

from pipelines.media import AUDIO_RATE, extract_audio, probe
from pipelines.speech import SpeechOptions, is_hallucination
from pipelines.types import TranscriptSegment


def load_wav(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path)) as handle:
        assert handle.getframerate() == AUDIO_RATE and handle.getnchannels() == 1
        return np.frombuffer(handle.readframes(handle.getnframes()), np.int16) / 32768.0


def test_jfk_is_transcribed_accurately_with_word_times(base_transcriber, shared_data: Path) -> None:
    audio = load_wav(shared_data / "speech" / "jfk.wav").astype(np.float32)
    transcript = base_transcriber.transcribe(audio)
    normalise = EnglishTextNormalizer()
    reference = (shared_data / "speech" / "jfk.txt").read_text()
    hypothesis = " ".join(s.text for s in transcript.segments)
    assert jiwer.wer(normalise(reference), normalise(hypothesis)) < 0.15
    assert transcript.language == "en" and transcript.language_probability > 0.5
    assert transcript.model.startswith("whisper-base@")
    words = [w for s in transcript.segments for w in s.words]
    assert words and all(0 <= w.start <= w.end <= 11.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    country = [w for w in words if "country" in w.text.lower()]
    assert len(country) == 2 and country[-1].start > 8.0  # "...for your country." ends the clip


def test_music_without_speech_gives_no_words(base_transcriber, music_only_video: Path) -> None:
    """The guard's purpose: Whisper must not invent lyrics over a beat."""
    transcript = base_transcriber.transcribe(extract_audio(probe(music_only_video)))
    assert transcript.segments == ()


def test_silence_gives_no_words(base_transcriber) -> None:
    transcript = base_transcriber.transcribe(np.zeros(AUDIO_RATE * 5, np.float32))
    assert transcript.segments == ()


def segment(**figures: float) -> TranscriptSegment:
    values = {"avg_logprob": -0.3, "no_speech_prob": 0.05, "compression_ratio": 1.3} | figures
    return TranscriptSegment(start=0, end=2, text="we are going to the park", **values)


@pytest.mark.parametrize(
    ("figures", "rejected"),
    [
        ({}, False),
        ({"compression_ratio": 3.1}, True),  # "the the the the" loops
        ({"no_speech_prob": 0.9, "avg_logprob": -1.2}, True),  # unsure over non-speech
        ({"no_speech_prob": 0.9, "avg_logprob": -0.2}, False),  # confident speech despite VAD
        ({"avg_logprob": -2.5}, True),  # improbable text
    ],
)
def test_hallucination_guard(figures: dict, rejected: bool) -> None:
    assert is_hallucination(segment(**figures), SpeechOptions()) is rejected
