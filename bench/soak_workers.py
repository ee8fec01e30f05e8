"""Soak run of the distributed scanner with workers dying (not a test): many short scans on
real `celery worker` processes while one worker is killed with SIGKILL every few seconds (and a
replacement started at once, as an orchestrator would), compared with the same scans on the same
number of workers left alone. It reports whether every scan finished exactly once, how many
tasks the watchdog re-enqueued, and the latency the kills added (per scan, submitted to done).

It starts its own redis-server (free port, temporary folder) and workers that preload their
models; the visibility timeout stays at its 20-minute default, so only the leases bring the
killed workers' tasks back. Usage:

    .venv/bin/python bench/soak_workers.py [--scans 200] [--workers 2] [--kill-every 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.bench_workers import start_redis  # noqa: E402
from pipelines.scan import ScanOptions  # noqa: E402
from worker import client  # noqa: E402
from worker.config import WorkerSettings  # noqa: E402
from worker.leases import cluster_state  # noqa: E402
from worker.state import SCAN_COUNTS  # noqa: E402

SHORT = ScanOptions(fps=0.25, speech_model="", detectors=("yolo11n-coco-int8",), chunk_s=8.0)


def start_worker(name: str, config: WorkerSettings, logs: Path) -> subprocess.Popen[bytes]:
    """One worker process (concurrency 1, models preloaded), not waited for."""
    env = {**os.environ, "INCITESCAN_BROKER_URL": config.broker_url,
           "INCITESCAN_RESULT_BACKEND": config.result_backend,
           "INCITESCAN_STORAGE": str(config.storage), "INCITESCAN_PRELOAD": "1",
           "PYTHONWARNINGS": "ignore"}
    with (logs / f"{name}.log").open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-c", "1", "-l",
             "info", "-n", f"{name}@soak", "--without-gossip", "--without-mingle"],
            cwd=REPO_ROOT, env=env, stdout=output, stderr=output, stdin=subprocess.DEVNULL,
            start_new_session=True)


def kill(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the worker and its pool process."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def seconds(start: str, end: str | None) -> float:
    return (datetime.fromisoformat(end or start) - datetime.fromisoformat(start)).total_seconds()


def run(label: str, scans: int, workers: int, kill_every: float, config: WorkerSettings,
        videos: list[Path], logs: Path) -> dict[str, float]:
    """Submit `scans` scans at once to `workers` workers (killing one every `kill_every`
    seconds when positive); the figures of the run."""
    running = [start_worker(f"{label}-{i}", config, logs) for i in range(workers)]
    names = {w.pid: f"{label}-{i}" for i, w in enumerate(running)}
    started_workers = workers
    time.sleep(5)
    began = time.monotonic()
    ids = []
    for i in range(scans):
        # A distinct threshold per scan gives each its own result key: every scan really runs.
        options = replace(SHORT, fusion=replace(SHORT.fusion, threshold=0.5 + i / 100_000))
        ids.append(client.submit(videos[i % len(videos)], options, config=config))
    kills, next_kill = 0, began + kill_every
    while True:
        states = {i: client.status(i, config=config) for i in ids}
        if all(s.finished for s in states.values()) or time.monotonic() - began > 3600:
            break
        if kill_every > 0 and time.monotonic() >= next_kill:
            # The oldest worker that has started consuming (killing one still importing its
            # libraries would test nothing); none ready yet: try again at the next tick.
            ready = [w for w in running if " ready." in
                     (logs / f"{names[w.pid]}.log").read_text(errors="replace")]
            if ready:
                running.remove(ready[0])
                kill(ready[0])
                kills += 1
                running.append(start_worker(f"{label}-{started_workers}", config, logs))
                names[running[-1].pid] = f"{label}-{started_workers}"
                started_workers += 1
            next_kill += kill_every
        time.sleep(0.5)
    wall = time.monotonic() - began
    requeued = sum(cluster_state(config).requeues.values())
    # A scan enters "done" once at most (the first final state wins): this counts them.
    done_once = int(redis.Redis.from_url(config.broker_url).hget(SCAN_COUNTS, "done") or 0)
    for worker in running:
        kill(worker)
    latencies = sorted(seconds(s.submitted_at, s.finished_at) for s in states.values())
    done = sum(s.state == "done" for s in states.values())
    return {"scans": scans, "done": done, "failed": sum(s.state == "failed"
                                                         for s in states.values()),
            "unfinished": scans - done - sum(s.state == "failed" for s in states.values()),
            "kills": kills, "requeued": requeued, "done_transitions": done_once, "wall": wall,
            "mean": statistics.fmean(latencies),
            "p95": latencies[int(0.95 * (len(latencies) - 1))], "max": latencies[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=200, help="short scans per run (200)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--kill-every", type=float, default=20.0,
                        help="seconds between SIGKILLs of a worker (20)")
    args = parser.parse_args()
    videos = sorted((REPO_ROOT / "samples").glob("*.mp4"))

    rows = []
    with tempfile.TemporaryDirectory(prefix="soak-workers-") as folder:
        temp = Path(folder)
        server, port = start_redis(temp)
        url = f"redis://127.0.0.1:{port}/0"
        config = WorkerSettings(broker_url=url, result_backend=url, storage=temp / "storage")
        try:
            for label, every in (("calm", 0.0), ("killed", args.kill_every)):
                redis.Redis(port=port).flushdb()
                rows.append((label, run(label, args.scans, args.workers, every, config, videos,
                                        temp)))
        finally:
            server.terminate()
            server.wait()

    print(f"\n{args.scans} short scans (fps {SHORT.fps:g}, no speech, one detector) on "
          f"{args.workers} workers; lease {config.lease_timeout:g} s, heartbeat "
          f"{config.heartbeat:g} s, visibility timeout {config.visibility_timeout:g} s; "
          f"{os.cpu_count()} CPU cores\n")
    print("| run | kills | done | marked done | failed | unfinished | re-enqueued | wall (s) "
          "| latency mean / p95 / max (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        name = "calm" if label == "calm" else f"a worker killed every {args.kill_every:g} s"
        print(f"| {name} | {r['kills']:.0f} | {r['done']:.0f} | {r['done_transitions']:.0f} | "
              f"{r['failed']:.0f} | "
              f"{r['unfinished']:.0f} | {r['requeued']:.0f} | {r['wall']:.1f} | "
              f"{r['mean']:.1f} / {r['p95']:.1f} / {r['max']:.1f} |")
    calm, killed = rows[0][1], rows[1][1]
    print(f"\nadded by the kills: wall {killed['wall'] - calm['wall']:+.1f} s, mean latency "
          f"{killed['mean'] - calm['mean']:+.1f} s, p95 {killed['p95'] - calm['p95']:+.1f} s")


if __name__ == "__main__":
    main()
