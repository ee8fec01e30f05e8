"""Speech transcription with word timestamps. faster-whisper (CTranslate2, int8, VAD filter) is the
default backend; openai-whisper is selectable for users who hold its `.pt` checkpoints. Both sit
behind the one-method `Transcriber` protocol in an explicit registry.

Whisper invents fluent text over music and silence. Three guards stand against that: the voice
activity filter drops non-speech audio before decoding, and a segment is rejected (kept aside,
with its figures, for the report) when it is probably not speech (no-speech probability high
while the decoder was unsure), repetitive (high compression ratio) or very improbable."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from threadpoolctl import threadpool_limits

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
    # A window decoded with the hotwords may write at most this many tokens; a longer,
    # repetitive or improbable one is decoded again without them (`hinted_model_class`).
    # 0: faster-whisper's own handling (every fallback primed; for benchmarks).
    hint_max_tokens: int = 160
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


def hinted_model_class(hint_max_tokens: int) -> type:
    """faster-whisper's `WhisperModel` with hotwords that cannot make a window expensive.

    faster-whisper puts the hotwords before every 30-second window's prompt. On a window with
    no clear speech (a beat the voice filter let through) the decoder then tends to continue the
    word list ("skeng, shank, skeng, ...") up to the token limit; the result is too repetitive,
    so Whisper's fallback decodes the window again at five temperatures with five sampled
    candidates each, every one primed the same way and running to the limit: 15 s of beat took
    23 s instead of 4.6 s (docs/performance.md). Here a window is decoded once, greedily, with
    the hotwords and at most `hint_max_tokens` new tokens; if that result is cut off, too
    repetitive or too improbable, the window is decoded exactly as it would be without
    hotwords (faster-whisper's own fallback on the plain prompt). The worst case is the cost
    without hints plus one bounded greedy decode."""
    from faster_whisper import WhisperModel

    if hint_max_tokens <= 0:
        return WhisperModel

    class HintGuardedWhisperModel(WhisperModel):  # type: ignore[misc]
        hint_fallbacks = 0  # windows decoded again without hotwords (for benchmarks and tests)

        def generate_with_fallback(self, encoder_output: Any, prompt: list[int],
                                   tokenizer: Any, options: Any) -> Any:
            plain = _plain_prompt(prompt, tokenizer, options.hotwords, self.max_length)
            if plain is None:  # no hotwords (or a prompt shape this version does not build)
                return super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
            limit = min(hint_max_tokens, self.max_length - len(prompt))
            greedy = replace(options, temperatures=[0.0], max_new_tokens=limit)
            decoded = super().generate_with_fallback(encoder_output, prompt, tokenizer, greedy)
            result, avg_logprob, _, compression_ratio = decoded
            if hint_result_acceptable(len(result.sequences_ids[0]), limit, avg_logprob,
                                      compression_ratio, result.no_speech_prob, options):
                return decoded
            self.hint_fallbacks += 1
            return super().generate_with_fallback(encoder_output, plain, tokenizer, options)

    return HintGuardedWhisperModel


def _plain_prompt(prompt: list[int], tokenizer: Any, hotwords: str | None, max_length: int
                  ) -> list[int] | None:
    """`prompt` without the hotwords faster-whisper put in it (its `get_prompt`: previous-text
    marker, hotword tokens, previous tokens, start of transcript), or None when there are no
    hotwords or the prompt is not built that way."""
    if not hotwords or not prompt or prompt[0] != tokenizer.sot_prev:
        return None
    hint = tokenizer.encode(" " + hotwords.strip())[: max_length // 2 - 1]
    if prompt[1:1 + len(hint)] != hint:
        return None
    rest = prompt[1 + len(hint):]
    sot = list(tokenizer.sot_sequence)
    return rest if rest[:len(sot)] == sot else [tokenizer.sot_prev, *rest]


def hint_result_acceptable(tokens: int, limit: int, avg_logprob: float,
                           compression_ratio: float, no_speech_prob: float,
                           options: Any) -> bool:
    """Whether a window decoded with hotwords stands: not cut off at the token limit, and not a
    result Whisper's fallback would decode again (too repetitive, or improbable unless it is
    silence, which is skipped anyway)."""
    if tokens >= limit:
        return False
    if (options.compression_ratio_threshold is not None
            and compression_ratio > options.compression_ratio_threshold):
        return False
    if options.log_prob_threshold is None or avg_logprob >= options.log_prob_threshold:
        return True
    return (options.no_speech_threshold is not None
            and no_speech_prob > options.no_speech_threshold)


class FasterWhisperTranscriber:
    """faster-whisper on the CPU with int8 weights (hotwords guarded: `hinted_model_class`)."""

    def __init__(self, spec: ModelSpec, path: Path, options: SpeechOptions) -> None:
        self.name = spec.ref
        self._options = options
        self._english_only = spec.name.endswith(".en")
        threads = options.cpu_threads or os.cpu_count() or 1
        model_class = hinted_model_class(options.hint_max_tokens)
        self._model = model_class(str(path), device="cpu", compute_type="int8",
                                  cpu_threads=threads)

    @property
    def hint_fallbacks(self) -> int:
        """Windows decoded again without hotwords so far."""
        return int(getattr(self._model, "hint_fallbacks", 0))

    def transcribe(self, audio: np.ndarray) -> Transcript:
        # faster-whisper computes its features with numpy; a multi-threaded BLAS sums in another
        # order, so word times and probabilities would depend on how the process was started
        # (OMP_NUM_THREADS). One BLAS thread makes every worker give the in-process result.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._transcribe(audio)

    def _transcribe(self, audio: np.ndarray) -> Transcript:
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


def segments_from_openai(result: dict[str, Any]) -> tuple[TranscriptSegment, ...]:
    """The segments, with word times, of an openai-whisper `transcribe()` result."""
    return tuple(
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
        kept, rejected = _guard(segments_from_openai(result), opts)
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


# ------------------------------------------------------------------ transcripts of audio slices
# A long video is transcribed in overlapping slices (see `pipelines.scan.plan_chunks`). Each
# slice's transcript is shifted to media time, then neighbours are cut at one point inside their
# overlap, preferably a silence where neither heard a word, and every word goes to the side its
# middle falls on: no word is cut in two or kept twice. A sentence split by the cut is joined
# back into one segment so the language analysis still reads it whole.

JOIN_GAP_S = 1.0  # halves of a sentence cut at a border are joined when this close


def shift_transcript(transcript: Transcript, seconds: float) -> Transcript:
    """`transcript` with every time moved by `seconds` (slice time to media time)."""
    if not seconds:
        return transcript

    def shift(segment: TranscriptSegment) -> TranscriptSegment:
        return replace(
            segment, start=round(segment.start + seconds, 3), end=round(segment.end + seconds, 3),
            words=tuple(replace(w, start=round(w.start + seconds, 3), end=round(w.end + seconds, 3))
                        for w in segment.words))

    return replace(transcript, segments=tuple(map(shift, transcript.segments)),
                   rejected=tuple(map(shift, transcript.rejected)))


def border_cut(before: Transcript, after: Transcript, border: float, reach: float) -> float:
    """Where to cut two overlapping transcripts near `border`: the middle of the longest stretch
    within `reach` seconds of it where neither transcript has a word (the nearest to `border`
    on ties), or `border` itself when speech runs through the whole window."""
    low, high = border - reach, border + reach
    spans = sorted((w.start, w.end) for t in (before, after) for s in t.segments for w in s.words
                   if w.end > low and w.start < high)
    gaps: list[tuple[float, float]] = []
    cursor = low
    for start, end in spans:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < high:
        gaps.append((cursor, high))
    if not gaps:
        return round(border, 3)
    first, last = max(gaps, key=lambda g: (round(g[1] - g[0], 3), -abs(sum(g) / 2 - border)))
    return round((first + last) / 2, 3)


def _keep_between(segment: TranscriptSegment, low: float, high: float
                  ) -> tuple[TranscriptSegment | None, bool]:
    """The part of `segment` whose words' middles lie in [low, high), and whether words were cut
    off; a segment without word times goes whole to the side of its own middle."""
    if not segment.words:
        middle = (segment.start + segment.end) / 2
        return (segment if low <= middle < high else None), False
    words = tuple(w for w in segment.words if low <= (w.start + w.end) / 2 < high)
    if len(words) == len(segment.words):
        return segment, False
    if not words:
        return None, False
    text = " ".join(w.text for w in words)
    return replace(segment, start=words[0].start, end=words[-1].end, text=text, words=words), True


def _join(head: TranscriptSegment, tail: TranscriptSegment) -> TranscriptSegment:
    count = max(1, len(head.words) + len(tail.words))
    logprob = (head.avg_logprob * len(head.words) + tail.avg_logprob * len(tail.words)) / count
    return TranscriptSegment(
        start=head.start, end=tail.end, text=f"{head.text} {tail.text}",
        words=head.words + tail.words, avg_logprob=round(logprob, 4),
        no_speech_prob=min(head.no_speech_prob, tail.no_speech_prob),
        compression_ratio=max(head.compression_ratio, tail.compression_ratio))


def merge_transcripts(parts: Sequence[Transcript], spans: Sequence[tuple[float, float]]
                      ) -> Transcript:
    """One transcript from the transcripts of consecutive overlapping audio slices.

    `parts[i]` is the transcript of the audio from `spans[i][0]` to `spans[i][1]` seconds, its
    times already in media seconds (`shift_transcript`). Neighbours are cut inside their overlap
    by `border_cut`; language and its probability come from the slice with the most speech."""
    if len(parts) != len(spans) or not parts:
        raise ValueError("merge_transcripts needs one span per transcript")
    if len(parts) == 1:
        return parts[0]
    cuts = [-math.inf]
    for i in range(len(parts) - 1):
        overlap_start, overlap_end = spans[i + 1][0], spans[i][1]
        if overlap_end < overlap_start:
            raise ValueError(f"audio slices {i} and {i + 1} do not overlap")
        cuts.append(border_cut(parts[i], parts[i + 1], (overlap_start + overlap_end) / 2,
                               (overlap_end - overlap_start) / 4))
    cuts.append(math.inf)

    kept: list[TranscriptSegment] = []
    rejected: list[TranscriptSegment] = []
    speech_seconds = music_seconds = 0.0
    last_was_cut = False  # the last kept segment lost words at the previous cut
    for i, part in enumerate(parts):
        low, high = cuts[i], cuts[i + 1]
        pieces = [_keep_between(s, low, high) for s in part.segments]
        segments = [(s, cut) for s, cut in pieces if s is not None]
        if kept and segments:
            tail, tail_cut = segments[0]
            if (last_was_cut or tail_cut) and tail.start - kept[-1].end <= JOIN_GAP_S:
                kept[-1] = _join(kept[-1], tail)
                segments = segments[1:]
        if segments:
            last_was_cut = segments[-1][1]
        kept += [s for s, _ in segments]
        rejected += [s for s, _ in (_keep_between(r, low, high) for r in part.rejected)
                     if s is not None]
        span_start, span_end = spans[i]
        owned = min(high, span_end) - max(low, span_start)
        if span_end > span_start:
            share = max(0.0, owned) / (span_end - span_start)
            speech_seconds += part.speech_seconds * share
            music_seconds += part.music_seconds * share
    main = max(parts, key=lambda t: t.speech_seconds)  # max() keeps the first of equals
    probabilities = [w.probability for s in kept for w in s.words]
    measured = any(p.mean_word_probability is not None for p in parts) and probabilities
    return Transcript(language=main.language, language_probability=main.language_probability,
                      segments=tuple(kept), model=main.model, rejected=tuple(rejected),
                      speech_seconds=round(speech_seconds, 3),
                      music_seconds=round(music_seconds, 3),
                      front_end=next((p.front_end for p in parts if p.front_end), ""),
                      mean_word_probability=round(sum(probabilities) / len(probabilities), 4)
                      if measured else None)
