"""The `incitescan worker / submit / status / result` commands against a real Redis and a
worker started with `incitescan worker`: ids one per line, exit 4 while a scan is unfinished,
the report JSON and exit 0 when done, exit 2 and the reason when it failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import EXIT_BAD_INPUT, EXIT_NOT_READY, EXIT_OK, run
from worker import client
from worker.config import WorkerSettings

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_submit_status_and_result_commands(
        start_worker, worker_config: WorkerSettings, threat_knife_video: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INCITESCAN_BROKER_URL", worker_config.broker_url)
    monkeypatch.setenv("INCITESCAN_RESULT_BACKEND", worker_config.result_backend)
    monkeypatch.setenv("INCITESCAN_STORAGE", str(worker_config.storage))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all")

    assert run(["submit", str(threat_knife_video), str(corrupt), "--fps", "0.25",
                "--speech-model", "none"]) == EXIT_OK
    good, bad = capsys.readouterr().out.split()
    assert run(["result", good]) == EXIT_NOT_READY  # no worker yet
    assert "queued" in capsys.readouterr().err
    assert run(["status", good]) == EXIT_OK
    assert capsys.readouterr().out.split()[:2] == [good, "queued"]

    start_worker("cli", via_cli=True)
    final = client.wait([good, bad], timeout=240, config=worker_config)
    assert final[good].state == "done" and final[bad].state == "failed"

    assert run(["result", good]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["video"]["path"] == "threat_knife.mp4"
    assert report["settings"]["fps"] == 0.25 and report["transcript"] is None
    assert run(["result", bad]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "corrupt.mp4" in error and "invalid_media" in error
    assert run(["status", good, bad]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{good} done 100%") and lines[1].startswith(f"{bad} failed")
    assert run(["status", "no-such-scan"]) == EXIT_BAD_INPUT
    assert run(["submit", str(tmp_path / "missing.mp4")]) == EXIT_BAD_INPUT
