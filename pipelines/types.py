"""Result types shared by every stage: frozen, slotted dataclasses made of plain values, so that
`dataclasses.asdict` turns any of them into JSON without custom code. Adapters that parse a model
framework's output into these types live next to the type (`Detection.from_ultralytics`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes (0 for empty boxes)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What ffprobe says about an input file, after validation."""

    path: str
    sha256: str
    size_bytes: int
    format_name: str
    duration: float  # seconds
    width: int
    height: int
    fps: float
    video_codec: str
    rotation: int  # degrees, as displayed by players
    has_audio: bool
    audio_codec: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled video frame, already scaled by ffmpeg; `image` is an HxWx3 BGR uint8 array."""

    index: int
    t: float  # seconds from start of media
    image: Any  # numpy.ndarray; Any keeps this module free of numpy


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found by a detector on one sampled frame."""

    t: float  # seconds from start of media
    label: str  # our category: "firearm", "knife", "blunt", "person", "phone"
    confidence: float
    box: Box  # x1, y1, x2, y2 in pixels of the original (displayed) video
    model: str  # name@version of the weights
    source_label: str = ""  # the model's own class name, e.g. "weapon" or "baseball bat"
    frame_index: int = -1

    @classmethod
    def from_ultralytics(
        cls,
        result: Any,
        *,
        t: float,
        frame_index: int,
        model: str,
        label_map: dict[str, str],
        scale: float,
    ) -> list[Detection]:
        """Parse one `ultralytics.engine.results.Results`; classes absent from `label_map` are
        dropped, boxes are divided by `scale` to return to original video pixels."""
        names = result.names
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        found = []
        for xyxy, conf, cls_id in zip(
            boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
        ):
            source_label = str(names[int(cls_id)])
            label = label_map.get(source_label)
            if label is None:
                continue
            box = tuple(round(v / scale, 1) for v in xyxy)
            found.append(
                cls(
                    t=round(t, 3),
                    label=label,
                    confidence=round(float(conf), 4),
                    box=(box[0], box[1], box[2], box[3]),
                    model=model,
                    source_label=source_label,
                    frame_index=frame_index,
                )
            )
        return found


@dataclass(frozen=True, slots=True)
class Word:
    """A transcribed word with its timing."""

    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    """One Whisper segment with the confidence figures used by the hallucination guard."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class Transcript:
    """All kept speech of a file, plus the segments the guard rejected (kept for explanation)."""

    language: str
    language_probability: float
    segments: tuple[TranscriptSegment, ...]
    model: str  # name@version
    rejected: tuple[TranscriptSegment, ...] = ()
    speech_seconds: float = 0.0  # audio left after the voice-activity filter
    # Speech over music (pipelines/vocals.py): seconds of the audio that had a music bed under
    # it, the front end that cleaned it before Whisper ("" none, else a vocals.FRONT_ENDS
    # name), and the mean probability of the kept words (None: no words, or not measured).
    music_seconds: float = 0.0
    front_end: str = ""
    mean_word_probability: float | None = None


@dataclass(frozen=True, slots=True)
class ThreatHit:
    """One piece of transcript that the language analysis considers threatening, and why."""

    start: float
    end: float
    text: str  # the matched span as transcribed
    rule: str  # "lexicon:<term>", "pattern:<name>", "classifier:<model>"
    category: str  # "weapon", "violence", "target", "taunt", "threat", "call_to_action"
    meaning: str  # human explanation of the term or rule
    weight: float  # 0..1, strength of this evidence
    segment_text: str = ""  # the whole transcript line, for context


@dataclass(frozen=True, slots=True)
class FlaggedSegment:
    """A stretch of the video whose fused score crossed the segment threshold."""

    start: float
    end: float
    score: float
    signals: tuple[str, ...]  # e.g. ("weapon", "threat_speech")
    reasons: tuple[str, ...]  # human-readable, one per piece of evidence
    detections: tuple[Detection, ...] = ()
    threat_hits: tuple[ThreatHit, ...] = ()


@dataclass(frozen=True, slots=True)
class SignalScores:
    """The overall score broken down by signal, each 0..1."""

    weapon: float
    threat_speech: float
    co_occurrence: float
    known_content: float = 0.0  # a match in the bank of removed videos (pipelines/matching.py)


@dataclass(frozen=True, slots=True)
class FusionResult:
    """What `fuse()` returns: the overall score, its breakdown and the flagged segments."""

    risk_score: float
    flagged: bool
    threshold: float
    signal_scores: SignalScores
    flagged_segments: tuple[FlaggedSegment, ...]
    reasons: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class EvidenceFrame:
    """A saved thumbnail of a frame with weapon detections drawn on it."""

    t: float
    frame_index: int
    path: str
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FrameHash:
    """PDQ hashes of one sampled frame, as vPDQ computes them (one PDQ per sampled frame), for
    several regions of the frame's content (`pipelines.matching.REGIONS`, same order) so that
    crops and overlays still match; `quality` is PDQ's 0..100 measure of detail."""

    t: float  # seconds from start of media
    frame_index: int
    quality: int
    pdq: tuple[str, ...]  # 64 hex digits (256 bits) per region


@dataclass(frozen=True, slots=True)
class AudioFingerprint:
    """A Chromaprint fingerprint (fpcalc -raw) of the audio from `start` seconds on."""

    start: float
    item_s: float  # seconds of audio per fingerprint item
    items: tuple[int, ...]  # unsigned 32-bit integers
    algorithm: str  # e.g. "chromaprint2"


@dataclass(frozen=True, slots=True)
class MatchedSegment:
    """A stretch of the scanned video that matches a stretch of a banked video, in time order."""

    start: float  # seconds in the scanned video
    end: float
    bank_start: float  # seconds in the banked video
    bank_end: float
    frames: int  # sampled frames of the scanned video that matched
    mean_distance: float  # PDQ Hamming distance of those frames, 0..256


@dataclass(frozen=True, slots=True)
class KnownMatch:
    """The scanned video matches a video in the bank of removed content, and how well."""

    video_id: str  # the banked video (a scan id for videos removed by a reviewer)
    label: str  # why it is in the bank, e.g. "removed by reviewer" or the source list
    score: float  # 0..1, the known-content signal this match gives
    frame_share: float  # share of the scan's usable sampled frames that matched, 0..1
    matched_frames: int
    matched_seconds: float
    speed: float  # banked seconds per scanned second along the match (1.0: same speed)
    offset: float  # banked time minus scanned time at the start of the match, seconds
    audio_score: float | None  # share of audio windows that matched, None: no audio to compare
    segments: tuple[MatchedSegment, ...]
    reason: str  # one readable line


@dataclass(frozen=True, slots=True)
class Skipped:
    """An optional part of the scan that did not run (its program or model is not installed):
    the scan went on without it (pipelines/optional.py)."""

    part: str  # "fingerprint" (audio), "speech", "detector:<model>"
    code: str  # the stable code of the error it would have raised, e.g. "fpcalc_missing"
    message: str  # what was left out and how to install it


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Everything one scan found, before it is written out as a versioned report."""

    media: MediaInfo
    detections: tuple[Detection, ...]
    transcript: Transcript | None
    threat_hits: tuple[ThreatHit, ...]
    fusion: FusionResult
    models: dict[str, str]  # role -> name@version
    settings: dict[str, Any]
    frames_sampled: int
    evidence: tuple[EvidenceFrame, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    # Perceptual hashes for re-upload matching (pipelines/matching.py), and what they matched.
    frame_hashes: tuple[FrameHash, ...] = ()
    audio_fingerprints: tuple[AudioFingerprint, ...] = ()
    known_matches: tuple[KnownMatch, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # optional parts that did not run, and why
