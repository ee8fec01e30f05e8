"""Speech transcription with word timestamps. faster-whisper (CTranslate2, int8, VAD filter) is the
default backend; openai-whisper is selectable for users who hold its `.pt` checkpoints. Both sit
behind the one-method `Transcriber` protocol in an explicit registry.

Whisper invents fluent text over music and silence. Three guards stand against that: the voice
activity filter drops non-speech audio before decoding, and a segment is rejected (kept aside,
with its figures, for the report) when it is probably not speech (no-speech probability high
while the decoder was unsure), repetitive (high compression ratio) or very improbable."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .media import AUDIO_RATE
from .registry import Registry
from .types import Transcript, TranscriptSegment, Word
from .weights import ModelSpec, model_path


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """Decoding and guard settings."""

    language: str | None = None  # None: detect (multilingual models only)
    beam_size: int = 1
    vad_filter: bool = True
    initial_prompt: str | None = None
    hotwords: str | None = None
    cpu_threads: int = 0  # 0: all cores
    # Hallucination guard thresholds (Whisper's own defaults, applied per segment).
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4


def is_hallucination(segment: TranscriptSegment, options: SpeechOptions) -> bool:
    """True when a decoded segment is more likely invented than heard."""
    if segment.compression_ratio > options.compression_ratio_threshold:
        return True
    if (segment.no_speech_prob > options.no_speech_threshold
            and segment.avg_logprob < options.log_prob_threshold):
        return True
    return segment.avg_logprob < 2 * options.log_prob_threshold or not segment.text.strip()


def _guard(segments: Iterable[TranscriptSegment], options: SpeechOptions
           ) -> tuple[tuple[TranscriptSegment, ...], tuple[TranscriptSegment, ...]]:
    kept: list[TranscriptSegment] = []
    rejected: list[TranscriptSegment] = []
    for segment in segments:
        (rejected if is_hallucination(segment, options) else kept).append(segment)
    return tuple(kept), tuple(rejected)


class Transcriber(Protocol):
    """Turns 16 kHz mono float32 audio into a guarded transcript; `name` is name@version."""

    name: str

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe `audio`."""
        ...


def _word(raw: Any) -> Word:
    return Word(start=round(float(raw.start), 3), end=round(float(raw.end), 3),
                text=str(raw.word).strip(), probability=round(float(raw.probability), 4))


class FasterWhisperTranscriber:
    """faster-whisper on the CPU with int8 weights."""

    def __init__(self, spec: ModelSpec, path: Path, options: SpeechOptions) -> None:
        from faster_whisper import WhisperModel

        self.name = spec.ref
        self._options = options
        self._english_only = spec.name.endswith(".en")
        threads = options.cpu_threads or os.cpu_count() or 1
        self._model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                   cpu_threads=threads)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        opts = self._options
        language = "en" if self._english_only else opts.language
        if audio.size < AUDIO_RATE // 10:
            return Transcript(language=language or "", language_probability=0.0, segments=(),
                              model=self.name)
        raw_segments, info = self._model.transcribe(
            audio, language=language, beam_size=opts.beam_size, vad_filter=opts.vad_filter,
            word_timestamps=True, condition_on_previous_text=False,
            initial_prompt=opts.initial_prompt, hotwords=opts.hotwords,
            no_speech_threshold=opts.no_speech_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            compression_ratio_threshold=opts.compression_ratio_threshold,
        )
        segments = (
            TranscriptSegment(
                start=round(float(s.start), 3), end=round(float(s.end), 3), text=s.text.strip(),
                words=tuple(_word(w) for w in (s.words or ())),
                avg_logprob=round(float(s.avg_logprob), 4),
                no_speech_prob=round(float(s.no_speech_prob), 4),
                compression_ratio=round(float(s.compression_ratio), 4),
            )
            for s in raw_segments
        )
        kept, rejected = _guard(segments, opts)
        speech = float(getattr(info, "duration_after_vad", info.duration) or 0.0)
        return Transcript(language=info.language, language_probability=round(
            float(info.language_probability), 4), segments=kept, rejected=rejected,
            model=self.name, speech_seconds=round(speech, 3))


class OpenAIWhisperTranscriber:
    """openai-whisper with a `.pt` checkpoint (slower; for users who already hold one)."""

    def __init__(self, spec: ModelSpec, path: Path, options: SpeechOptions) -> None:
        import whisper

        self.name = spec.ref
        self._options = options
        self._model = whisper.load_model(str(path / spec.files[0].name), device="cpu")

    def transcribe(self, audio: np.ndarray) -> Transcript:
        opts = self._options
        result = self._model.transcribe(
            audio, language=opts.language, word_timestamps=True, fp16=False,
            condition_on_previous_text=False, initial_prompt=opts.initial_prompt,
            no_speech_threshold=opts.no_speech_threshold,
            logprob_threshold=opts.log_prob_threshold,
            compression_ratio_threshold=opts.compression_ratio_threshold,
        )
        segments = (
            TranscriptSegment(
                start=round(float(s["start"]), 3), end=round(float(s["end"]), 3),
                text=s["text"].strip(),
                words=tuple(Word(start=round(w["start"], 3), end=round(w["end"], 3),
                                 text=w["word"].strip(), probability=round(w["probability"], 4))
                            for w in s.get("words", ())),
                avg_logprob=round(s["avg_logprob"], 4), no_speech_prob=round(
                    s["no_speech_prob"], 4), compression_ratio=round(s["compression_ratio"], 4),
            )
            for s in result["segments"]
        )
        kept, rejected = _guard(segments, opts)
        return Transcript(language=result.get("language", ""), language_probability=1.0,
                          segments=kept, rejected=rejected, model=self.name,
                          speech_seconds=round(audio.size / AUDIO_RATE, 3))


TranscriberFactory = Callable[[ModelSpec, Path, SpeechOptions], Transcriber]


TRANSCRIBERS: Registry[TranscriberFactory] = Registry("transcriber backend")
TRANSCRIBERS.register("ctranslate2", FasterWhisperTranscriber)
TRANSCRIBERS.register("whisper-pt", OpenAIWhisperTranscriber)


def build_transcriber(spec: ModelSpec, options: SpeechOptions = SpeechOptions()) -> Transcriber:
    """Load the transcriber for `spec` (weights verified first) with the backend for its format."""
    return TRANSCRIBERS.get(spec.format)(spec, model_path(spec.name), options)
