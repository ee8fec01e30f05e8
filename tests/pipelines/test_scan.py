"""End-to-end scans of the sample clips with the default models, and the JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import SCHEMA_VERSION, InvalidMedia, ScanOptions, scan, to_dict
from pipelines.report import STABLE_FIELDS, summary, write_json


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture(scope="module")
def threat_report(scan_models, threat_speech_only_video: Path, tmp_path_factory) -> dict:
    evidence = tmp_path_factory.mktemp("evidence")
    return to_dict(scan(threat_speech_only_video, ScanOptions(), models=scan_models,
                        evidence_dir=evidence))


@pytest.mark.slow
def test_threatening_sample_flags_its_true_intervals(threat_report: dict,
                                                     sample_labels: dict) -> None:
    truth = sample_labels["threat_speech_only.mp4"]["threat_speech"]
    segments = threat_report["flagged_segments"]
    assert threat_report["flagged"] and threat_report["risk_score"] >= threat_report["threshold"]
    for interval in truth:
        assert any(overlaps(interval, (s["start"], s["end"])) for s in segments), interval
    for s in segments:
        assert "threat_speech" in s["signals"] and s["reasons"]
        assert all(h["rule"] and h["meaning"] for h in s["threat_hits"])


@pytest.mark.slow
def test_benign_sample_scores_below_threshold(scan_models, benign_street_video: Path) -> None:
    report = to_dict(scan(benign_street_video, ScanOptions(), models=scan_models))
    assert not report["flagged"]
    assert report["risk_score"] < report["threshold"]
    assert report["flagged_segments"] == []
    assert report["transcript"]["segments"], "the benign clip has speech that must be heard"
    assert report["context_detections"].get("person", 0) > 0


@pytest.mark.slow
def test_report_has_stable_fields_models_and_evidence(threat_report: dict) -> None:
    assert set(STABLE_FIELDS) <= set(threat_report)
    assert threat_report["schema_version"] == SCHEMA_VERSION
    models = threat_report["models"]
    assert models["speech"].startswith("whisper-base@") and models["lexicon"]
    assert {m.split("@")[0] for k, m in models.items() if k.startswith("detector")} == {
        "yolo11n-coco-int8", "basegun-firearm"}
    assert threat_report["video"]["path"] == "threat_speech_only.mp4"
    assert threat_report["settings"]["fps"] == 1.0
    assert threat_report["frames_sampled"] == pytest.approx(threat_report["video"]["duration"],
                                                            abs=1.5)
    json.dumps(threat_report)  # plain JSON, no custom encoder
    text = summary(threat_report)
    assert "FLAGGED" in text and "threat" in text


@pytest.mark.slow
def test_weapon_evidence_thumbnails_are_saved(scan_models, threat_gun_drill_video: Path,
                                              tmp_path: Path) -> None:
    result = scan(threat_gun_drill_video, ScanOptions(), models=scan_models,
                  evidence_dir=tmp_path)
    weapons = [d for d in result.detections if d.label in ("firearm", "knife")]
    assert weapons, "the drill sample shows large guns that basegun finds"
    assert result.evidence and all(Path(e.path).is_file() for e in result.evidence)
    assert {e.frame_index for e in result.evidence} <= {d.frame_index for d in weapons}


def test_corrupt_input_is_refused_before_models_run(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(InvalidMedia, match="clip.mp4"):
        scan(bad, ScanOptions(), models=None)


def test_write_json_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    write_json({"schema_version": SCHEMA_VERSION}, target)
    assert json.loads(target.read_text()) == {"schema_version": SCHEMA_VERSION}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


@pytest.mark.slow
def test_report_matches_the_documented_schema(threat_report: dict, repo_root: Path) -> None:
    import jsonschema

    schema = json.loads((repo_root / "docs" / "report-schema.json").read_text())
    jsonschema.validate(threat_report, schema)
    broken = dict(threat_report, risk_score=1.5)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


class CountingDetector:
    """A real detector that counts the frames it is asked to look at."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.name = detector.name
        self.frames = 0

    def detect(self, frames, scale, context=()):
        self.frames += len(frames)
        return self.detector.detect(frames, scale, context)


def test_still_frames_reuse_the_last_check_and_changes_are_checked() -> None:
    import numpy as np

    from pipelines.scan import is_still, thumbnail

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 200, (360, 640, 3), dtype=np.uint8)
    noisy = np.clip(picture.astype(int) + rng.integers(-8, 9, picture.shape), 0, 255)
    small_change = picture.copy()
    small_change[100:120, 300:320] = 255  # a 20x20 object enters: 3 % of the width
    options = ScanOptions()
    checked = (10.0, thumbnail(picture), [])
    assert is_still(checked, 11.0, thumbnail(noisy.astype(np.uint8)), options)
    assert not is_still(checked, 11.0, thumbnail(small_change), options)
    assert not is_still(checked, 10.0 + options.still_reuse_s, thumbnail(picture), options)
    assert not is_still(checked, 11.0, thumbnail(picture), ScanOptions(still_reuse_s=0))


@pytest.mark.slow
def test_still_shot_reuse_finds_what_checking_every_frame_finds(
        scan_models, threat_gun_drill_video: Path) -> None:
    from pipelines.scan import ScanModels

    results, counts = [], []
    for reuse in (0.0, ScanOptions().still_reuse_s):
        detectors = [CountingDetector(d) for d in scan_models.detectors]
        options = ScanOptions(speech_model="", still_reuse_s=reuse)
        results.append(scan(threat_gun_drill_video, options,
                            models=ScanModels(detectors=detectors, transcriber=None)))
        counts.append(detectors[0].frames)
    every, reused = results
    assert counts[0] == every.frames_sampled == reused.frames_sampled
    assert counts[1] < counts[0] * 0.6, "the sample is still photos: most frames are reused"
    assert reused.fusion.flagged == every.fusion.flagged
    assert reused.fusion.risk_score == pytest.approx(every.fusion.risk_score, abs=0.05)
    labels = {(round(d.t), d.label) for d in every.detections if d.confidence >= 0.5}
    found = {(round(d.t), d.label) for d in reused.detections}
    assert len(labels - found) <= len(labels) // 10, "a reused check misses a confident weapon"
