"""Weapon detection on sampled frames. Detector backends sit behind the one-method `Detector`
protocol in an explicit registry keyed by weights format; the model's own class names are mapped
to our categories (firearm, knife, blunt, person, phone) by the weights manifest. Persons and phones
are kept as context and as a check on false weapon boxes."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .registry import Registry
from .types import Box, Detection, Frame
from .types import iou as box_iou
from .weights import ModelSpec, model_path, weights_dir

WEAPON_LABELS = frozenset({"firearm", "knife", "blunt"})
_COLOURS = {"firearm": (0, 0, 255), "knife": (0, 140, 255), "blunt": (0, 215, 255)}


class Detector(Protocol):
    """Finds objects on frames; `name` is the model's name@version."""

    name: str

    def detect(self, frames: Sequence[Frame], scale: float,
               context: Sequence[Detection] = ()) -> list[Detection]:
        """Detections on `frames`, with boxes divided by `scale` (back to video pixels).
        `context` holds what detectors that ran before found on the same frames (people, for a
        weapon model that looks closer at them)."""
        ...


def detect_all(detectors: Sequence[Detector], frame: Frame, scale: float) -> list[Detection]:
    """Every detector on one frame, in order, each seeing what the earlier ones found."""
    found: list[Detection] = []
    for detector in detectors:
        found += detector.detect([frame], scale, tuple(found))
    return found


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """How detectors run: input size, the minimum confidence kept, and CPU threads."""

    min_confidence: float = 0.25
    imgsz: int | None = None  # None: the model's own size from the manifest
    # Threads of the inference runtime (OpenVINO; PyTorch's are process-wide, so a `.pt` model
    # sets them for the whole process). A scan detects while a second thread transcribes, so on
    # a small CPU one thread each beats both runtimes spreading over every core and fighting
    # (docs/performance.md). 0: the runtime's default (all cores).
    threads: int = 1
    # A weapon-only model (no person class) also looks at enlarged crops around up to this many
    # people that an earlier detector found: far, small weapons in hands and waistbands become
    # large enough to see (docs/detector-comparison.md). 0: whole frames only.
    person_crops: int = 3


def person_crop_boxes(frame: Frame, people: Sequence[Detection], scale: float,
                      limit: int) -> list[tuple[int, int, int, int]]:
    """Crop windows (frame pixels) around up to `limit` people: the person box widened 1.6x and
    heightened 1.2x (hands held out, a waistband), at least 64 px. People taller than 60 % of the
    frame are skipped (the whole frame already shows them large), the most confident first;
    windows mostly inside an earlier window are dropped."""
    height, width = frame.image.shape[:2]
    windows: list[tuple[int, int, int, int]] = []
    if limit <= 0:
        return windows
    for person in sorted(people, key=lambda d: -d.confidence):
        x1, y1, x2, y2 = (v * scale for v in person.box)
        if y2 - y1 > 0.6 * height or y2 - y1 < 16:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w = max(32.0, 0.8 * (x2 - x1), 0.35 * (y2 - y1))
        half_h = max(32.0, 0.6 * (y2 - y1))
        box = (int(max(0, cx - half_w)), int(max(0, cy - half_h)),
               int(min(width, cx + half_w)), int(min(height, cy + half_h)))
        area = max(1, (box[2] - box[0]) * (box[3] - box[1]))
        covered = max((max(0, min(box[2], w[2]) - max(box[0], w[0]))
                       * max(0, min(box[3], w[3]) - max(box[1], w[1])) for w in windows),
                      default=0)
        if covered > 0.7 * area:
            continue
        windows.append(box)
        if len(windows) >= limit:
            break
    return windows


def merge_boxes(detections: Sequence[Detection], iou: float = 0.5) -> list[Detection]:
    """Greedy non-maximum suppression per label: of boxes overlapping by `iou` or more (or one
    inside the other), the most confident stays."""
    def inside(a: Box, b: Box) -> bool:  # a within b, give or take 2 px
        return a[0] >= b[0] - 2 and a[1] >= b[1] - 2 and a[2] <= b[2] + 2 and a[3] <= b[3] + 2

    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.confidence):
        if not any(k.label == det.label and (box_iou(k.box, det.box) >= iou
                                             or inside(det.box, k.box) or inside(k.box, det.box))
                   for k in kept):
            kept.append(det)
    return kept


OPENVINO_CACHE = "openvino-cache"  # compiled OpenVINO models, a folder of the weights cache
_openvino_lock = threading.Lock()


def openvino_cache_dir() -> Path | None:
    """Where OpenVINO keeps compiled models between processes (`CACHE_DIR`): a folder of the
    weights cache, or None when it cannot be written (the model is then compiled every time)."""
    folder = weights_dir() / OPENVINO_CACHE
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


@contextmanager
def openvino_settings(threads: int, cache_dir: Path | None) -> Iterator[None]:
    """While inside, every `openvino.Core()` (ultralytics makes its own and takes no settings)
    compiles for the CPU with `threads` inference threads (0: OpenVINO's default) and reads and
    writes compiled models in `cache_dir`: one compile, loaded from the cache after the first
    run, instead of ultralytics' compile and a second one to set the threads."""
    import openvino as ov

    plain = ov.Core

    class ConfiguredCore(plain):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if cache_dir is not None:
                self.set_property({"CACHE_DIR": str(cache_dir)})
            if threads > 0:
                self.set_property("CPU", {"INFERENCE_NUM_THREADS": threads})

    with _openvino_lock:  # the class swap is process-wide: one model load at a time
        ov.Core = ConfiguredCore
        try:
            yield
        finally:
            ov.Core = plain


class UltralyticsDetector:
    """Any model ultralytics loads: `.pt` checkpoints (detect or pose) and OpenVINO folders."""

    def __init__(self, spec: ModelSpec, path: Path, options: DetectorOptions) -> None:
        os.environ.setdefault("YOLO_VERBOSE", "False")  # keep ultralytics' banners off stdout
        os.environ.setdefault("YOLO_OFFLINE", "1")  # weights come from the manifest, never a hub
        from ultralytics import YOLO  # heavy import, only when a detector is built

        target = path / spec.files[0].name if spec.format == "ultralytics-pt" else path
        self.name = spec.ref
        self._model = YOLO(str(target), task=spec.task)
        self._label_map = dict(spec.label_map)
        self._imgsz = options.imgsz or spec.imgsz
        self._conf = options.min_confidence
        self._crops = 0 if "person" in self._label_map.values() else options.person_crops
        if spec.format == "openvino":
            # ultralytics builds its OpenVINO runtime on the first predict: do it now, on a
            # blank frame, with our thread limit and the compiled-model cache.
            with openvino_settings(options.threads, openvino_cache_dir()):
                self._model.predict(np.zeros((self._imgsz, self._imgsz, 3), np.uint8),
                                    imgsz=self._imgsz, conf=self._conf, verbose=False)
        elif options.threads > 0:
            import torch

            torch.set_num_threads(options.threads)

    def _predict(self, image: np.ndarray, frame: Frame, scale: float) -> list[Detection]:
        (result,) = self._model.predict(image, imgsz=self._imgsz, conf=self._conf, verbose=False)
        return Detection.from_ultralytics(result, t=frame.t, frame_index=frame.index,
                                          model=self.name, label_map=self._label_map,
                                          scale=scale)

    def detect(self, frames: Sequence[Frame], scale: float,
               context: Sequence[Detection] = ()) -> list[Detection]:
        found: list[Detection] = []
        for frame in frames:
            here = self._predict(frame.image, frame, scale)
            people = [d for d in context if d.label == "person" and d.frame_index == frame.index]
            for x1, y1, x2, y2 in person_crop_boxes(frame, people, scale, self._crops):
                for det in self._predict(frame.image[y1:y2, x1:x2], frame, scale):
                    bx1, by1, bx2, by2 = det.box
                    ox, oy = x1 / scale, y1 / scale
                    here.append(replace(det, box=(round(bx1 + ox, 1), round(by1 + oy, 1),
                                                  round(bx2 + ox, 1), round(by2 + oy, 1))))
            found += merge_boxes(here) if people and self._crops else here
        return found


DetectorFactory = Callable[[ModelSpec, Path, DetectorOptions], Detector]


DETECTORS: Registry[DetectorFactory] = Registry("detector backend")
DETECTORS.register("ultralytics-pt", UltralyticsDetector)
DETECTORS.register("openvino", UltralyticsDetector)


def draw_detections(image: np.ndarray, detections: Iterable[Detection], scale: float
                    ) -> np.ndarray:
    """A copy of `image` with weapon boxes and labels drawn (boxes given in video pixels)."""
    canvas = image.copy()
    for det in detections:
        if det.label not in WEAPON_LABELS:
            continue
        x1, y1, x2, y2 = (int(round(v * scale)) for v in det.box)
        colour = _COLOURS[det.label]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
        caption = f"{det.label} {det.confidence:.2f}"
        cv2.putText(canvas, caption, (x1 + 2, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    return canvas


def save_evidence(
    frame: Frame, detections: Sequence[Detection], scale: float, directory: Path
) -> Path:
    """Write one evidence thumbnail (JPEG, boxes drawn) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"frame_{frame.index:06d}_{frame.t:09.3f}s.jpg"
    if not cv2.imwrite(str(target), draw_detections(frame.image, detections, scale),
                       [cv2.IMWRITE_JPEG_QUALITY, 85]):  # False, not an exception, on a full disk
        raise OSError(f"could not write the evidence image {target.name} (disk full or not "
                      "writable)")
    return target


def build_detector(spec: ModelSpec, options: DetectorOptions = DetectorOptions()) -> Detector:
    """Load the detector for `spec` (weights verified first) with the backend for its format."""
    return DETECTORS.get(spec.format)(spec, model_path(spec.name), options)
