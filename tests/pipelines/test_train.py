"""Tests of the weapon-detector training recipe: the seeded split rule (deterministic, disjoint,
near-duplicate groups kept whole), the data digest, the synthetic copy-paste step, a tiny real
training run that writes its record, and the committed `incitescan-weapons` model loaded through
the manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import train
from pipelines.train import (
    DEFAULT_DATA,
    data_digest,
    group_key,
    in_validation,
    label_of,
    make_synthetic,
    read_boxes,
    split,
)

from .conftest import require_model


def fake_images(names: list[str], source: str = "ahmed-new-dataset-weapon") -> list[Path]:
    return [Path(f"/data/{source}/images/{name}") for name in names]


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/d/ahmed-new-dataset-weapon/images/ahmed_0CCUBTXDP3GD_jpg.rf.ca97d202c9a5e2b7.jpg",
         "ahmed-new-dataset-weapon/0CCUBTXDP#0#GD"),
        ("/d/wallet-phone-airpod/images/wpa_opencv_frame_101_png.rf.886a9f020d1dab98.jpg",
         "wallet-phone-airpod/opencv_frame_#4#"),
        ("/d/wallet-phone-airpod/images/wpa_opencv_frame_124_png.rf.0123456789abcdef.jpg",
         "wallet-phone-airpod/opencv_frame_#4#"),
        ("/d/handgestures-rf100/images/handgestures_a_1015_jpg.rf.b3a711671d87c98d.jpg",
         "handgestures-rf100/a_#40#"),
        ("/d/new-knife-v3/images/nk_-__11_-removebg-preview_png.rf.1007a32a41ce3e6e.jpg",
         "new-knife-v3/-__#0#_-removebg-preview"),
        ("/d/new-knife-v3/images/nk_kitchen.jpg", "new-knife-v3/kitchen"),
        # weapons-scenes: one flat folder, `<source>_<NNNN>_<source image name>`
        ("/d/weapons-scenes/images/oi-gun_0000_4f5462043ce89254.jpg",
         "weapons-scenes/oi-gun/4f5462043ce#3570#"),
        ("/d/weapons-scenes/images/knife-v11_0001_knife-612.jpg",
         "weapons-scenes/knife-v11/knife-#24#"),
        ("/d/weapons-scenes/images/knife-v11_0002_knife-612rf45858f3c327dc47c52e145bbaaf99.jpg",
         "weapons-scenes/knife-v11/knife-#24#"),
        ("/d/weapons-scenes/images/capston-neg_0001_youtube-16.jpg",
         "weapons-scenes/capston-neg/youtube-#0#"),
    ],
)
def test_group_key(path: str, group: str) -> None:
    assert group_key(path) == group


def test_split_is_deterministic_disjoint_and_keeps_groups_whole() -> None:
    frames = [f"wpa_opencv_frame_{i}_png.rf.{i:016x}.jpg" for i in range(400)]
    images = fake_images(frames, "wallet-phone-airpod") + fake_images(
        [f"ahmed_{i:012d}X_jpg.rf.{i:016x}.jpg" for i in range(400)]
    )
    train_a, val_a = split(images, seed=0, val_fraction=0.2)
    train_b, val_b = split(list(reversed(images)), seed=0, val_fraction=0.2)
    assert (train_a, val_a) == (train_b, val_b)  # independent of order
    assert not set(train_a) & set(val_a)
    assert sorted(train_a + val_a) == sorted(images)
    assert 0.1 < len(val_a) / len(images) < 0.3
    train_groups, val_groups = {group_key(p) for p in train_a}, {group_key(p) for p in val_a}
    assert not train_groups & val_groups
    # 400 neighbouring frames make 16 groups of 25: each group lands on one side whole.
    assert {group_key(p) for p in fake_images(frames, "wallet-phone-airpod")} == {
        f"wallet-phone-airpod/opencv_frame_#{n}#" for n in range(16)
    }
    # Another seed gives another split; adding a file moves no other file.
    assert split(images, seed=1, val_fraction=0.2)[1] != val_a
    extra = fake_images(["ahmed_NEWFILE_jpg.rf.0000000000000000.jpg"])
    train_c, val_c = split(images + extra, seed=0, val_fraction=0.2)
    assert set(val_c) - set(extra) == set(val_a)


def test_in_validation_fraction_bounds() -> None:
    assert not any(in_validation(f"g{i}", 0, 0.0) for i in range(100))
    assert all(in_validation(f"g{i}", 0, 1.0) for i in range(100))


def test_data_digest_changes_with_any_file(tmp_path: Path) -> None:
    a = tmp_path / "src" / "images" / "a.jpg"
    b = tmp_path / "src" / "labels" / "a.txt"
    a.parent.mkdir(parents=True)
    b.parent.mkdir(parents=True)
    a.write_bytes(b"image")
    b.write_text("0 0.5 0.5 0.1 0.1\n")
    first = data_digest([a, b], tmp_path)
    assert data_digest([b, a], tmp_path) == first  # order of the list does not matter
    b.write_text("1 0.5 0.5 0.1 0.1\n")
    changed = data_digest([a, b], tmp_path)
    assert changed != first
    b.rename(tmp_path / "src" / "labels" / "c.txt")
    assert data_digest([a, tmp_path / "src" / "labels" / "c.txt"], tmp_path) != changed
    assert data_digest([a], tmp_path) != first


def tiny_dataset(root: Path) -> Path:
    """A training set in the shared layout made of synthetic shapes: two sources, a firearm-ish
    dark bar, a knife-ish bright blade and an empty negative per source."""
    rng = np.random.default_rng(0)
    for source, prefix in (("ahmed-new-dataset-weapon", "ahmed_"), ("new-knife-v3", "nk_")):
        (root / source / "images").mkdir(parents=True)
        (root / source / "labels").mkdir(parents=True)
        for index in range(6):
            image = rng.integers(60, 200, (96, 96, 3), dtype=np.uint8)
            label = ""
            if index % 3 != 2:
                cls = index % 3
                colour = (20, 20, 20) if cls == 0 else (230, 230, 230)
                cv2.rectangle(image, (20, 30), (70, 50), colour, -1)
                label = f"{cls} 0.46875 0.416667 0.520833 0.208333\n"
            name = f"{prefix}{'abcdef'[index]}shot_jpg.rf.{index:032x}"
            cv2.imwrite(str(root / source / "images" / f"{name}.jpg"), image)
            (root / source / "labels" / f"{name}.txt").write_text(label)
    return root


def test_synthetic_images_have_boxes_inside_and_only_train_donors(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    images = train.list_images(data)
    written = make_synthetic(images, 5, seed=3, images_dir=tmp_path / "s" / "images",
                             labels_dir=tmp_path / "s" / "labels")
    again = make_synthetic(images, 5, seed=3, images_dir=tmp_path / "t" / "images",
                           labels_dir=tmp_path / "t" / "labels")
    assert len(written) == 5
    for first, second in zip(written, again, strict=True):  # seeded: the same images again
        assert first.read_bytes() == second.read_bytes()
        boxes = read_boxes(label_of(first))
        assert boxes
        for cls, cx, cy, w, h in boxes:
            assert cls in (0, 1)
            assert cx - w / 2 >= 0 and cx + w / 2 <= 1.0001
            assert cy - h / 2 >= 0 and cy + h / 2 <= 1.0001


def test_crops_zoom_in_on_weapons_and_people(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data")
    images = train.list_images(data)
    negative = next(i for i in images if not read_boxes(label_of(i)))
    persons = {negative: [(10.0, 10.0, 40.0, 80.0)]}
    written = train.make_crops(images, 12, seed=1, images_dir=tmp_path / "c" / "images",
                               labels_dir=tmp_path / "c" / "labels", persons=persons)
    assert len(written) == 12
    with_weapon = 0
    for path in written:
        crop = cv2.imread(str(path))
        assert crop is not None and min(crop.shape[:2]) >= 16
        boxes = read_boxes(label_of(path))
        with_weapon += bool(boxes)
        for _, cx, cy, w, h in boxes:
            assert cx - w / 2 >= 0 and cx + w / 2 <= 1.0001 and cy - h / 2 >= 0
            assert cy + h / 2 <= 1.0001
            assert w * h > 0.02  # zoomed: the 50x20 px weapon is no longer a speck
    assert with_weapon >= 6  # most crops are around a weapon


@pytest.mark.slow
def test_tiny_training_run_writes_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One epoch on 12 tiny images at 64 px: the recipe runs end to end and records itself."""
    require_model("basegun-firearm")
    for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "YOLO_VERBOSE"):  # train() sets them
        monkeypatch.setenv(name, os.environ.get(name, ""))
    data = tiny_dataset(tmp_path / "data")
    config = train.config_for(epochs=1, imgsz=64, out=str(tmp_path / "run"), seed=0,
                              data=str(data), batch=4, synthetic=4, crops=4, export="none",
                              val_fraction=0.3, workers=0, init="basegun-firearm")
    result = train.train(config)
    record = json.loads(Path(result.record).read_text())
    assert Path(result.best_pt).is_file()
    assert record["config"]["epochs"] == 1 and record["config"]["seed"] == 0
    assert record["dataset"]["images"] == 12 and record["dataset"]["synthetic_images"] == 4
    assert record["dataset"]["crop_images"] == 4
    assert record["dataset"]["data_digests"]["data"] == data_digest(
        [*train.list_images(data), *(label_of(i) for i in train.list_images(data))], data
    )
    assert record["versions"]["ultralytics"] and record["init"]["sha256"]
    assert record["epochs_total"] == record["epochs_trained"] == 1  # from basegun: none before
    assert Path(result.run_dir).parent.joinpath(train.CHECKPOINT.name).is_file()
    assert set(record["metrics"]) >= {"val_map50", "val_map50_95"}
    assert all(Path(p).is_relative_to(tmp_path) for p in (result.run_dir, result.record))


# --------------------------------------------------------------------- the committed model


@pytest.fixture(scope="module")
def own_detector():
    """The project's own weapon detector (OpenVINO, committed under weights/)."""
    from pipelines.vision import build_detector
    from pipelines.weights import load_manifest

    require_model("incitescan-weapons")
    return build_detector(load_manifest()["incitescan-weapons"])


def _frame(image: np.ndarray):  # type: ignore[no-untyped-def]
    from pipelines.types import Frame

    return Frame(index=0, t=0.0, image=image)


def test_committed_model_finds_basegun_warmup_gun(own_detector) -> None:  # type: ignore[no-untyped-def]
    """Measured 2026-11-25: firearm boxes at 0.53, 0.19, 0.14 (320 px); no knife."""
    image = cv2.imread(str(require_model("basegun-firearm") / "warmup.jpg"))
    found = own_detector.detect([_frame(image)], 1.0)
    assert any(d.label == "firearm" and d.confidence >= 0.4 for d in found)
    assert all(d.label == "firearm" for d in found)
    assert all(d.model == "incitescan-weapons@0.2.0" for d in found)


# A held-out (validation split) hand-gesture negative: no box even at 0.05.
NEGATIVE = DEFAULT_DATA / "handgestures-rf100" / "images" / (
    "handgestures_a_346_jpg.rf.39e222ef66c4f0e30113d5bb76c8736c.jpg"
)


@pytest.mark.parametrize("kind", ["grey frame", "hand-gesture negative"])
def test_committed_model_quiet_on_negatives(own_detector, kind: str) -> None:  # type: ignore[no-untyped-def]
    if kind == "grey frame":
        image = np.full((416, 416, 3), 127, np.uint8)
    elif NEGATIVE.is_file():
        image = cv2.imread(str(NEGATIVE))
    else:
        pytest.skip(f"training data not present: {NEGATIVE}")
    assert own_detector.detect([_frame(image)], 1.0) == []  # at the default 0.25 threshold
