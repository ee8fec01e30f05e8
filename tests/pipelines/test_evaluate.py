"""The evaluation harness: metric functions checked against hand-computed tables, dataset readers
on tiny folders written in tmp_path, and `incitescan eval` end to end with real models on small
subsets of ../shared/data (whole-video evals are marked slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import evaluate
from pipelines.evaluate import (
    LabelledImage,
    ScoredBox,
    VideoLabel,
    average_precision,
    binary_metrics,
    category_of,
    intervals_hit,
    iou,
    match_detections,
    merge_intervals,
    overlap_seconds,
    read_boxes,
    read_class_names,
    word_error_rate,
    word_errors,
)
from pipelines.types import Detection, FlaggedSegment, FusionResult, SignalScores
from service.cli import run
from tests.pipelines.conftest import require_model

# ------------------------------------------------------------------------------ pure metrics


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 2, 2), (0, 0, 2, 2), 1.0),  # identical
        ((0, 0, 2, 2), (1, 0, 3, 2), 2 / 6),  # half shifted: 2 shared of 6
        ((0, 0, 4, 4), (1, 1, 3, 3), 4 / 16),  # one inside the other
        ((0, 0, 2, 2), (2, 0, 4, 2), 0.0),  # touching edges share no area
        ((0, 0, 2, 2), (5, 5, 6, 6), 0.0),  # apart
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes
    ],
)
def test_iou(a, b, expected) -> None:
    assert iou(a, b) == pytest.approx(expected)


def box(image: str, confidence: float, xyxy: tuple[float, float, float, float]) -> ScoredBox:
    return ScoredBox(image, confidence, xyxy)


@pytest.mark.parametrize(
    ("detections", "truths", "expected"),
    [
        # A second detection of a box already matched is a duplicate: false positive.
        ([box("a", 0.9, (0, 0, 10, 10)), box("a", 0.8, (0, 0, 10, 10))],
         {"a": [(0, 0, 10, 10)]}, [(0.9, True), (0.8, False)]),
        # IoU exactly 0.5 matches; just under does not.
        ([box("a", 0.9, (0, 0, 10, 5))], {"a": [(0, 0, 10, 10)]}, [(0.9, True)]),
        ([box("a", 0.9, (0, 0, 10, 4.9))], {"a": [(0, 0, 10, 10)]}, [(0.9, False)]),
        # The most confident detection goes first, even when listed last, and takes the box.
        ([box("a", 0.4, (0, 0, 10, 10)), box("a", 0.7, (0, 0, 10, 8))],
         {"a": [(0, 0, 10, 10)]}, [(0.7, True), (0.4, False)]),
        # Two boxes: each detection takes the best unmatched one, so both match.
        ([box("a", 0.9, (0, 0, 10, 10)), box("a", 0.8, (2, 0, 12, 10))],
         {"a": [(0, 0, 10, 10), (3, 0, 13, 10)]}, [(0.9, True), (0.8, True)]),
        # A detection on an image without boxes (or of another image) is a false positive.
        ([box("b", 0.6, (0, 0, 10, 10))], {"a": [(0, 0, 10, 10)], "b": []}, [(0.6, False)]),
        ([box("c", 0.6, (0, 0, 10, 10))], {"a": [(0, 0, 10, 10)]}, [(0.6, False)]),
    ],
)
def test_match_detections(detections, truths, expected) -> None:
    assert match_detections(detections, truths) == expected


@pytest.mark.parametrize(
    ("flags", "n_truths", "expected"),
    [
        ([True, True], 2, 1.0),
        ([True], 2, 0.5),  # half the boxes found, at precision 1
        ([False, True], 1, 0.5),  # found at rank 2: precision 1/2 over all recall
        # P = 1, 1/2, 2/3 at R = 1/3, 1/3, 2/3; interpolated: 1/3 * 1 + 1/3 * 2/3 = 5/9.
        ([True, False, True], 3, 5 / 9),
        # Recall steps at ranks 1 and 3 (P = 1 and 2/3): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
        ([True, False, True], 2, 5 / 6),
        ([], 2, 0.0),  # nothing detected
        ([False], 0, None),  # no true boxes: undefined
    ],
)
def test_average_precision_of_known_curves(flags, n_truths, expected) -> None:
    matches = [(1.0 - i / 10, flag) for i, flag in enumerate(flags)]
    result = average_precision(matches, n_truths)
    assert result == (None if expected is None else pytest.approx(expected))


def test_binary_metrics_table() -> None:
    labels = [True, True, True, False, False, False]
    predicted = [True, True, False, True, False, False]
    m = binary_metrics(labels, predicted)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert binary_metrics([False], [False])["precision"] is None  # nothing predicted


def test_ranking_metrics_need_both_classes() -> None:
    assert evaluate.ranking_metrics([True, True], [0.2, 0.9]) == {"roc_auc": None, "ap": None}
    ranked = evaluate.ranking_metrics([True, False, True, False], [0.9, 0.8, 0.7, 0.1])
    assert ranked["roc_auc"] == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert ranked["ap"] == pytest.approx((1 + 2 / 3) / 2)


def test_interval_overlap() -> None:
    truths = [(0.0, 2.0), (5.0, 7.0), (10.0, 12.0)]
    flagged = [(1.0, 3.0), (7.0, 9.0)]
    assert merge_intervals([(3, 4), (0, 2), (1, 3), (6, 6)]) == [(0, 4)]
    assert intervals_hit(truths, flagged) == 1  # (5, 7) only touches (7, 9): not a hit
    assert overlap_seconds(flagged, truths) == pytest.approx(1.0)
    assert overlap_seconds([(0, 4), (2, 6)], [(1, 5)]) == pytest.approx(4.0)  # merged first


def segment(start: float, end: float) -> FlaggedSegment:
    return FlaggedSegment(start=start, end=end, score=0.8, signals=("threat_speech",),
                          reasons=())


def fusion(risk: float, *segments: FlaggedSegment) -> FusionResult:
    return FusionResult(risk_score=risk, flagged=risk >= 0.5, threshold=0.5,
                        signal_scores=SignalScores(0.0, risk, 0.0), flagged_segments=segments)


def test_video_metrics_table() -> None:
    labels = [
        VideoLabel("threat.mp4", True, weapon=((0.0, 10.0),), threat_speech=((2.0, 4.0),)),
        VideoLabel("speech.mp4", True, threat_speech=((1.0, 2.0), (6.0, 8.0))),
        VideoLabel("benign.mp4", False),
        VideoLabel("kitchen.mp4", False, weapon=((0.0, 5.0),)),
    ]
    fusions = [fusion(0.9, segment(3.0, 5.0)), fusion(0.6, segment(6.5, 9.5)),
               fusion(0.7, segment(0.0, 1.0)), fusion(0.1)]
    m = evaluate.video_metrics(labels, fusions)
    assert m["interval_hit_rate"] == pytest.approx(3 / 5)  # weapon, 2-4 s and 6-8 s hit
    # Flagged 2 + 3 + 1 = 6 s; true inside: 2 (3-5 within 0-10) + 1.5 (6.5-8) + 0.
    assert m["flagged_precision"] == pytest.approx(3.5 / 6)
    assert m["roc_auc"] == pytest.approx(0.75)  # benign 0.7 outranks speech 0.6
    assert (m["video"]["tp"], m["video"]["fp"]) == (2, 1)
    assert [v["intervals_hit"] for v in m["videos"]] == [2, 1, 0, 0]


def test_word_errors_use_whisper_normaliser() -> None:
    assert word_errors("Hello, World!", "hello world") == (0, 2)
    assert word_errors("It's ten o'clock.", "it is ten o'clock") == (0, 4)
    assert word_errors("the cat sat", "the cat sat down") == (1, 3)
    assert word_errors("the cat sat", "") == (3, 3)
    assert word_errors("", "hello") == (1, 0)  # insertions against an empty reference
    # Corpus level pools errors and words: (0 + 1) / (4 + 2), not the mean of 0 and 1/2.
    assert word_error_rate(["a b c d", "e f"], ["a b c d", "x f"]) == pytest.approx(1 / 6)


# ------------------------------------------------------------------------- dataset readers


@pytest.mark.parametrize(
    ("name", "category"),
    [("handgun", "firearm"), ("Long gun", "firearm"), ("long-gun", "firearm"),
     ("pistols", "firearm"), ("Shotgun", "firearm"), ("knife", "knife"), ("Machete", "knife"),
     ("blade", "knife"), ("person", None), ("scissors", None), ("", None)],
)
def test_class_names_map_to_categories(name, category) -> None:
    assert category_of(name) == category


def test_class_names_from_classes_txt_yaml_or_parent(tmp_path: Path) -> None:
    (tmp_path / "indexed").mkdir()
    (tmp_path / "indexed" / "classes.txt").write_text("0 handgun\n1 knife\n3 person\n")
    assert read_class_names(tmp_path / "indexed") == ["handgun", "knife", "", "person"]
    (tmp_path / "classes.txt").write_text("firearm\nknife\n")
    (tmp_path / "source").mkdir()
    assert read_class_names(tmp_path / "source") == ["firearm", "knife"]  # from the parent
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "data.yaml").write_text("names: {0: pistol, 1: blade}\n")
    assert read_class_names(tmp_path / "yaml") == ["pistol", "blade"]


def test_boxes_from_yolo_and_voc(tmp_path: Path) -> None:
    yolo = tmp_path / "a.txt"
    yolo.write_text("1 0.5 0.5 0.2 0.4\n3 0.5 0.5 1 1\n0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n")
    names = ["handgun", "knife", "long_gun", "person"]
    found = read_boxes(yolo, 200, 100, names)
    assert [c for c, _ in found] == ["knife", "firearm"]  # the person is left out
    assert found[0][1] == pytest.approx((80, 30, 120, 70))
    assert found[1][1] == pytest.approx((20, 10, 60, 30))  # polygon -> its bounding box
    voc = tmp_path / "b.xml"
    voc.write_text("<annotation><object><name>Rifle</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                   "<xmax>30</xmax><ymax>40</ymax></bndbox></object><object><name>dog</name>"
                   "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox>"
                   "</object></annotation>")
    assert read_boxes(voc, 0, 0, []) == [("firearm", (1.0, 2.0, 30.0, 40.0))]
    assert read_boxes(None, 200, 100, names) == []


def write_dataset(root: Path) -> None:
    """Three 200x100 images: a knife at (50, 20, 100, 60), nothing, a pistol at (0, 0, 100, 50)."""
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("pistol\nknife\n")
    for name, label in [("a", "1 0.375 0.4 0.25 0.4\n"), ("b", ""), ("c", "0 0.25 0.25 0.5 0.5\n")]:
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), np.zeros((100, 200, 3), np.uint8))
        (root / "labels" / f"{name}.txt").write_text(label)


class FakeDetector:
    """Finds the knife on the first image and a false knife (0.3) on the second."""

    name = "fake@1"

    def detect(self, frames, scale, context=()):
        found = {0: [(0.9, (50.0, 20.0, 100.0, 60.0))], 1: [(0.3, (10.0, 10.0, 40.0, 40.0))]}
        return [Detection(t=0.0, label="knife", confidence=c, box=b, model=self.name,
                          frame_index=f.index) for f in frames for c, b in found.get(f.index, [])]


def test_evaluate_weapons_with_a_table_detector(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    images = evaluate.load_detection_dataset(tmp_path)
    assert [i.image.name for i in images] == ["a.jpg", "b.jpg", "c.jpg"]
    result = evaluate.evaluate_weapons(images, [FakeDetector()], operating_threshold=0.25)
    knife, firearm = result["classes"]["knife"], result["classes"]["firearm"]
    assert knife["ap50"] == pytest.approx(1.0)  # the true knife ranks first
    assert (knife["precision"], knife["recall"]) == (0.5, 1.0)  # plus one false knife
    assert (firearm["ap50"], firearm["precision"], firearm["recall"]) == (0.0, None, 0.0)
    assert result["negative_fpr"] == 1.0 and result["negatives"] == 1
    assert result["detectors"] == ["fake@1"] and result["ms_per_image"] >= 0
    strict = evaluate.evaluate_weapons(images, [FakeDetector()], operating_threshold=0.5)
    assert strict["negative_fpr"] == 0.0 and strict["classes"]["knife"]["precision"] == 1.0


def test_dataset_subset_is_seeded_and_subfolders_are_gathered(tmp_path: Path) -> None:
    write_dataset(tmp_path / "one")
    write_dataset(tmp_path / "two")
    everything = evaluate.load_detection_dataset(tmp_path)
    assert len(everything) == 6
    first = evaluate.load_detection_dataset(tmp_path, limit=3, seed=7)
    assert first == evaluate.load_detection_dataset(tmp_path, limit=3, seed=7)
    assert len(first) == 3 and all(isinstance(i, LabelledImage) for i in first)
    with pytest.raises(FileNotFoundError):
        evaluate.load_detection_dataset(tmp_path / "one" / "labels")


# ----------------------------------------------------------------------- the CLI, real models


def test_cli_eval_text(tmp_path: Path, capsys) -> None:
    path = tmp_path / "lines.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([
            ["I'm going to stab you when I catch you", 1],
            ["We will shoot him, he's dead", 1],
            ["The weather is lovely today", 0],
            ["We are going to the park after school", 0],
            ["That ting was peng, bless up mandem", 0],
        ])
    target = tmp_path / "text.json"
    assert run(["eval", "text", str(path), "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert {"precision", "recall", "f1", "false_positives", "false_negatives"} <= result.keys()
    assert result["lines"] == 5 and result["positives"] == 2
    assert result["tp"] == 2 and result["fp"] == 0  # explicit threats found, slang not flagged
    assert result["precision"] == result["recall"] == result["f1"] == 1.0
    assert "precision" in capsys.readouterr().out


def test_cli_eval_text_missing_file_is_bad_input(tmp_path: Path) -> None:
    assert run(["eval", "text", str(tmp_path / "absent.csv")]) == 2


def test_cli_eval_speech_on_two_files(shared_data: Path, tmp_path: Path) -> None:
    require_model("whisper-base")
    speech = shared_data / "speech"
    (tmp_path / "manifest.csv").write_text(
        "file,transcript_file\n"
        f"{speech / 'jfk.wav'},{speech / 'jfk.txt'}\n"
        f"{speech / 'fleurs-en-003.ogg'},{speech / 'fleurs-en-003.txt'}\n"
    )
    target = tmp_path / "speech.json"
    assert run(["eval", "speech", str(tmp_path), "--speech-model", "base",
                "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert result["model"].startswith("whisper-base@")
    assert [f["file"] for f in result["files"]] == [str(speech / "jfk.wav"),
                                                   str(speech / "fleurs-en-003.ogg")]
    assert result["wer"] < 0.15


def test_cli_eval_weapons_on_six_images(shared_data: Path, tmp_path: Path) -> None:
    from pipelines.scan import ScanOptions

    for name in ScanOptions().detectors:
        require_model(name)
    target = tmp_path / "weapons.json"
    assert run(["eval", "weapons", str(shared_data / "weapons"), "--limit", "6",
                "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert result["images"] == 6
    assert [d.split("@")[0] for d in result["detectors"]] == list(ScanOptions().detectors)
    knife = result["classes"]["knife"]
    assert knife["truths"] >= 6  # every image of this set holds a knife
    assert knife["ap50"] is not None and 0.0 <= knife["ap50"] <= 1.0
    assert result["negative_fpr"] is None  # this set has no weapon-free image
    assert result["ms_per_image"] > 0
    assert set(result["by_detector"]) == set(result["detectors"])


def test_cli_eval_weapons_unknown_detector_is_bad_input(shared_data: Path) -> None:
    assert run(["eval", "weapons", str(shared_data / "weapons"), "--limit", "1",
                "--detector", "no-such-model"]) == 2


@pytest.mark.slow
def test_cli_eval_videos_on_samples(repo_root: Path, tmp_path: Path, scan_models) -> None:
    target = tmp_path / "videos.json"
    assert run(["eval", "videos", str(repo_root / "samples"), "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert {"ap", "roc_auc", "interval_hit_rate", "flagged_precision"} <= result.keys()
    videos = {v["file"]: v for v in result["videos"]}
    assert len(videos) == len(json.loads((repo_root / "samples" / "labels.json").read_text()))
    assert result["roc_auc"] >= 0.8
    # The hallucination guard: a beat with no speech gives no transcript and no threat.
    assert videos["music_only.mp4"]["threat_hits"] == 0
    assert not videos["music_only.mp4"]["flagged"]
