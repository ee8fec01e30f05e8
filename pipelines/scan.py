"""The whole analysis of one video in one process: probe, then frame sampling + weapon detection
on the main thread while the audio is extracted and transcribed on a second thread (both model
runtimes release the GIL), then language analysis and fusion.

Models are loaded by `load_models` once and reused across scans (a worker process keeps them);
`scan` loads them itself when none are given."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fusion import FusionOptions, fuse
from .language import LEXICON_VERSION, analyse_transcript
from .media import MediaLimits, extract_audio, frame_size, probe, sample_frames
from .speech import SpeechOptions, Transcriber, build_transcriber
from .types import Detection, EvidenceFrame, Frame, MediaInfo, ScanResult, Transcript
from .vision import WEAPON_LABELS, Detector, DetectorOptions, build_detector, save_evidence
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
    speech: SpeechOptions = field(default_factory=SpeechOptions)
    fusion: FusionOptions = field(default_factory=FusionOptions)
    limits: MediaLimits = field(default_factory=MediaLimits)
    max_evidence_frames: int = 24

    @property
    def speech_model_name(self) -> str:
        return SPEECH_MODELS.get(self.speech_model, self.speech_model)


@dataclass(slots=True)
class ScanModels:
    """Loaded models, reusable across scans with the same options."""

    detectors: list[Detector]
    transcriber: Transcriber | None

    @property
    def refs(self) -> dict[str, str]:
        refs = {f"detector:{i}": d.name for i, d in enumerate(self.detectors)}
        if self.transcriber is not None:
            refs["speech"] = self.transcriber.name
        refs["lexicon"] = LEXICON_VERSION
        return refs


def load_models(options: ScanOptions) -> ScanModels:
    """Verify and load every model `options` names (raises WeightsMissing/WeightsCorrupt)."""
    manifest = load_manifest()

    def spec(name: str) -> ModelSpec:
        if name not in manifest:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(manifest))}")
        return manifest[name]

    detectors = [build_detector(spec(name), options.detector) for name in options.detectors]
    transcriber = (build_transcriber(spec(options.speech_model_name), options.speech)
                   if options.speech_model else None)
    return ScanModels(detectors=detectors, transcriber=transcriber)


def _transcribe(info: MediaInfo, models: ScanModels, progress: Progress,
                timings: dict[str, float]) -> Transcript | None:
    if models.transcriber is None or not info.has_audio:
        return None
    started = time.perf_counter()
    audio = extract_audio(info)
    timings["audio"] = time.perf_counter() - started
    progress("transcribe", 0, 1)
    started = time.perf_counter()
    transcript = models.transcriber.transcribe(audio)
    timings["transcribe"] = time.perf_counter() - started
    progress("transcribe", 1, 1)
    return transcript


def scan(
    path: Path | str,
    options: ScanOptions = ScanOptions(),
    *,
    models: ScanModels | None = None,
    evidence_dir: Path | None = None,
    progress: Progress = _no_progress,
) -> ScanResult:
    """Scan one video file and return everything found, with evidence.

    Raises InvalidMedia (and subclasses) for bad input and WeightsMissing for absent models."""
    timings: dict[str, float] = {}
    scan_started = started = time.perf_counter()
    info = probe(Path(path), options.limits)
    timings["probe"] = time.perf_counter() - started
    models = models or load_models(options)
    width, _ = frame_size(info, options.max_side)
    scale = width / info.width
    total_frames = max(1.0, info.duration * options.fps)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech") as pool:
        speech_job = pool.submit(_transcribe, info, models, progress, timings)
        detections: list[Detection] = []
        best: list[tuple[float, int, Frame, list[Detection]]] = []  # min-heap of evidence
        detect_started = time.perf_counter()
        sampled = 0
        for frame in sample_frames(info, options.fps, options.max_side):
            found = [d for det in models.detectors for d in det.detect([frame], scale)]
            detections += found
            weapons = [d for d in found if d.label in WEAPON_LABELS]
            if weapons:
                entry = (max(d.confidence for d in weapons), frame.index, frame, found)
                if len(best) < options.max_evidence_frames:
                    heapq.heappush(best, entry)
                else:
                    heapq.heappushpop(best, entry)
            sampled += 1
            progress("frames", sampled, total_frames)
        timings["decode_detect"] = time.perf_counter() - detect_started
        transcript = speech_job.result()

    started = time.perf_counter()
    hits = tuple(analyse_transcript(transcript.segments)) if transcript else ()
    timings["analyse"] = time.perf_counter() - started
    started = time.perf_counter()
    fusion = fuse(info.duration, (info.width, info.height), 1.0 / options.fps, detections, hits,
                  options.fusion)
    timings["fuse"] = time.perf_counter() - started

    evidence: list[EvidenceFrame] = []
    if evidence_dir is not None:
        for _, _, frame, found in sorted(best, key=lambda e: e[1]):
            target = save_evidence(frame, found, scale, evidence_dir)
            evidence.append(EvidenceFrame(
                t=frame.t, frame_index=frame.index, path=str(target),
                labels=tuple(sorted({d.label for d in found if d.label in WEAPON_LABELS}))))
    timings["total"] = time.perf_counter() - scan_started
    return ScanResult(
        media=info,
        detections=tuple(detections),
        transcript=transcript,
        threat_hits=hits,
        fusion=fusion,
        models=models.refs,
        settings=asdict(options),
        frames_sampled=sampled,
        evidence=tuple(evidence),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
