"""Benchmark of the distributed scanner (not a test): throughput in video-minutes per
wall-minute with 1 and with 2 worker processes on the committed sample clips, and the time to
the first result of a fast-track scan submitted behind a full queue of normal scans.

It starts its own redis-server (free port, temporary folder) and real `celery worker`
subprocesses that preload the models, so model loading is not counted; the report cache is
emptied between runs so every scan really runs. Usage:

    .venv/bin/python bench/bench_workers.py [--workers 1,2] [--speech-model base] [--fps 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pipelines.media import probe  # noqa: E402
from pipelines.scan import ScanOptions  # noqa: E402
from worker import client  # noqa: E402
from worker.config import WorkerSettings  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connection = redis.Redis(port=port)
    for _ in range(200):
        try:
            connection.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    connection.close()
    return server, port


def start_workers(count: int, config: WorkerSettings, logs: Path) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes (concurrency 1 each) with preloaded models, once all are ready."""
    env = {**os.environ, "INCITESCAN_BROKER_URL": config.broker_url,
           "INCITESCAN_RESULT_BACKEND": config.result_backend,
           "INCITESCAN_STORAGE": str(config.storage), "INCITESCAN_PRELOAD": "1",
           "PYTHONWARNINGS": "ignore"}
    workers, files = [], []
    for i in range(count):
        log = logs / f"worker-{count}-{i}.log"
        files.append(log)
        with log.open("wb") as output:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-c", "1",
                 "-l", "info", "-n", f"bench{i}@%h", "--without-gossip", "--without-mingle"],
                cwd=REPO_ROOT, env=env, stdout=output, stderr=output,
                stdin=subprocess.DEVNULL, start_new_session=True))
    deadline = time.monotonic() + 300
    while not all("models preloaded" in f.read_text(errors="replace") for f in files):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise RuntimeError("workers did not start; see " + ", ".join(map(str, files)))
        time.sleep(0.5)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def run_all(videos: list[Path], options: ScanOptions, config: WorkerSettings) -> float:
    """Submit every video at once; seconds until the last report is stored."""
    started = time.monotonic()
    ids = [client.submit(v, options, config=config) for v in videos]
    final = client.wait(ids, timeout=3600, poll=0.2, config=config)
    failed = [s for s in final.values() if s.state != "done"]
    if failed:
        raise RuntimeError(f"scans did not finish: {failed}")
    return time.monotonic() - started


def fast_track_latency(videos: list[Path], options: ScanOptions, config: WorkerSettings
                       ) -> float:
    """Fill the queue with every video, then submit one fast-track scan; seconds until its
    report is ready."""
    for video in videos:
        client.submit(video, options, config=config)
    time.sleep(2.0)  # the workers are busy with the queue now
    started = time.monotonic()
    # Settings unlike the queued scans' (same work): it shares no stored chunk with them.
    fast = client.submit(videos[-1], replace(options, max_evidence_frames=23), fast_track=True,
                         config=config)
    final = client.wait([fast], timeout=3600, poll=0.1, config=config)[fast]
    if final.state != "done":
        raise RuntimeError(f"fast-track scan did not finish: {final}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (1,2)")
    parser.add_argument("--speech-model", default="base", help="tiny.en, base, none (base)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (1)")
    args = parser.parse_args()
    options = ScanOptions(fps=args.fps,
                          speech_model="" if args.speech_model == "none" else args.speech_model)
    videos = sorted((REPO_ROOT / "samples").glob("*.mp4"))
    minutes = sum(probe(v).duration for v in videos) / 60

    with tempfile.TemporaryDirectory(prefix="bench-workers-") as folder:
        temp = Path(folder)
        server, port = start_redis(temp)
        url = f"redis://127.0.0.1:{port}/0"
        config = WorkerSettings(broker_url=url, result_backend=url, storage=temp / "storage")
        rows = []
        try:
            for count in (int(n) for n in args.workers.split(",")):
                redis.Redis(port=port).flushdb()
                workers = start_workers(count, config, temp)
                try:
                    wall = run_all(videos, options, config)
                    redis.Redis(port=port).flushdb()  # the queue's scans must really run
                    latency = fast_track_latency(videos, options, config)
                finally:
                    stop_workers(workers)
                rows.append((count, wall, minutes / (wall / 60), latency))
        finally:
            server.terminate()
            server.wait()

    print(f"\n{len(videos)} sample clips, {minutes * 60:.0f} s of video; options: fps "
          f"{options.fps:g}, speech {options.speech_model or 'none'}, chunk {options.chunk_s:g} s"
          f"; {os.cpu_count()} CPU cores\n")
    print("| workers | wall (s) | video-min / wall-min | fast-track result behind a full "
          "queue (s) |")
    print("|--------:|---------:|---------------------:|" + "-" * 42 + ":|")
    for count, wall, throughput, latency in rows:
        print(f"| {count:7d} | {wall:8.1f} | {throughput:20.2f} | {latency:41.1f} |")
    print("\n(a normal scan submitted behind the same queue waits for all of it: about the "
          "wall time above)")


if __name__ == "__main__":
    main()
