"""Transcription with the real Whisper weights, and the hallucination guard."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import jiwer
import numpy as np
import pytest
from whisper.normalizers import EnglishTextNormalizer

from pipelines.media import AUDIO_RATE, extract_audio, probe
from pipelines.speech import SpeechOptions, is_hallucination
from pipelines.types import TranscriptSegment

from .conftest import require_model


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


# ------------------------------------------------------------------ slang hints, bounded (issue 26)


def recorded_decodes(transcriber) -> list[dict]:
    """Wrap the CTranslate2 model of a faster-whisper transcriber so that every decode call is
    recorded: its prompt, token limit, temperature and how many tokens it wrote."""
    model = transcriber._model
    inner = model.model
    calls: list[dict] = []

    class Recorder:
        def __getattr__(self, name: str):
            return getattr(inner, name)

        def generate(self, encoder_output, prompts, **kwargs):
            results = inner.generate(encoder_output, prompts, **kwargs)
            calls.append({"prompt": list(prompts[0]), "max_length": kwargs["max_length"],
                          "temperature": kwargs.get("sampling_temperature", 0.0),
                          "hypotheses": kwargs.get("num_hypotheses", 1),
                          "written": max(len(r.sequences_ids[0]) for r in results)})
            return results

    model.model = Recorder()
    return calls


@pytest.fixture(scope="module")
def beat_audio(music_only_video: Path) -> np.ndarray:
    """15 s of the drill-style beat with no voice, decoded as if the voice filter had let it
    through (the windows on which hotwords made faster-whisper loop)."""
    return extract_audio(probe(music_only_video))


def test_hotwords_never_reach_a_fallback_and_are_bounded(manifest, beat_audio) -> None:
    """On a beat, the decoder primed with the slang list writes the list again and again; every
    decode that carries the hints must be one greedy pass of at most `hint_max_tokens`, and
    the window's fallback must run on the plain prompt."""
    from pipelines.language import decoding_hints
    from pipelines.speech import build_transcriber

    require_model("whisper-base")
    options = SpeechOptions(language="en", vad_filter=False, hotwords=decoding_hints(),
                            hint_max_tokens=64)
    transcriber = build_transcriber(manifest["whisper-base"], options)
    calls = recorded_decodes(transcriber)
    transcript = transcriber.transcribe(beat_audio)
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(transcriber._model.hf_tokenizer, True, task="transcribe", language="en")
    hint = tokenizer.encode(" " + decoding_hints())
    hinted = [c for c in calls if c["prompt"][1:1 + len(hint)] == hint]
    plain = [c for c in calls if c not in hinted]
    assert hinted, "the hints were not used at all"
    for call in hinted:
        assert call["temperature"] == 0.0 and call["hypotheses"] == 1
        assert call["max_length"] <= len(call["prompt"]) + 64
        assert call["written"] <= 64 + 1  # CTranslate2 counts the prompt's last token in
    assert transcriber.hint_fallbacks >= 1  # the beat does make the hinted decode run on
    assert len(plain) >= transcriber.hint_fallbacks
    assert all(c["prompt"][0] != tokenizer.sot_prev for c in plain)  # no hints, no previous text
    assert all("skeng" not in s.text.lower() for s in transcript.segments)


def test_hints_guarded_or_not_give_the_same_words_on_clear_speech(
        manifest, threat_speech_only_video: Path) -> None:
    """Where the hinted decode is clean (clear speech), the guard changes nothing."""
    from pipelines.language import decoding_hints
    from pipelines.speech import build_transcriber

    require_model("whisper-base")
    audio = extract_audio(probe(threat_speech_only_video))
    hinted = SpeechOptions(language="en", hotwords=decoding_hints())
    guarded = build_transcriber(manifest["whisper-base"], hinted)
    unguarded = build_transcriber(manifest["whisper-base"], replace(hinted, hint_max_tokens=0))
    got = guarded.transcribe(audio)
    assert guarded.hint_fallbacks == 0
    assert [s.text for s in got.segments] == [s.text for s in unguarded.transcribe(audio).segments]
    assert "kill you" in " ".join(s.text for s in got.segments).lower()


def test_plain_prompt_is_what_faster_whisper_builds_without_hotwords(base_transcriber) -> None:
    """The guard's retry must see exactly the prompt a scan without hints would give."""
    from faster_whisper.tokenizer import Tokenizer

    from pipelines.speech import _plain_prompt

    model = base_transcriber._model
    tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language="en")
    previous = tokenizer.encode(" we are going home")
    for before in ([], previous):
        hinted = model.get_prompt(tokenizer, before, hotwords="skeng, shank")
        assert _plain_prompt(hinted, tokenizer, "skeng, shank", model.max_length) == \
            model.get_prompt(tokenizer, before)
    assert _plain_prompt(model.get_prompt(tokenizer, []), tokenizer, None, 448) is None
    assert _plain_prompt(model.get_prompt(tokenizer, previous), tokenizer, "bruv", 448) is None


@pytest.mark.parametrize(
    ("tokens", "logprob", "ratio", "no_speech", "stands"),
    [
        (30, -0.4, 1.4, 0.1, True),
        (64, -0.4, 1.4, 0.1, False),  # cut off at the limit: a list running on, or fast speech
        (30, -0.4, 2.6, 0.1, False),  # too repetitive
        (30, -1.2, 1.4, 0.1, False),  # improbable
        (30, -1.2, 1.4, 0.9, True),  # silence: skipped anyway, no fallback
    ],
)
def test_hinted_result_stands_only_where_whisper_would_not_fall_back(
        tokens: int, logprob: float, ratio: float, no_speech: float, stands: bool) -> None:
    from faster_whisper.transcribe import TranscriptionOptions

    from pipelines.speech import hint_result_acceptable

    fields = {name: None for name in TranscriptionOptions.__dataclass_fields__}
    options = TranscriptionOptions(**(fields | {
        "compression_ratio_threshold": 2.4, "log_prob_threshold": -1.0,
        "no_speech_threshold": 0.6}))
    assert hint_result_acceptable(tokens, 64, logprob, ratio, no_speech, options) is stands
