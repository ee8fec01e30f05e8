"""A Celery worker on a machine without Chromaprint's fpcalc (its PATH holds only ffmpeg and
ffprobe): the distributed scan still runs, matching uses frame hashes only and the report lists
the skipped audio fingerprint, as an in-process scan's does; a scan that requires the
fingerprint fails with `fpcalc_missing`."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.scan import ScanOptions
from worker import client
from worker.config import WorkerSettings

from .test_distributed import watch

pytestmark = [pytest.mark.services, pytest.mark.slow]
OPTIONS = ScanOptions(fps=0.5, speech_model="tiny.en", detectors=("yolo11n-coco-int8",))


def test_a_worker_without_fpcalc_scans_and_reports_the_skip(
        start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        tools_without_fpcalc: Path) -> None:
    folder = tools_without_fpcalc
    start_worker("nofpcalc", env={"PATH": f"{folder}{os.pathsep}{Path(sys.executable).parent}"})
    scan_id = client.submit(threat_knife_video, OPTIONS, config=worker_config)
    required = client.submit(threat_knife_video, replace(OPTIONS, require=("fingerprint",)),
                             config=worker_config)
    final, _ = watch([scan_id, required], worker_config, timeout=240)
    assert final[scan_id].state == "done", final[scan_id]
    report = client.result(scan_id, config=worker_config)
    assert [(s["part"], s["code"]) for s in report["skipped"]] == [
        ("fingerprint", "fpcalc_missing")]
    assert report["flagged"] and report["signal_scores"]["threat_speech"] > 0.5
    assert report["fingerprint"]["frames"] and report["fingerprint"]["audio"] == []
    assert final[required].state == "failed"
    assert final[required].error_code == "fpcalc_missing"
    assert "libchromaprint-tools" in (final[required].error_message or "")
