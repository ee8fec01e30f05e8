"""`incitescan doctor` and the scan command's handling of missing optional parts, as a user
runs them: real subprocesses, the real ffmpeg/ffprobe/fpcalc (or a PATH without fpcalc), the
real weights cache (or an empty one), Redis and PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import PG_ADMIN


def incitescan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run `incitescan doctor --json`; its exit code and checks by name."""
    done = incitescan("doctor", "--json", *args, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    return done.returncode, checks


@pytest.fixture()
def path_without_fpcalc(tools_without_fpcalc: Path) -> str:
    """A PATH of one folder with links to the real ffmpeg and ffprobe only (and this Python)."""
    return f"{tools_without_fpcalc}{os.pathsep}{Path(sys.executable).parent}"


def test_doctor_reports_the_real_tool_versions_and_passes(tmp_path: Path) -> None:
    code, checks = doctor(env={"INCITESCAN_STORAGE": str(tmp_path)})
    assert code == 0, [c for c in checks.values() if c["state"] == "FAIL"]
    first_line = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                                check=True).stdout.splitlines()[0]
    version = re.search(r"version (\S+)", first_line)
    assert version and checks["ffmpeg"]["state"] == "ok"
    assert checks["ffmpeg"]["detail"].startswith(version.group(1))
    assert checks["fpcalc"]["state"] == "ok" and checks["ffprobe"]["state"] == "ok"
    models = [c for name, c in checks.items() if name.startswith("model ")]
    assert models and all(c["state"] == "ok" and "sha256" in c["detail"] for c in models)
    assert checks["redis"]["state"] == "off"  # no broker configured: not needed
    assert "GiB free" in checks["storage disk"]["detail"]


def test_doctor_table_names_the_fix_and_fails_only_for_required_parts(
        path_without_fpcalc: str) -> None:
    done = incitescan("doctor", env={"PATH": path_without_fpcalc})
    assert done.returncode == 0, done.stdout  # fpcalc is optional: scans run without it
    assert "fpcalc" in done.stdout and "libchromaprint-tools" in done.stdout
    assert "optional part(s) missing" in done.stdout
    code, checks = doctor("--require", "fingerprint", env={"PATH": path_without_fpcalc})
    assert code == 1 and checks["fpcalc"]["state"] == "FAIL"
    assert checks["fpcalc"]["fix"] == "apt-get install libchromaprint-tools"


def test_doctor_fails_without_any_model_and_says_how_to_fetch(tmp_path: Path) -> None:
    code, checks = doctor(env={"INCITESCAN_WEIGHTS_DIR": str(tmp_path / "empty")})
    models = [c for name, c in checks.items() if name.startswith("model ")]
    assert code == 1 and models
    assert all(c["state"] == "FAIL" and c["fix"].startswith("incitescan weights fetch ")
               for c in models)


@pytest.mark.services
def test_doctor_checks_the_configured_redis_and_postgresql() -> None:
    code, checks = doctor(env={"INCITESCAN_BROKER_URL": "redis://127.0.0.1:6379/0",
                               "INCITESCAN_DATABASE_URL": PG_ADMIN})
    assert checks["redis"]["state"] == "ok", checks["redis"]
    assert checks["database"]["state"] == "ok", checks["database"]
    dead_pg = re.sub(r"@127\.0\.0\.1:\d+", "@127.0.0.1:1", PG_ADMIN)
    code, checks = doctor(env={"INCITESCAN_BROKER_URL": "redis://127.0.0.1:1/0",
                               "INCITESCAN_DATABASE_URL": dead_pg})
    assert code == 1
    assert checks["redis"]["state"] == checks["database"]["state"] == "FAIL"
    assert "INCITESCAN_BROKER_URL" in checks["redis"]["fix"]


def test_doctor_reports_a_bad_setting_as_a_failed_check() -> None:
    code, checks = doctor(env={"INCITESCAN_LOCAL_WORKERS": "many"})
    assert code == 1 and checks["settings"]["state"] == "FAIL"
    assert checks["settings"]["detail"].startswith("INCITESCAN_LOCAL_WORKERS: ")
    assert checks["ffmpeg"]["state"] == "ok"  # the other checks still ran


@pytest.mark.slow
def test_scan_without_fpcalc_warns_once_and_reports_the_skip(
        path_without_fpcalc: str, threat_knife_video: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    done = incitescan("scan", str(threat_knife_video), str(threat_knife_video), "--quiet",
                      "--speech-model", "tiny.en", "--json", str(target),
                      env={"PATH": path_without_fpcalc})
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "fingerprint (fpcalc_missing)" in warnings[0]
    reports = json.loads(target.read_text())
    assert len(reports) == 2
    for report in reports:
        assert report["flagged"] and report["signal_scores"]["threat_speech"] > 0.5
        assert [s["code"] for s in report["skipped"]] == ["fpcalc_missing"]
        assert report["fingerprint"]["frames"] and not report["fingerprint"]["audio"]

    required = incitescan("scan", str(threat_knife_video), "--quiet", "--require", "fingerprint",
                          env={"PATH": path_without_fpcalc})
    assert required.returncode == 3
    assert required.stderr.strip() == ("incitescan: audio fingerprinting needs Chromaprint's "
                                       "fpcalc: apt-get install libchromaprint-tools (or scan "
                                       "with fingerprints off)")


def test_unknown_required_part_is_a_usage_error(threat_knife_video: Path) -> None:
    done = incitescan("scan", str(threat_knife_video), env={"INCITESCAN_REQUIRE": "ocr"})
    assert done.returncode == 2 and "cannot require 'ocr'" in done.stderr
    assert "Traceback" not in done.stderr
