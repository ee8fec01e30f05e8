"""The `incitescan` command as a user runs it: real subprocesses, exit codes, messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.conftest import require_model


def incitescan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_scan_prints_a_summary_and_writes_the_report(threat_knife_video: Path,
                                                     tmp_path: Path) -> None:
    for name in ("whisper-tiny.en", "yolo11n-coco-int8", "basegun-firearm"):
        require_model(name)
    report_path = tmp_path / "report.json"
    done = incitescan("scan", str(threat_knife_video), "--speech-model", "tiny.en", "--json",
                      str(report_path), "--evidence-dir", str(tmp_path / "ev"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "threat_knife.mp4: risk" in done.stdout and "FLAGGED" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["flagged"] and report["models"]["speech"].startswith("whisper-tiny.en@")


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is a text file renamed to .mp4\n")
    done = incitescan("scan", str(bad), "--quiet")
    assert done.returncode == 2
    assert "notes.mp4" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_missing_weights_exit_3_and_name_the_fix(tmp_path: Path, threat_knife_video: Path
                                                  ) -> None:
    done = incitescan("scan", str(threat_knife_video), "--quiet",
                      env={"INCITESCAN_WEIGHTS_DIR": str(tmp_path / "empty")})
    assert done.returncode == 3
    assert "incitescan weights fetch" in done.stderr and "Traceback" not in done.stderr


def test_weights_list_shows_each_model_state(tmp_path: Path) -> None:
    done = incitescan("weights", "list", env={"INCITESCAN_WEIGHTS_DIR": str(tmp_path)})
    assert done.returncode == 3  # default models missing
    lines = done.stdout.splitlines()
    assert any(line.startswith("missing") and "whisper-base@" in line for line in lines)


def test_unreachable_broker_is_one_line_not_a_traceback() -> None:
    dead = "redis://127.0.0.1:1/0"  # port 1: nothing listens there
    done = incitescan("status", "some-id", env={"INCITESCAN_BROKER_URL": dead,
                                                "INCITESCAN_RESULT_BACKEND": dead})
    assert done.returncode == 1
    assert "Connection refused" in done.stderr and "Traceback" not in done.stderr


def _short_video(target: Path, seconds: float) -> Path:
    """A valid video of `seconds` (under one sampling interval at 1 fps), with a tone."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", f"sine=d={seconds}",
                    "-t", str(seconds), "-pix_fmt", "yuv420p", "-shortest", os.fsencode(target)],
                   check=True)
    return target


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.1, 0.4])
def test_a_very_short_video_with_a_non_utf8_name_is_scanned(tmp_path: Path,
                                                            seconds: float) -> None:
    # The name is bytes that are not UTF-8: it used to raise UnicodeEncodeError (a traceback)
    # when the report was written, and a 0.1-0.4 s video gave "no frame could be decoded".
    video = _short_video(Path(os.fsdecode(bytes(tmp_path) + b"/clip\xff\xfe.mp4")), seconds)
    report_path = tmp_path / "report.json"
    done = incitescan("scan", str(video), "--speech-model", "none", "--quiet", "--json",
                      str(report_path), "--evidence-dir", str(tmp_path / "ev"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "clip\ufffd\ufffd.mp4: risk" in done.stdout
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["video"]["duration"] == pytest.approx(seconds, abs=0.05)
    assert report["video"]["path"].endswith("clip\ufffd\ufffd.mp4")


def test_a_failed_scan_leaves_an_existing_report_alone(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    report_path.write_text('{"risk_score": 0.9}\n')
    bad = Path(os.fsdecode(bytes(tmp_path) + b"/notes\xff.mp4"))
    bad.write_text("this is a text file renamed to .mp4\n")
    done = incitescan("scan", str(bad), "--speech-model", "none", "--quiet", "--json",
                      str(report_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert report_path.read_text() == '{"risk_score": 0.9}\n'  # it used to become []
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "notes\ufffd.mp4" in lines[0]
    assert lines[1].startswith("incitescan: no report written to")
