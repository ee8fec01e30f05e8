"""Leases and the watchdog on a real Redis with real `celery worker` processes: the task of a
worker killed with SIGKILL runs again on another worker within a minute although the visibility
timeout is 20 minutes, the scan's history says why, and all scans finish with the in-process
report; a worker told to stop hands its task back after its shutdown grace; `cluster_state`
shows the live workers, their leases and the queue depths."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.report import to_dict
from pipelines.scan import ScanOptions, scan
from service.cli import EXIT_OK, run
from worker import client
from worker.config import WorkerSettings
from worker.leases import ClusterState, cluster_state

from .test_distributed import comparable, until, watch

pytestmark = [pytest.mark.services, pytest.mark.slow]

# One detector at 1 frame/s in 8 s chunks: a detect chunk lasts a few seconds (long enough to
# be killed in), the whole clip well under a minute on one worker.
LEASED = ScanOptions(fps=1.0, speech_model="", detectors=("yolo11n-coco-int8",), chunk_s=8.0)


def held_by(config: WorkerSettings, hostname: str, task: str) -> list[str]:
    """Ids of the `task` tasks that worker `hostname` holds a lease on."""
    state: ClusterState = cluster_state(config)
    return [t.task_id for w in state.workers if w.hostname == hostname
            for t in w.tasks if t.task == task]


def metric(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels) in Prometheus text `text`."""
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + " ")]
    assert len(values) == 1, (name, text)
    return values[0]


def test_a_killed_workers_task_resumes_on_another_worker_within_a_minute(
        start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        threat_gun_drill_video: Path, benign_street_video: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The visibility timeout is the default 20 minutes: only the leases can bring the task back.
    config = replace(worker_config, visibility_timeout=1200.0)
    monkeypatch.setenv("INCITESCAN_BROKER_URL", config.broker_url)
    monkeypatch.setenv("INCITESCAN_RESULT_BACKEND", config.result_backend)
    doomed = start_worker("doomed", config=config)
    survivor = start_worker("survivor", config=config)
    videos = [threat_knife_video, threat_gun_drill_video, benign_street_video] * 2
    # A distinct threshold per scan gives each its own result key: all six really run.
    submitted = {client.submit(v, replace(LEASED, fusion=replace(
        LEASED.fusion, threshold=0.5 + i / 1000)), config=config): (v, i)
        for i, v in enumerate(videos)}
    held: list[str] = []

    def doomed_holds_a_chunk() -> bool:
        held[:] = held_by(config, "doomed@test", "incitescan.detect_chunk")
        return bool(held)

    until(doomed_holds_a_chunk, 180, "the doomed worker to hold a detect chunk")
    state = cluster_state(config)
    assert {w.hostname for w in state.workers} == {"doomed@test", "survivor@test"}
    assert all(t.lease_age <= config.heartbeat + 2 for w in state.workers for t in w.tasks)
    assert sum(sum(steps.values()) for steps in state.queues.values()) > 0, "scans wait"
    assert run(["workers"]) == EXIT_OK
    listing = capsys.readouterr().out
    assert "2 live worker(s)" in listing and "doomed@test pid" in listing
    assert re.search(r"  incitescan.detect_chunk scan [0-9a-f]{32} chunk \d", listing)
    doomed.kill()  # SIGKILL to the worker and its pool process
    killed_at = time.monotonic()
    (task_id,) = held
    assert f"incitescan.detect_chunk[{task_id}] succeeded" not in doomed.output()

    until(lambda: f"incitescan.detect_chunk[{task_id}] received" in survivor.output(), 90,
          "the killed task to reach the survivor")
    resumed_after = time.monotonic() - killed_at
    print(f"\nkilled task resumed on the survivor {resumed_after:.1f} s after the kill")
    assert resumed_after <= 60.0

    final, _ = watch(list(submitted), config, timeout=240)
    finished_after = time.monotonic() - killed_at
    print(f"all six scans finished {finished_after:.1f} s after the kill")
    assert [s.state for s in final.values()] == ["done"] * 6, final
    assert finished_after <= 120.0
    assert client.dead_letters(config=config) == []

    # The re-enqueue is on record, with its reason, in the history of the scan it belonged to.
    requeued = {i: client.history(i, config=config) for i in submitted}
    events = [(i, e) for i, history in requeued.items() for e in history]
    assert [e["task_id"] for _, e in events] == [task_id]
    (scan_id, event), = events
    assert event["kind"] == "lease_lapsed" and event["worker"] == "doomed@test"
    assert re.search(r"lease of worker doomed@test lapsed", event["reason"])
    assert final[scan_id].requeues == 1
    # ... and the resumed scan's report is the in-process one.
    video, i = submitted[scan_id]
    options = replace(LEASED, fusion=replace(LEASED.fusion, threshold=0.5 + i / 1000))
    assert comparable(client.result(scan_id, config=config)) == comparable(
        to_dict(scan(video, options)))
    assert [w.hostname for w in cluster_state(config).workers] == ["survivor@test"]

    assert run(["workers", "--prometheus"]) == EXIT_OK
    metrics = capsys.readouterr().out
    assert metric(metrics, 'incitescan_requeues_total{reason="lease_lapsed"}') == 1
    assert metric(metrics, 'incitescan_scans_total{state="done"}') == 6
    assert metric(metrics, 'incitescan_scans_in_progress{state="running"}') == 0
    assert metric(metrics, "incitescan_workers") == 1
    assert metric(metrics, 'incitescan_task_duration_seconds_count{task="incitescan.'
                           'finish_scan"}') == 6
    # The survivor loaded the detector (the doomed worker was likely killed while loading it).
    assert metric(metrics, 'incitescan_model_load_seconds_count{model="yolo11n-coco-int8"}') >= 1


@pytest.mark.parametrize("to", [
    "main process",
    pytest.param("process group", marks=pytest.mark.xfail(
        strict=False, reason="intermittent: the worker sometimes exits only when the 30-s lease "
        "lapses instead of within the grace time (1 failure in 3 runs, 2026-12-02); issue 23")),
])
def test_a_stopped_worker_hands_its_task_back(
        to: str, start_worker, worker_config: WorkerSettings, threat_knife_video: Path) -> None:
    """SIGTERM to the main process only (Kubernetes, systemd KillMode=mixed): the task may run
    for the grace time, then goes back to the queue. SIGTERM to every process (systemd's default
    KillMode): the pool process dies at once and its task goes back as the worker exits."""
    config = replace(worker_config, visibility_timeout=1200.0, shutdown_grace=1.0)
    leaving = start_worker("leaving", config=config)
    scan_id = client.submit(threat_knife_video, LEASED, config=config)
    held: list[str] = []

    def leaving_holds_a_chunk() -> bool:
        held[:] = held_by(config, "leaving@test", "incitescan.detect_chunk")
        return bool(held)

    until(leaving_holds_a_chunk, 180, "the worker to hold a detect chunk")
    stopped_at = time.monotonic()
    if to == "main process":
        os.kill(leaving.process.pid, signal.SIGTERM)
        leaving.process.wait(timeout=30)
    else:
        leaving.kill(signal.SIGTERM, wait=30.0)
    stopped_after = time.monotonic() - stopped_at
    print(f"\nSIGTERM to the {to}: the worker exited after {stopped_after:.1f} s")
    assert stopped_after <= config.shutdown_grace + 15
    (task_id,) = held
    assert f"incitescan.detect_chunk[{task_id}] succeeded" not in leaving.output()

    staying = start_worker("staying", config=config)
    final, _ = watch([scan_id], config, timeout=240)
    assert final[scan_id].state == "done", final[scan_id]
    assert f"incitescan.detect_chunk[{task_id}] received" in staying.output()
    assert final[scan_id].parts_done == final[scan_id].parts_total
    (event,) = client.history(scan_id, config=config)
    assert event["kind"] == "shutdown" and event["task_id"] == task_id
    if to == "main process":
        assert "grace of 1 s is over" in event["reason"]
        assert "handed back its tasks after the shutdown grace" in leaving.output()


@pytest.fixture(scope="module")
def leased_report(threat_knife_video: Path, worker_models: None) -> dict:
    """`incitescan scan` of threat_knife with the LEASED options, in this process."""
    return comparable(to_dict(scan(threat_knife_video, LEASED)))


@pytest.mark.parametrize("point", [
    "before:incitescan.start_scan", "before:incitescan.detect_chunk",
    "before:incitescan.transcribe_chunk", "before:incitescan.finish_scan", "after:save_report"])
def test_a_worker_killed_at_any_stage_loses_nothing(
        point: str, start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        leased_report: dict) -> None:
    """The worker dies (SIGKILL) at `point`: the scan finishes once on another worker, the
    killed task runs again there, and the report is the in-process one. Short leases here (the
    default 30 s is measured in the test above) keep the matrix quick."""
    config = replace(worker_config, visibility_timeout=1200.0, lease_timeout=8.0,
                     heartbeat=2.0)
    doomed = start_worker("doomed", config=config, pause=point)
    scan_id = client.submit(threat_knife_video, LEASED, config=config)
    until(lambda: "paused at " in doomed.output(), 240, f"the worker to reach {point}")
    task_id = doomed.output().split("paused at ", 1)[1].split("in task ", 1)[1].split()[0]
    survivor = start_worker("survivor", config=config)
    doomed.kill()
    killed_at = time.monotonic()
    final, _ = watch([scan_id], config, timeout=240)
    assert final[scan_id].state == "done", final[scan_id]
    assert f"[{task_id}] received" in survivor.output()
    print(f"\n{point}: scan done {time.monotonic() - killed_at:.1f} s after the kill")
    assert final[scan_id].parts_done == final[scan_id].parts_total
    assert comparable(client.result(scan_id, config=config)) == leased_report
    (event,) = client.history(scan_id, config=config)
    assert event["task_id"] == task_id and event["kind"] == "lease_lapsed"
    assert client.dead_letters(config=config) == []
    # Done once: one transition to done, whichever worker got there.
    assert cluster_state(config).requeues == {"lease_lapsed": 1}


def test_the_whole_worker_host_gone_loses_nothing(
        start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        benign_street_video: Path, leased_report: dict) -> None:
    """Every worker process of a host killed at once, mid-scan: a worker started on another
    host finishes both scans."""
    config = replace(worker_config, visibility_timeout=1200.0, lease_timeout=8.0,
                     heartbeat=2.0)
    host = [start_worker("host-a", config=config), start_worker("host-b", config=config)]
    knife = client.submit(threat_knife_video, LEASED, config=config)
    street = client.submit(benign_street_video, LEASED, config=config)
    until(lambda: all(held_by(config, f"{w.name}@test", "incitescan.detect_chunk")
                      for w in host), 240, "both workers to hold a detect chunk")
    for worker in host:
        worker.kill()
    start_worker("elsewhere", config=config)
    final, _ = watch([knife, street], config, timeout=240)
    assert [final[i].state for i in (knife, street)] == ["done", "done"], final
    assert comparable(client.result(knife, config=config)) == leased_report
    requeued = client.history(knife, config=config) + client.history(street, config=config)
    assert len(requeued) == 2 and {e["worker"] for e in requeued} == {"host-a@test",
                                                                     "host-b@test"}


def test_scans_finish_once_when_redis_is_down_longer_than_a_lease(
        redis_server, start_worker, worker_config: WorkerSettings, threat_knife_video: Path,
        benign_street_video: Path, leased_report: dict) -> None:
    """Redis (with its append-only file) restarted mid-scan and down for longer than a lease:
    every lease lapses meanwhile, so the watchdog may hand back tasks that are still running;
    they run twice, harmlessly, and each scan finishes once with the in-process report."""
    config = replace(worker_config, visibility_timeout=1200.0, lease_timeout=6.0,
                     heartbeat=2.0)
    workers = [start_worker("one", config=config), start_worker("two", config=config)]
    knife = client.submit(threat_knife_video, LEASED, config=config)
    street = client.submit(benign_street_video, LEASED, config=config)
    until(lambda: any(held_by(config, f"{w.name}@test", "incitescan.detect_chunk")
                      for w in workers), 240, "a detect chunk to run")
    redis_server.restart(down_for=8.0)
    final, _ = watch([knife, street], config, timeout=300)
    assert [final[i].state for i in (knife, street)] == ["done", "done"], final
    assert comparable(client.result(knife, config=config)) == leased_report
    assert client.dead_letters(config=config) == []
    assert all(w.process.poll() is None for w in workers), "workers survive the outage"
    assert cluster_state(config).queues == {q: {0: 0, 3: 0, 6: 0, 9: 0}
                                            for q in ("scan", "detect", "speech")}
