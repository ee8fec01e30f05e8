"""The whole analysis of one video as a plan of time chunks: `plan_chunks` cuts the video into
chunks aligned to the sampling grid, `detect_chunk` samples and checks the frames of one chunk,
`listen_chunk` extracts the audio of one chunk plus an overlap on each side once, transcribes and
fingerprints it, and `finish` merges the chunks' transcripts at word level, analyses the language,
matches the hashes against a bank of removed videos and fuses everything.

`scan` runs that plan in one process: detection on the calling thread while a second thread
transcribes (both model runtimes release the GIL). Workers run the very same functions, one
chunk per task, so a distributed scan gives the same result as `scan` by construction.

Models are loaded by `load_models` once and reused across scans (a worker process keeps them);
`scan` loads them itself when none are given, and then only those the video needs."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .errors import ScanError
from .fusion import FusionOptions, add_known_content, fuse
from .language import LEXICON_VERSION, analyse_transcript, decoding_hints, load_text_model
from .language.classifier import text_model_ref
from .matching import (
    EarlyMatcher,
    HashBank,
    MatchOptions,
    fingerprint_audio,
    hash_frame,
    match_video,
)
from .media import MediaLimits, extract_audio, frame_size, probe, sample_frames
from .optional import usable_options
from .speech import (
    SpeechOptions,
    Transcriber,
    build_transcriber,
    merge_transcripts,
    shift_transcript,
)
from .types import (
    AudioFingerprint,
    Detection,
    EvidenceFrame,
    Frame,
    FrameHash,
    KnownMatch,
    MediaInfo,
    ScanResult,
    Skipped,
    Transcript,
)
from .vision import (
    WEAPON_LABELS,
    Detector,
    DetectorOptions,
    build_detector,
    detect_all,
    save_evidence,
)
from .vocals import MusicAwareTranscriber
from .weights import ModelSpec, load_manifest

SPEECH_MODELS = {"tiny.en": "whisper-tiny.en", "base": "whisper-base"}

# progress(stage, done, total): total is 0 when unknown.
Progress = Callable[[str, float, float], None]


def _no_progress(stage: str, done: float, total: float) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """Everything that changes a scan's result; the defaults are the tested configuration."""

    fps: float = 1.0
    max_side: int = 640
    speech_model: str = "base"  # "tiny.en", "base" or a manifest name; "" skips speech
    detectors: tuple[str, ...] = ("yolo11n-coco-int8", "basegun-firearm")
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    # English: the language analysis is English (UK slang included), and on short clips Whisper's
    # language detection picks wrong languages; slang hints double the slang heard
    # (docs/language.md). `--language` overrides.
    speech: SpeechOptions = field(
        default_factory=lambda: SpeechOptions(language="en", hotwords=decoding_hints()))
    # Speech over music (docs/speech-music.md): audio with a beat under it is transcribed with
    # `music_speech_model` ("": the same model as clean speech; tiny.en loses more words to
    # music than base) after the front end `music_front_end` ("": none; measured, every DSP
    # front end made Whisper's words worse, see the doc).
    music_front_end: str = ""
    music_speech_model: str = "base"
    fusion: FusionOptions = field(default_factory=FusionOptions)
    limits: MediaLimits = field(default_factory=MediaLimits)
    max_evidence_frames: int = 24
    # A video is scanned in chunks of about `chunk_s` seconds (whole sampled frames); each
    # chunk's audio is transcribed with `chunk_overlap_s` more on each side, merged at words.
    # Frames do not depend on the chunking; the transcript of a video longer than one chunk may.
    chunk_s: float = 120.0
    chunk_overlap_s: float = 4.0
    # Perceptual hashes of the sampled frames and a fingerprint of the audio, for re-upload
    # matching against a bank of removed videos (pipelines/matching.py, docs/matching.md).
    fingerprint: bool = True
    audio_fingerprint: bool = True  # off: frames only (set when fpcalc is missing)
    match: MatchOptions = field(default_factory=MatchOptions)
    # Static shots: a frame whose picture is the last checked frame's (every block of about
    # 1/32 of the width within `still_tolerance` grey levels) reuses that frame's detections,
    # for at most `still_reuse_s` seconds; then the detectors look again. 0 checks every frame.
    still_reuse_s: float = 4.0
    still_tolerance: int = 6
    # Optional parts ("fingerprint", "speech", "detectors") that must run: missing, they fail
    # the scan instead of being left out and listed in the report's `skipped`
    # (pipelines/optional.py).
    require: tuple[str, ...] = ()

    @property
    def speech_model_name(self) -> str:
        return SPEECH_MODELS.get(self.speech_model, self.speech_model)


@dataclass(slots=True)
class ScanModels:
    """Loaded models, reusable across scans with the same options."""

    detectors: list[Detector]
    transcriber: Transcriber | None
    # The speech model's name@version when the options name one but it was not loaded (no
    # video of the scan has audio): reports name it all the same.
    speech_ref: str = ""
    # The text model still loading in the background (`load_models(..., text_later=True)`).
    text_loading: Future[None] | None = None

    def wait_for_text_model(self) -> None:
        """Block until the text model loaded in the background is ready (re-raising its
        error); a no-op when it was loaded with the others."""
        if self.text_loading is not None:
            self.text_loading.result()

    @property
    def refs(self) -> dict[str, str]:
        refs = {f"detector:{i}": d.name for i, d in enumerate(self.detectors)}
        if self.transcriber is not None:
            refs["speech"] = self.transcriber.name
            music = getattr(self.transcriber, "music", self.transcriber)
            if music.name != self.transcriber.name:
                refs["speech:music"] = music.name
        elif self.speech_ref:
            refs["speech"] = self.speech_ref
        refs["lexicon"] = LEXICON_VERSION
        if self.transcriber is not None:
            refs["text"] = text_model_ref()
        return refs


@dataclass(frozen=True, slots=True)
class Chunk:
    """One time slice of a scan: the sampled frames [first_frame, stop_frame) and the audio
    from `audio_start` to `audio_end` seconds (`None`: to the end of the media)."""

    index: int
    start: float  # seconds: time of first_frame
    end: float | None
    first_frame: int
    stop_frame: int | None
    audio_start: float
    audio_end: float | None


@dataclass(frozen=True, slots=True)
class EvidenceCandidate:
    """A saved evidence thumbnail of one chunk and the weapon confidence it was chosen by."""

    score: float
    frame: EvidenceFrame


@dataclass(frozen=True, slots=True)
class VisionPart:
    """What `detect_chunk` found in one chunk."""

    chunk: int
    detections: tuple[Detection, ...]
    frames_sampled: int
    evidence: tuple[EvidenceCandidate, ...] = ()
    frame_hashes: tuple[FrameHash, ...] = ()


def _spec(manifest: dict[str, ModelSpec], name: str) -> ModelSpec:
    if name not in manifest:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(manifest))}")
    return manifest[name]


def warm_text_model() -> None:
    """Load the language analysis' text model now (it loads on first use otherwise): it takes
    seconds, better spent beside the other models than in the first scan that hears speech."""
    import torch  # noqa: F401  (imported whole here first: the detectors' thread imports it too)

    load_text_model()


def _load_detectors(specs: Sequence[ModelSpec], options: DetectorOptions) -> list[Detector]:
    return [build_detector(spec, options) for spec in specs]


def _load_speech(spec: ModelSpec, music_spec: ModelSpec | None, options: ScanOptions,
                 text: bool) -> Transcriber:
    plain = build_transcriber(spec, options.speech)
    music = build_transcriber(music_spec, options.speech) if music_spec is not None else None
    if text:
        warm_text_model()
    return MusicAwareTranscriber(plain, music, front_end=options.music_front_end)


_text_loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-text")


def load_models(options: ScanOptions, *, speech: bool = True, text_later: bool = False
                ) -> ScanModels:
    """Verify and load every model `options` names (raises WeightsMissing/WeightsCorrupt);
    optional models that are not installed are left out (`usable_options`).

    The detectors load on one thread while the transcribers (the scan's, and the one used under
    music) and then the text model load on another (their runtimes load weights and compile
    without the GIL). `speech=False` (no video to scan has audio) loads neither the transcriber
    nor the text model. With `text_later` (a one-shot command) the text model goes on loading in
    the background while the first scan decodes, detects and transcribes; `scan` waits for it
    before the language analysis, the only stage that uses it."""
    options = usable_options(options)[0]
    manifest = load_manifest()
    detector_specs = [_spec(manifest, name) for name in options.detectors]
    speech_spec = (_spec(manifest, options.speech_model_name) if options.speech_model
                   else None)  # unknown names fail here, before anything loads
    if speech_spec is None or not speech:
        return ScanModels(detectors=_load_detectors(detector_specs, options.detector),
                          transcriber=None, speech_ref=speech_spec.ref if speech_spec else "")
    music_name = SPEECH_MODELS.get(options.music_speech_model, options.music_speech_model)
    music_spec = (_spec(manifest, music_name)
                  if music_name and music_name != options.speech_model_name else None)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-speech") as pool:
        transcriber = pool.submit(_load_speech, speech_spec, music_spec, options,
                                  not text_later)
        try:
            detectors = _load_detectors(detector_specs, options.detector)
        finally:
            loaded = transcriber.result()  # never leave it loading (or its error unseen)
    text = _text_loader.submit(warm_text_model) if text_later else None
    return ScanModels(detectors=detectors, transcriber=loaded, text_loading=text)


def model_refs(options: ScanOptions) -> dict[str, str]:
    """The `ScanModels.refs` that `load_models(options)` would give, read from the manifest
    without loading anything (for cache keys and for finishing a scan where no model runs)."""
    manifest = load_manifest()
    refs = {f"detector:{i}": _spec(manifest, name).ref for i, name in enumerate(options.detectors)}
    if options.speech_model:
        refs["speech"] = _spec(manifest, options.speech_model_name).ref
        music_name = SPEECH_MODELS.get(options.music_speech_model, options.music_speech_model)
        if music_name and music_name != options.speech_model_name:
            refs["speech:music"] = _spec(manifest, music_name).ref
    refs["lexicon"] = LEXICON_VERSION
    if options.speech_model:
        refs["text"] = _spec(manifest, "incitescan-text").ref
    return refs


def plan_chunks(info: MediaInfo, options: ScanOptions) -> tuple[Chunk, ...]:
    """Cut the video into chunks of a whole number of sampled frames, about `chunk_s` long; the
    last chunk runs to the end and holds at least half a chunk. A video up to 1.5 chunks long
    is one chunk, scanned exactly as a whole."""
    if options.chunk_s <= 0 or options.chunk_overlap_s < 0:
        raise ValueError("chunk_s must be positive and chunk_overlap_s not negative")
    frames = max(1, round(options.chunk_s * options.fps))
    length = frames / options.fps
    count = max(1, int(info.duration / length + 0.5))
    chunks = []
    for i in range(count):
        last = i == count - 1
        start = i * length
        end = None if last else (i + 1) * length
        chunks.append(Chunk(
            index=i, start=round(start, 6), end=None if end is None else round(end, 6),
            first_frame=i * frames, stop_frame=None if last else (i + 1) * frames,
            audio_start=round(max(0.0, start - options.chunk_overlap_s), 6) if i else 0.0,
            audio_end=None if end is None else round(end + options.chunk_overlap_s, 6)))
    return tuple(chunks)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The picture as 32 grey blocks across (block means: compression noise averages out, a
    small object entering still changes its block)."""
    height, width = image.shape[:2]
    size = (32, max(1, round(32 * height / width)))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.int16)


def is_still(checked: tuple[float, np.ndarray, list[Detection]], t: float, thumb: np.ndarray,
             options: ScanOptions) -> bool:
    """Whether a frame at `t` with `thumb` shows the same picture as the last checked frame,
    recently enough to reuse its detections."""
    checked_t, checked_thumb, _ = checked
    return (t - checked_t < options.still_reuse_s - 1e-6
            and checked_thumb.shape == thumb.shape
            and int(np.abs(thumb - checked_thumb).max()) <= options.still_tolerance)


def detect_chunk(
    info: MediaInfo,
    chunk: Chunk,
    options: ScanOptions,
    detectors: Sequence[Detector],
    *,
    evidence_dir: Path | None = None,
    progress: Progress = _no_progress,
    on_hash: Callable[[FrameHash], None] | None = None,
    timings: dict[str, float] | None = None,
) -> VisionPart:
    """Sample the frames of `chunk` and run every detector on them; with `evidence_dir`, save
    thumbnails of the chunk's `max_evidence_frames` strongest weapon frames there. With
    `options.fingerprint` each frame is also hashed (and passed to `on_hash`, if given).
    With `timings`, the seconds spent waiting for decoded frames ("decode") and in the
    detectors ("detect") are added to it."""
    width, _ = frame_size(info, options.max_side)
    scale = width / info.width
    detections: list[Detection] = []
    best: list[tuple[float, int, Frame, list[Detection]]] = []  # min-heap of evidence
    sampled = 0
    hashes: list[FrameHash] = []
    waited = detecting = 0.0
    checked: tuple[float, np.ndarray, list[Detection]] | None = None  # t, thumbnail, found
    mark = time.perf_counter()
    for frame in sample_frames(info, options.fps, options.max_side,
                               first=chunk.first_frame, stop=chunk.stop_frame,
                               limits=options.limits):
        started = time.perf_counter()
        waited += started - mark
        thumb = thumbnail(frame.image)
        if checked is not None and is_still(checked, frame.t, thumb, options):
            found = [replace(d, t=frame.t, frame_index=frame.index) for d in checked[2]]
        else:
            found = detect_all(detectors, frame, scale)
            checked = (frame.t, thumb, found)
        detecting += time.perf_counter() - started
        detections += found
        weapons = [d for d in found if d.label in WEAPON_LABELS]
        if weapons and evidence_dir is not None:
            entry = (max(d.confidence for d in weapons), frame.index, frame, found)
            if len(best) < options.max_evidence_frames:
                heapq.heappush(best, entry)
            else:
                heapq.heappushpop(best, entry)
        if options.fingerprint:  # ~5 ms a frame; the frame is decoded already
            hashes.append(hash_frame(frame))
            if on_hash is not None:
                on_hash(hashes[-1])
        sampled += 1
        progress("frames", sampled, 0)
        mark = time.perf_counter()
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + waited
        timings["detect"] = timings.get("detect", 0.0) + detecting
    evidence = []
    if evidence_dir is not None:
        for score, _, frame, found in sorted(best, key=lambda e: e[1]):
            target = save_evidence(frame, found, scale, evidence_dir)
            labels = tuple(sorted({d.label for d in found if d.label in WEAPON_LABELS}))
            evidence.append(EvidenceCandidate(score, EvidenceFrame(
                t=frame.t, frame_index=frame.index, path=str(target), labels=labels)))
    return VisionPart(chunk=chunk.index, detections=tuple(detections), frames_sampled=sampled,
                      evidence=tuple(evidence), frame_hashes=tuple(hashes))


@dataclass(frozen=True, slots=True)
class AudioPart:
    """What `listen_chunk` got from the audio of one chunk: its transcript (None without a
    transcriber) and fingerprint (None when off, or with too little audio)."""

    chunk: int
    transcript: Transcript | None
    fingerprint: AudioFingerprint | None


def listen_chunk(info: MediaInfo, chunk: Chunk, transcriber: Transcriber | None, *,
                 fingerprint: bool) -> AudioPart:
    """Extract the audio of `chunk` (with its overlap) once, then transcribe it (given a
    transcriber) and fingerprint it (with `fingerprint`); times are in media seconds."""
    audio = extract_audio(info, chunk.audio_start, chunk.audio_end)
    transcript = (shift_transcript(transcriber.transcribe(audio), chunk.audio_start)
                  if transcriber is not None else None)
    heard = fingerprint_audio(audio, chunk.audio_start) if fingerprint and len(audio) else None
    return AudioPart(chunk=chunk.index, transcript=transcript, fingerprint=heard)


def wants_audio(info: MediaInfo, options: ScanOptions) -> bool:
    """Whether a scan of `info` with `options` extracts the audio (to transcribe it or to
    fingerprint it)."""
    return info.has_audio and (bool(options.speech_model) or fingerprints_audio(options))


def fingerprints_audio(options: ScanOptions) -> bool:
    """Whether a scan with `options` fingerprints the audio (not only the frames)."""
    return options.fingerprint and options.audio_fingerprint


def wants_speech(info: MediaInfo, options: ScanOptions) -> bool:
    """Whether a scan of `info` with `options` transcribes anything."""
    return bool(options.speech_model) and info.has_audio


def needs_speech(paths: Sequence[Path | str], options: ScanOptions) -> bool:
    """Whether scanning `paths` with `options` transcribes anything (probes each file; one that
    cannot be probed needs nothing, its scan fails with the probe's own message)."""
    if not options.speech_model:
        return False
    for path in paths:
        try:
            if wants_speech(probe(Path(path), options.limits), options):
                return True
        except ScanError:
            continue
    return False


def finish(
    info: MediaInfo,
    options: ScanOptions,
    chunks: Sequence[Chunk],
    vision: Sequence[VisionPart],
    speech: Sequence[Transcript] | None,
    models: dict[str, str],
    *,
    timings: dict[str, float] | None = None,
    audio: Sequence[AudioFingerprint] = (),
    bank: HashBank | None = None,
    skipped: Sequence[Skipped] = (),
) -> ScanResult:
    """Merge the chunks' results (vision parts and, in chunk order, transcripts or None when
    nothing was transcribed), analyse the language and fuse everything into the result. With a
    `bank`, the frame hashes and `audio` fingerprints are matched against it, and a match
    raises the score (`fusion.add_known_content`).

    Of the evidence thumbnails the chunks saved, the `max_evidence_frames` strongest are kept
    and the other files are deleted."""
    timings = dict(timings or {})
    vision = sorted(vision, key=lambda part: part.chunk)
    if [part.chunk for part in vision] != [chunk.index for chunk in chunks]:
        raise ValueError("finish needs exactly one vision part per chunk")
    detections = tuple(d for part in vision for d in part.detections)
    transcript = None
    if speech is not None:
        spans = [(c.audio_start, info.duration if c.audio_end is None else c.audio_end)
                 for c in chunks]
        transcript = merge_transcripts(speech, spans)

    started = time.perf_counter()
    hits = tuple(analyse_transcript(transcript.segments)) if transcript else ()
    timings["analyse"] = time.perf_counter() - started
    started = time.perf_counter()
    fusion = fuse(info.duration, (info.width, info.height), 1.0 / options.fps, detections, hits,
                  options.fusion)
    timings["fuse"] = time.perf_counter() - started
    frame_hashes = tuple(h for part in vision for h in part.frame_hashes)
    known: tuple[KnownMatch, ...] = ()
    if bank is not None:
        started = time.perf_counter()
        known = match_video(frame_hashes, audio, bank, interval=1.0 / options.fps,
                            options=options.match)
        fusion = add_known_content(fusion, known, options.fusion)
        timings["match"] = time.perf_counter() - started

    candidates = [c for part in vision for c in part.evidence]
    chosen = sorted(candidates, key=lambda c: (c.score, c.frame.frame_index), reverse=True)
    keep = chosen[:options.max_evidence_frames]
    for dropped in chosen[options.max_evidence_frames:]:
        Path(dropped.frame.path).unlink(missing_ok=True)
    evidence = tuple(sorted((c.frame for c in keep), key=lambda e: e.frame_index))
    return ScanResult(
        media=info,
        detections=detections,
        transcript=transcript,
        threat_hits=hits,
        fusion=fusion,
        models=dict(models),
        settings=asdict(options),
        frames_sampled=sum(part.frames_sampled for part in vision),
        evidence=evidence,
        timings={k: round(v, 3) for k, v in timings.items()},
        frame_hashes=frame_hashes,
        audio_fingerprints=tuple(audio),
        known_matches=known,
        skipped=tuple(skipped),
    )


def _transcribe_all(info: MediaInfo, chunks: Sequence[Chunk], transcriber: Transcriber | None,
                    fingerprint: bool, progress: Progress, timings: dict[str, float]
                    ) -> tuple[list[Transcript] | None, list[AudioFingerprint]]:
    transcripts, heard = [], []
    started = time.perf_counter()
    for chunk in chunks:
        if transcriber is not None:
            progress("transcribe", chunk.index, len(chunks))
        part = listen_chunk(info, chunk, transcriber, fingerprint=fingerprint)
        if part.transcript is not None:
            transcripts.append(part.transcript)
        if part.fingerprint is not None:
            heard.append(part.fingerprint)
    if transcriber is not None:
        progress("transcribe", len(chunks), len(chunks))
        timings["transcribe"] = time.perf_counter() - started
    else:
        timings["fingerprint_audio"] = time.perf_counter() - started
    return (transcripts if transcriber is not None else None), heard


def scan(
    path: Path | str,
    options: ScanOptions = ScanOptions(),
    *,
    models: ScanModels | None = None,
    evidence_dir: Path | None = None,
    progress: Progress = _no_progress,
    bank: HashBank | None = None,
    on_known_match: Callable[[KnownMatch], None] | None = None,
) -> ScanResult:
    """Scan one video file and return everything found, with evidence.

    With a `bank` of removed videos the scan is matched against it; `on_known_match` is then
    called as soon as the first frames match a banked video (the fast path), while the rest of
    the analysis goes on.

    Optional parts that are not installed are left out and listed in the result's `skipped`
    (`pipelines.optional`). Raises InvalidMedia (and subclasses) for bad input, and
    WeightsMissing (or FingerprintUnavailable) for absent models (or fpcalc) that
    `options.require` names or without which nothing would score the video."""
    options, skipped = usable_options(options)
    timings: dict[str, float] = {}
    scan_started = started = time.perf_counter()
    info = probe(Path(path), options.limits)
    timings["probe"] = time.perf_counter() - started
    models = models or load_models(options, speech=wants_speech(info, options))
    chunks = plan_chunks(info, options)
    total_frames = max(1.0, info.duration * options.fps)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech") as pool:
        speech_job = None
        transcriber = models.transcriber if wants_speech(info, options) else None
        if wants_audio(info, options):
            speech_job = pool.submit(_transcribe_all, info, chunks, transcriber,
                                     fingerprints_audio(options), progress, timings)
        early = (EarlyMatcher(bank, 1.0 / options.fps, on_known_match, options.match)
                 if bank is not None and on_known_match is not None and options.fingerprint
                 else None)
        vision: list[VisionPart] = []
        detect_started = time.perf_counter()
        for chunk in chunks:
            before = sum(part.frames_sampled for part in vision)

            def frames_done(stage: str, done: float, total: float, before: int = before) -> None:
                progress(stage, before + done, total_frames)

            vision.append(detect_chunk(info, chunk, options, models.detectors,
                                       evidence_dir=evidence_dir, progress=frames_done,
                                       on_hash=early, timings=timings))
        timings["decode_detect"] = time.perf_counter() - detect_started
        speech, heard = speech_job.result() if speech_job is not None else (None, [])
    waited = time.perf_counter()
    models.wait_for_text_model()
    if models.text_loading is not None:
        timings["wait_text_model"] = time.perf_counter() - waited

    result = finish(info, options, chunks, vision, speech, models.refs, timings=timings,
                    audio=heard, bank=bank, skipped=skipped)
    return replace(result, timings={**result.timings,
                                    "total": round(time.perf_counter() - scan_started, 3)})
