"""The service's bank of removed videos, on SQLite and PostgreSQL: a reviewer's "remove" puts the
scan's real PDQ hashes in the bank, a re-upload variant made with ffmpeg is then reported as a
match of that scan (with segments and a raised score), unrelated uploads are not, banks go in
and out as CSV through the CLI, and a real local pool scan answers the re-upload early."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipelines.fusion import FusionOptions
from pipelines.matching import BankVideo, HashBank, fingerprint_file
from pipelines.types import KnownMatch, MatchedSegment
from service.bank import with_known_matches
from service.cli import run as cli
from service.models import AuditEntry, BankedHash
from tests.pipelines.conftest import require_model
from tests.pipelines.variants import make_variant

from .conftest import Api, fake_report, start_api, unique_copy


@pytest.fixture(scope="module")
def drill_copy(threat_gun_drill_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """threat_gun_drill with a random trailing box: a new upload with the same pictures."""
    return unique_copy(threat_gun_drill_video, tmp_path_factory.mktemp("drill"))


@pytest.fixture(scope="module")
def clip(threat_gun_drill_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s cut from the middle of threat_gun_drill (7-17 s), re-encoded by ffmpeg."""
    return make_variant(threat_gun_drill_video, "clip", tmp_path_factory.mktemp("clip"))


def report_for(video: Path, risk: float = 0.1) -> dict[str, Any]:
    """A finished report of `video` with its real frame hashes and audio fingerprint (the
    rest, as `fake_report`, stands for the detection and speech stages)."""
    hashed = fingerprint_file(video)
    report = fake_report(risk, segments=0)
    report.update(signal_scores={"weapon": risk, "threat_speech": 0.0, "co_occurrence": 0.0},
                  reasons=[], settings={"fps": 1.0}, known_matches=[],
                  fingerprint={"frames": [asdict(f) for f in hashed.frames],
                               "audio": [asdict(a) for a in hashed.audio]})
    return json.loads(json.dumps(report))  # plain JSON, as an executor delivers it


def _finished(api: Api, video: Path, tmp_path: Path, report: dict[str, Any]) -> str:
    response = api.upload(unique_copy(video, tmp_path))
    assert response.status_code == 202, response.text
    scan_id = response.json()["id"]
    api.service.finish(scan_id, {"report": report})
    return scan_id


def test_removed_scan_is_banked_and_its_reupload_matches(
        api: Api, drill_copy: Path, clip: Path, kitchen_benign_video: Path,
        tmp_path: Path) -> None:
    original = _finished(api, drill_copy, tmp_path, report_for(drill_copy, 0.8))
    decided = api.client.post(f"/v1/scans/{original}/decisions", headers=api.auth("reviewer"),
                              json={"action": "remove", "reason": "drill threat"})
    assert decided.status_code == 201, decided.text
    banked = api.service.bank.current().videos[original]
    assert banked.label == "removed by reviewer: drill threat" and len(banked.frames) == 24
    assert banked.audio
    with api.service.sessions() as session:
        assert session.scalars(select(AuditEntry.action).where(
            AuditEntry.target == f"scan:{original}")).all()[-1] == "bank.add"
        stored = session.scalars(select(BankedHash).where(BankedHash.video_id == original)).all()
    assert len(stored) == 24 * 5

    reupload = _finished(api, clip, tmp_path, report_for(clip, 0.1))
    view = api.client.get(f"/v1/scans/{reupload}", headers=api.auth("uploader")).json()
    assert view["known_match"]["video_id"] == original
    assert view["flagged"] and view["risk_score"] >= 0.9
    assert any(s["signals"] == ["known_content"] for s in view["segments"])
    report = api.client.get(f"/v1/scans/{reupload}/report", headers=api.auth("uploader")).json()
    (match,) = report["known_matches"]
    assert match["frame_share"] == 1.0 and match["audio_score"] >= 0.5
    assert match["segments"][0]["bank_start"] == pytest.approx(7.0, abs=1.0)
    assert report["signal_scores"]["known_content"] >= 0.9
    assert report["reasons"][0].startswith(f"known content: matches banked video {original}")

    unrelated = _finished(api, kitchen_benign_video, tmp_path, report_for(kitchen_benign_video))
    view = api.client.get(f"/v1/scans/{unrelated}", headers=api.auth("uploader")).json()
    assert view["known_match"] is None and view["risk_score"] == 0.1 and not view["flagged"]


def test_other_decisions_bank_nothing(api: Api, clip: Path, tmp_path: Path) -> None:
    scan_id = _finished(api, clip, tmp_path, report_for(clip))
    for action in ("allow", "restrict", "escalate"):
        made = api.client.post(f"/v1/scans/{scan_id}/decisions", headers=api.auth("reviewer"),
                               json={"action": action, "reason": "checked"})
        assert made.status_code == 201
    assert scan_id not in api.service.bank.current().videos


def test_bank_import_export_through_the_cli(api: Api, database_url: str, drill_copy: Path,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCITESCAN_DATABASE_URL", database_url)
    partner = tmp_path / "partner.csv"
    video = fingerprint_file(drill_copy)
    with partner.open("w", encoding="utf-8", newline="") as handle:
        HashBank([BankVideo("partner-42", "partner list", video.frames, video.audio)]
                 ).write_csv(handle)
    assert cli(["bank", "import", str(partner)]) == 0
    assert "partner-42" in api.service.bank.current().videos  # the running service sees it
    exported = tmp_path / "export.csv"
    assert cli(["bank", "export", str(exported)]) == 0
    again = HashBank.from_path(exported).videos["partner-42"]
    assert again.frames == video.frames and again.audio == video.audio
    assert again.label == "partner list"
    assert cli(["bank", "remove", "partner-42"]) == 0
    assert "partner-42" not in api.service.bank.current().videos
    assert cli(["bank", "remove", "partner-42"]) == 2
    broken = tmp_path / "broken.csv"
    broken.write_text("hash\nabc\n", encoding="utf-8")
    assert cli(["bank", "import", str(broken)]) == 2


@pytest.mark.slow
def test_local_pool_scan_answers_a_reupload_before_it_ends(
        threat_gun_drill_video: Path, tmp_path: Path) -> None:
    """A real scan in the local process pool reads the bank from the database and records the
    match while it is still running (the fast path); the finished report has it too."""
    for name in ("yolo11n-coco-int8", "basegun-firearm"):
        require_model(name)
    slower = make_variant(threat_gun_drill_video, "slower", tmp_path)
    with start_api(f"sqlite:///{tmp_path / 'bank.db'}", tmp_path / "storage", local_workers=1,
                   speech_model="none") as api:
        original = _finished(api, threat_gun_drill_video, tmp_path,
                             report_for(threat_gun_drill_video, 0.8))
        api.client.post(f"/v1/scans/{original}/decisions", headers=api.auth("reviewer"),
                        json={"action": "remove", "reason": "drill threat"})
        response = api.upload(slower)
        assert response.status_code == 202
        scan_id = response.json()["id"]
        seen_running = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            view = api.client.get(f"/v1/scans/{scan_id}", headers=api.auth("uploader")).json()
            if view["status"] == "running" and view["known_match"] and seen_running is None:
                seen_running = view
            if view["status"] in ("done", "failed"):
                break
            time.sleep(0.05)
    assert view["status"] == "done", view
    assert seen_running is not None, "the match was not reported while the scan ran"
    assert seen_running["known_match"]["video_id"] == original
    assert view["known_match"]["video_id"] == original and view["flagged"]
    assert view["known_match"]["matched_frames"] >= 20


def test_a_minimal_report_is_raised_like_a_scan_would_be() -> None:
    """Reports may omit signal_scores, threshold and reasons (see check_report): the match
    still raises them, keeping the report's own segments."""
    match = KnownMatch(video_id="v1", label="removed", score=0.9, frame_share=1.0,
                       matched_frames=10, matched_seconds=10.0, speed=1.0, offset=0.0,
                       audio_score=None, segments=(MatchedSegment(0.0, 10.0, 3.0, 13.0, 10, 2.0),),
                       reason="known content: matches banked video v1")
    raised = with_known_matches(fake_report(0.3), [match], FusionOptions())
    assert raised["risk_score"] == pytest.approx(0.93) and raised["flagged"]
    assert raised["signal_scores"]["known_content"] == 0.9
    assert [s["signals"] for s in raised["flagged_segments"]] == [
        ["known_content"], ["weapon", "threat_speech"]]
    assert raised["known_matches"][0]["segments"][0]["bank_start"] == 3.0


def test_cli_banks_a_video_and_a_report_then_scan_matches_a_reupload(
        threat_gun_drill_video: Path, clip: Path, tmp_path: Path) -> None:
    """`incitescan bank add` from a video and from a scan's report, then `scan --bank`
    (vision and audio fingerprint only) names the banked video, early and in the summary."""
    for name in ("yolo11n-coco-int8", "basegun-firearm"):
        require_model(name)
    bank_file = tmp_path / "bank.csv"
    added = subprocess.run(
        [sys.executable, "-m", "service.cli", "bank", "add", "--bank", str(bank_file),
         "--label", "removed in test", str(threat_gun_drill_video)],
        capture_output=True, text=True, timeout=300, check=False)
    assert added.returncode == 0, added.stderr
    assert "banked threat_gun_drill.mp4: 24 frames, 1 audio fingerprint(s)" in added.stdout
    scanned = subprocess.run(
        [sys.executable, "-m", "service.cli", "scan", "-q", "--speech-model", "none", "--bank",
         str(bank_file), "--json", str(tmp_path / "clip.json"), str(clip)],
        capture_output=True, text=True, timeout=600, check=False)
    assert scanned.returncode == 0, scanned.stderr
    assert "(early answer; the scan goes on)" in scanned.stderr
    assert ("KNOWN CONTENT: known content: matches banked video threat_gun_drill.mp4 (removed in"
            " test)") in scanned.stdout
    assert "FLAGGED" in scanned.stdout
    # The clip's own report banks it too, under its sha256.
    again = subprocess.run(
        [sys.executable, "-m", "service.cli", "bank", "add", "--bank", str(bank_file),
         str(tmp_path / "clip.json")], capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "clip.json").read_text())
    assert set(HashBank.from_path(bank_file).videos) == {"threat_gun_drill.mp4",
                                                          report["video"]["sha256"]}
