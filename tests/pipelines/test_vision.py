"""Real detectors on real images: the shipped sample photos of ultralytics and basegun."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics

from pipelines.registry import Registry
from pipelines.types import Detection, Frame, iou
from pipelines.vision import (
    DETECTORS,
    WEAPON_LABELS,
    DetectorOptions,
    build_detector,
    draw_detections,
    merge_boxes,
    person_crop_boxes,
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


# --- person-guided crops ----------------------------------------------------------------------


def _person(box: tuple[float, float, float, float], confidence: float = 0.9) -> Detection:
    return Detection(t=0.0, label="person", confidence=confidence, box=box, model="m",
                     frame_index=0)


def test_person_crops_widen_people_and_skip_those_already_large() -> None:
    frame = Frame(index=0, t=0.0, image=np.zeros((360, 640, 3), np.uint8))
    far = _person((100.0, 100.0, 130.0, 180.0))  # 80 px tall: worth a closer look
    near = _person((300.0, 10.0, 500.0, 350.0))  # 340 of 360 px: already large
    windows = person_crop_boxes(frame, [near, far], 1.0, 3)
    assert len(windows) == 1
    x1, y1, x2, y2 = windows[0]
    assert x1 < 100 and x2 > 130 and y1 < 100 and y2 > 180  # hands and waist included
    assert (x2 - x1) >= 64 and (y2 - y1) >= 64
    # Boxes come in video pixels: at half scale the window lands at half the coordinates.
    scaled = person_crop_boxes(frame, [_person((200.0, 200.0, 260.0, 360.0))], 0.5, 3)
    assert scaled == windows
    assert person_crop_boxes(frame, [far], 1.0, 0) == []
    many = [_person((20.0 + 60 * i, 100.0, 50.0 + 60 * i, 180.0), 0.5 + i / 100) for i in range(8)]
    assert len(person_crop_boxes(frame, many, 1.0, 3)) == 3  # capped


def test_merge_keeps_the_most_confident_of_overlapping_boxes() -> None:
    def gun(box: tuple[float, float, float, float], confidence: float) -> Detection:
        return Detection(t=0.0, label="firearm", confidence=confidence, box=box, model="m")

    whole = gun((100.0, 100.0, 140.0, 130.0), 0.4)
    from_crop = gun((101.0, 99.0, 141.0, 131.0), 0.7)
    elsewhere = gun((300.0, 300.0, 340.0, 330.0), 0.3)
    knife = Detection(t=0.0, label="knife", confidence=0.5, box=(100.0, 100.0, 140.0, 130.0),
                      model="m")
    assert merge_boxes([whole, from_crop, elsewhere, knife]) == [from_crop, knife, elsewhere]


def test_weapon_model_looks_closer_at_a_far_person() -> None:
    """A gun photo small in a big frame beside a 'person': the weapon-only model also runs on
    the crop around that person, and what it finds there comes back in frame pixels, inside
    the crop, on the gun."""
    from pipelines.weights import load_manifest

    photo = cv2.imread(str(require_model("basegun-firearm") / "warmup.jpg"))
    require_model("incitescan-weapons")
    spec = load_manifest()["incitescan-weapons"]
    rng = np.random.default_rng(0)
    frame_image = rng.integers(60, 160, (720, 1280, 3), dtype=np.uint8)
    small = cv2.resize(photo, (220, int(220 * photo.shape[0] / photo.shape[1])))
    frame_image[400:400 + small.shape[0], 900:1120] = small
    gun_box = (900.0, 400.0, 1120.0, 400.0 + small.shape[0])
    frame = Frame(index=0, t=0.0, image=frame_image)
    person = _person((880.0, 330.0, 1140.0, gun_box[3] + 60))
    (window,) = person_crop_boxes(frame, [person], 1.0, 3)
    options = DetectorOptions(min_confidence=0.01)
    whole = build_detector(spec, replace(options, person_crops=0)).detect([frame], 1.0, [person])
    closer = build_detector(spec, options).detect([frame], 1.0, [person])
    added = [d for d in closer if d not in whole]
    assert added, "the crop found nothing the whole frame did not"
    for det in added:
        x1, y1, x2, y2 = det.box
        assert window[0] - 1 <= x1 and x2 <= window[2] + 1
        assert window[1] - 1 <= y1 and y2 <= window[3] + 1
    best = max(closer, key=lambda d: d.confidence)
    assert best.label == "firearm" and iou(best.box, gun_box) > 0.3
