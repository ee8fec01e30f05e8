"""Optional parts of a scan (pipelines/optional.py) missing for real: Chromaprint's fpcalc taken
off PATH (a folder holding only ffmpeg and ffprobe), the speech model's or every model's
weights absent from the weights cache. The scan runs without the part and its report says so
in `skipped`; `require` turns the same absence into the part's own error."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.errors import ReportInvalid, WeightsMissing
from pipelines.matching import FingerprintUnavailable
from pipelines.optional import ExtraMissing, need_module, parse_require, usable_options
from pipelines.report import check_report, to_dict
from pipelines.scan import ScanOptions, scan
from pipelines.weights import load_manifest, weights_dir

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "report-schema.json"
FAST = ScanOptions(speech_model="tiny.en")


@pytest.fixture()
def without_fpcalc(tools_without_fpcalc: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one folder with links to the real ffmpeg and ffprobe, and no fpcalc."""
    folder = tools_without_fpcalc
    monkeypatch.setenv("PATH", str(folder))
    assert shutil.which("fpcalc") is None
    return folder


@pytest.fixture()
def weights_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`weights_without(*names)`: a weights cache holding links to the real model folders,
    except those of `names`."""
    real = weights_dir()
    manifest = load_manifest()

    def make(*names: str) -> Path:
        cache = tmp_path / "weights"
        cache.mkdir()
        for spec in manifest.values():
            if spec.name not in names and (real / spec.folder).is_dir():
                (cache / spec.folder).symlink_to(real / spec.folder)
        monkeypatch.setenv("INCITESCAN_WEIGHTS_DIR", str(cache))
        return cache

    return make


@pytest.mark.parametrize(("text", "parts"), [
    ("", ()),
    ("fingerprint", ("fingerprint",)),
    (" speech , fingerprint,speech", ("speech", "fingerprint")),
    ("all", ("fingerprint", "speech", "detectors")),
])
def test_require_names_parts(text: str, parts: tuple[str, ...]) -> None:
    assert parse_require(text) == parts


@pytest.mark.parametrize("text", ["fingerprints", "ocr", "speech,weapons"])
def test_require_refuses_unknown_parts_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="fingerprint, speech, detectors"):
        parse_require(text)


def test_everything_installed_leaves_the_options_alone() -> None:
    assert usable_options(FAST) == (FAST, ())


@pytest.mark.slow
def test_scan_without_fpcalc_scores_and_records_frames_only_matching(
        without_fpcalc: Path, threat_knife_video: Path) -> None:
    result = scan(threat_knife_video, FAST)
    assert [(s.part, s.code) for s in result.skipped] == [("fingerprint", "fpcalc_missing")]
    assert "frame hashes only" in result.skipped[0].message
    assert "libchromaprint-tools" in result.skipped[0].message
    # The main job ran: speech heard and scored, frames hashed for matching; no audio print.
    assert result.fusion.flagged and result.fusion.signal_scores.threat_speech > 0.5
    assert result.threat_hits and result.transcript is not None
    assert len(result.frame_hashes) == result.frames_sampled > 0
    assert result.audio_fingerprints == ()
    report = to_dict(result)
    assert report["settings"]["audio_fingerprint"] is False
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert check_report(report)["skipped"][0]["code"] == "fpcalc_missing"


def test_required_fingerprint_fails_with_its_own_error_before_decoding(
        without_fpcalc: Path, threat_knife_video: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(FingerprintUnavailable, match="apt-get install libchromaprint-tools"):
        scan(threat_knife_video, replace(FAST, require=("fingerprint",)))
    assert time.perf_counter() - started < 5  # refused up front, not after the detectors ran


def test_fingerprints_off_need_no_fpcalc(without_fpcalc: Path) -> None:
    options = replace(FAST, fingerprint=False, require=("fingerprint",))
    assert usable_options(options) == (options, ())


@pytest.mark.slow
def test_scan_without_speech_weights_still_detects_weapons(
        weights_without, threat_gun_drill_video: Path) -> None:  # type: ignore[no-untyped-def]
    weights_without("whisper-base")
    result = scan(threat_gun_drill_video, replace(ScanOptions(), fps=0.5))
    assert [(s.part, s.code) for s in result.skipped] == [("speech", "weights_missing")]
    assert "incitescan weights fetch whisper-base" in result.skipped[0].message
    assert result.transcript is None and "speech" not in result.models
    assert result.fusion.signal_scores.weapon > 0  # the detectors ran on the pistol photos
    assert to_dict(result)["settings"]["speech_model"] == ""
    with pytest.raises(WeightsMissing, match="whisper-base"):
        scan(threat_gun_drill_video, replace(ScanOptions(), require=("speech",)))


def test_a_missing_detector_is_left_out_and_named(weights_without) -> None:  # type: ignore[no-untyped-def]
    weights_without("basegun-firearm")
    options, skipped = usable_options(ScanOptions())
    assert options.detectors == ("yolo11n-coco-int8",)
    assert [(s.part, s.code) for s in skipped] == [("detector:basegun-firearm", "weights_missing")]
    with pytest.raises(WeightsMissing, match="basegun-firearm"):
        usable_options(replace(ScanOptions(), require=("detectors",)))


def test_no_model_at_all_is_no_scan(weights_without, threat_knife_video: Path) -> None:  # type: ignore[no-untyped-def]
    weights_without(*load_manifest())
    with pytest.raises(WeightsMissing, match="incitescan weights fetch"):
        scan(threat_knife_video, ScanOptions())


def test_old_reports_stay_valid_and_skipped_entries_are_checked() -> None:
    old = {"schema_version": "1.0", "risk_score": 0.2, "flagged": False,
           "video": {"path": "x.mp4"}, "flagged_segments": []}
    assert check_report(dict(old)) == old
    with pytest.raises(ReportInvalid, match=r"skipped\[0\] has no 'code'"):
        check_report({**old, "skipped": [{"part": "speech", "message": "x"}]})


def test_missing_python_package_names_the_extra() -> None:
    with pytest.raises(ExtraMissing, match=r"pip install 'incitescan\[eval\]'") as caught:
        need_module("incitescan_no_such_module", extra="eval", purpose="this check")
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message
    assert need_module("json", extra="eval", purpose="x") is json

