"""Real detectors on real images: the shipped sample photos of ultralytics and basegun."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics

from pipelines.registry import Registry
from pipelines.types import Detection, Frame
from pipelines.vision import (
    DETECTORS,
    WEAPON_LABELS,
    DetectorOptions,
    build_detector,
    draw_detections,
    save_evidence,
)

from .conftest import require_model

ASSETS = Path(ultralytics.__file__).parent / "assets"


def frame_of(path: Path, t: float = 0.0) -> Frame:
    image = cv2.imread(str(path))
    assert image is not None, path
    return Frame(index=0, t=t, image=image)


@pytest.fixture(scope="module")
def bus() -> Frame:
    """ultralytics' bus.jpg: a bus and four people on a street, no weapon."""
    return frame_of(ASSETS / "bus.jpg", t=3.0)


@pytest.fixture(scope="module")
def zidane() -> Frame:
    """ultralytics' zidane.jpg: two men in suits, no weapon."""
    return frame_of(ASSETS / "zidane.jpg")


@pytest.fixture(scope="module")
def gun_photo() -> Frame:
    """basegun's warmup.jpg: one handgun filling most of the photo."""
    return frame_of(require_model("basegun-firearm") / "warmup.jpg")


def test_coco_model_finds_the_people_on_the_bus_photo(coco_detector, bus: Frame) -> None:
    found = coco_detector.detect([bus], scale=1.0)
    persons = [d for d in found if d.label == "person"]
    assert len(persons) >= 3
    assert all(d.t == 3.0 and d.model.startswith("yolo11n-coco-int8@") for d in found)
    assert not [d for d in found if d.label in WEAPON_LABELS]
    x1, y1, x2, y2 = max(persons, key=lambda d: d.confidence).box
    height, width = bus.image.shape[:2]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_boxes_are_returned_in_video_pixels(coco_detector, bus: Frame) -> None:
    half = Frame(index=0, t=3.0, image=cv2.resize(bus.image, None, fx=0.5, fy=0.5))
    full = max(coco_detector.detect([bus], scale=1.0), key=lambda d: d.confidence)
    scaled = max(coco_detector.detect([half], scale=0.5), key=lambda d: d.confidence)
    assert np.allclose(full.box, scaled.box, atol=25)


def test_firearm_model_finds_its_gun_photo(firearm_detector, gun_photo: Frame) -> None:
    (gun,) = firearm_detector.detect([gun_photo], scale=1.0)
    assert gun.label == "firearm" and gun.source_label == "weapon"
    assert gun.confidence > 0.5
    assert gun.model.startswith("basegun-firearm@")


@pytest.mark.parametrize("photo", ["bus", "zidane"])
def test_no_weapon_on_negative_photos(coco_detector, firearm_detector, photo: str,
                                      request: pytest.FixtureRequest) -> None:
    frame = request.getfixturevalue(photo)
    for detector in (coco_detector, firearm_detector):
        assert not [d for d in detector.detect([frame], 1.0) if d.label in WEAPON_LABELS]


def test_evidence_thumbnail_has_the_box_drawn(tmp_path: Path, gun_photo: Frame) -> None:
    det = Detection(t=0.0, label="firearm", confidence=0.7, box=(50, 40, 300, 200), model="m@1")
    drawn = draw_detections(gun_photo.image, [det], scale=1.0)
    assert not np.array_equal(drawn, gun_photo.image)
    assert tuple(drawn[40, 150]) == (0, 0, 255)  # red top edge of the firearm box
    path = save_evidence(gun_photo, [det], 1.0, tmp_path / "ev")
    assert path.parent == tmp_path / "ev" and cv2.imread(str(path)).shape == gun_photo.image.shape


def test_registry_rejects_duplicate_and_unknown_backends() -> None:
    with pytest.raises(ValueError, match="already registered"):
        DETECTORS.register("openvino", object)  # type: ignore[arg-type]
    fresh: Registry[int] = Registry("thing")
    with pytest.raises(ValueError, match="no thing named 'x'"):
        fresh.get("x")


def test_one_runtime_thread_finds_exactly_what_all_cores_find(manifest, bus: Frame) -> None:
    """A scan detects on one thread while whisper transcribes; the limit must not change a box."""
    require_model("yolo11n-coco-int8")
    spec = manifest["yolo11n-coco-int8"]
    one = build_detector(spec, DetectorOptions(threads=1))
    compiled = one._model.predictor.model.backend.ov_compiled_model  # type: ignore[attr-defined]
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    default = build_detector(spec, DetectorOptions(threads=0))
    assert one.detect([bus], 1.0) == default.detect([bus], 1.0)
