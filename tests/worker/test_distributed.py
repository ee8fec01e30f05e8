"""Distributed scans on a real Redis and real `celery worker` processes (never eager mode): the
report equals the in-process one, a worker killed mid-scan loses nothing, many scans finish on
two workers while a corrupt file fails alone, workers ride out a Redis restart, and a
fast-track scan jumps the queue. Options are the light ones (Whisper tiny.en, few frames)
wherever the behaviour under test does not depend on the analysis."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from pipelines.report import VOLATILE_FIELDS, to_dict
from pipelines.scan import ScanOptions, scan
from worker import client
from worker.client import ScanStatus
from worker.config import WorkerSettings

pytestmark = [pytest.mark.services, pytest.mark.slow]

# threat_knife is 20 s: three chunks of 8 s, so six chunk tasks (frames + speech per chunk).
CHUNKED = ScanOptions(fps=0.5, speech_model="tiny.en", chunk_s=8.0)
# For behaviour that does not depend on the analysis: few frames, one detector, no speech.
LIGHT = ScanOptions(fps=0.25, speech_model="", detectors=("yolo11n-coco-int8",))


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its volatile fields, as JSON data."""
    data: dict[str, Any] = json.loads(json.dumps(report))
    for name in VOLATILE_FIELDS:
        data.pop(name, None)
    return data


def watch(scan_ids: list[str], config: WorkerSettings, timeout: float
          ) -> tuple[dict[str, ScanStatus], list[ScanStatus]]:
    """Poll the scans until all are finished or `timeout` passes, riding out Redis outages;
    returns the last status of each and every status seen."""
    deadline = time.monotonic() + timeout
    seen: list[ScanStatus] = []
    last: dict[str, ScanStatus] = {}
    while time.monotonic() < deadline:
        try:
            last = {i: client.status(i, config=config) for i in scan_ids}
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.5)
            continue
        seen += last.values()
        if all(s.finished for s in last.values()):
            break
        time.sleep(0.25)
    return last, seen


def until(condition: Any, timeout: float, what: str) -> None:
    """Wait for `condition()` to be true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def in_process_report(threat_knife_video: Path, worker_models: None) -> dict[str, Any]:
    """`incitescan scan` of threat_knife with the CHUNKED options, in this process."""
    return comparable(to_dict(scan(threat_knife_video, CHUNKED)))


@pytest.fixture
def light_videos(threat_knife_video: Path, threat_gun_drill_video: Path,
                 threat_speech_only_video: Path, benign_street_video: Path,
                 benign_slang_video: Path, music_only_video: Path,
                 weapon_silent_video: Path) -> list[Path]:
    """Seven committed sample clips of 15-24 s."""
    return [threat_knife_video, threat_gun_drill_video, threat_speech_only_video,
            benign_street_video, benign_slang_video, music_only_video, weapon_silent_video]


def test_distributed_report_equals_the_in_process_report(
        start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        in_process_report: dict[str, Any]) -> None:
    start_worker("solo")
    scan_id = client.submit(threat_knife_video, CHUNKED, config=worker_config)
    final, seen = watch([scan_id], worker_config, timeout=240)
    assert final[scan_id].state == "done", final[scan_id]
    assert final[scan_id].parts_total == 6 and final[scan_id].parts_done == 6
    running = [s.progress for s in seen if s.state == "running"]
    assert any(0 < p < 100 for p in running), "progress is readable while the scan runs"
    assert running == sorted(running)
    assert comparable(client.result(scan_id, config=worker_config)) == in_process_report


def test_a_worker_killed_mid_scan_loses_nothing(
        start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        in_process_report: dict[str, Any]) -> None:
    doomed = start_worker("doomed")
    scan_id = client.submit(threat_knife_video, CHUNKED, config=worker_config)
    until(lambda: "incitescan.detect_chunk[" in doomed.output(), 60, "a chunk task to start")
    doomed.kill()  # SIGKILL to the worker and its pool process, in the middle of that task
    log = doomed.output()
    killed = log.split("incitescan.detect_chunk[", 1)[1].split("]", 1)[0]
    assert f"incitescan.detect_chunk[{killed}] succeeded" not in log
    rescuer = start_worker("rescuer")
    final, _ = watch([scan_id], worker_config, timeout=240)
    assert final[scan_id].state == "done", final[scan_id]
    assert final[scan_id].parts_done == final[scan_id].parts_total == 6
    assert comparable(client.result(scan_id, config=worker_config)) == in_process_report
    # The killed task was redelivered to the rescuer after the visibility timeout.
    assert f"incitescan.detect_chunk[{killed}] succeeded" in rescuer.output()
    assert client.dead_letters(config=worker_config) == []


def test_twenty_scans_finish_on_two_workers_and_a_corrupt_file_fails_alone(
        start_worker, worker_config: WorkerSettings, light_videos: list[Path],
        tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000)
    start_worker("one")
    start_worker("two")
    submitted: dict[str, Path] = {}
    for i in range(20):
        video = corrupt if i == 9 else light_videos[i % len(light_videos)]
        # A distinct threshold per scan gives each its own result key: all 19 really run.
        options = replace(LIGHT, fusion=replace(LIGHT.fusion, threshold=0.5 + i / 1000))
        submitted[client.submit(video, options, config=worker_config)] = video
    final, _ = watch(list(submitted), worker_config, timeout=420)
    bad = [i for i, video in submitted.items() if video == corrupt]
    assert final[bad[0]].state == "failed"
    assert final[bad[0]].error_code == "invalid_media"
    assert "corrupt.mp4" in (final[bad[0]].error_message or "")
    with pytest.raises(client.ScanFailed, match="corrupt.mp4"):
        client.result(bad[0], config=worker_config)
    good = [i for i in submitted if i not in bad]
    assert [final[i].state for i in good] == ["done"] * 19
    for scan_id in good:
        report = client.result(scan_id, config=worker_config)
        assert report["video"]["path"] == submitted[scan_id].name
    letters = client.dead_letters(config=worker_config)
    assert [(d["scan_id"], d["code"]) for d in letters] == [(bad[0], "invalid_media")]


def test_workers_reconnect_after_a_redis_restart(
        redis_server, start_worker, worker_config: WorkerSettings,
        light_videos: list[Path]) -> None:
    workers = [start_worker("one"), start_worker("two")]
    options = replace(LIGHT, chunk_s=8.0)  # 2-3 chunks per clip
    scan_ids = [client.submit(v, options, config=worker_config) for v in light_videos]
    until(lambda: any(client.status(i, config=worker_config).parts_done for i in scan_ids),
          120, "the first chunk to finish")
    redis_server.restart(down_for=3.0)
    final, _ = watch(scan_ids, worker_config, timeout=300)
    assert [final[i].state for i in scan_ids] == ["done"] * len(scan_ids), final
    assert all(w.process.poll() is None for w in workers), "workers survive the outage"


def test_a_fast_track_scan_jumps_the_queue(
        start_worker, worker_config: WorkerSettings, light_videos: list[Path]) -> None:
    normal = [client.submit(v, LIGHT, config=worker_config) for v in light_videos[:4]]
    fast = client.submit(light_videos[4], LIGHT, fast_track=True, config=worker_config)
    start_worker("solo")  # starts with all five queued
    final, _ = watch([*normal, fast], worker_config, timeout=240)
    assert all(s.state == "done" for s in final.values()), final
    first_normal = min(str(final[i].finished_at) for i in normal)
    assert str(final[fast].finished_at) < first_normal
