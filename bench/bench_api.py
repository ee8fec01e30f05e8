"""Benchmark of the scan API on loopback: sustained submissions per second it accepts (tiny
distinct uploads, and JSON references to videos already in storage; scans are queued, not run)
and the p50/p99 latency of `GET /v1/scans/{id}` with 10,000 scans in PostgreSQL.

It starts `incitescan serve`'s app with uvicorn in a subprocess on a free port, on a fresh
randomly named schema of the PostgreSQL database `test` (dropped at the end), and drives it with
httpx threads from this process (so client and server share the machine's cores). Prints a
table; `--json FILE` also writes the numbers.

    .venv/bin/python bench/bench_api.py [--scans 10000] [--seconds 15] [--concurrency 8]"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from service.models import Scan  # noqa: E402
from service.server import new_key  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402

ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiny_video(folder: Path) -> bytes:
    """A 1 s, 64x64 H.264 MP4 (a few KB)."""
    target = folder / "tiny.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10",
                    "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", str(target)],
                   check=True)
    return target.read_bytes()


def distinct(video: bytes) -> bytes:
    """`video` plus a random MP4 `free` box: the same valid video, new content and hash."""
    payload = secrets.token_bytes(16)
    return video + struct.pack(">I", 8 + len(payload)) + b"free" + payload


def seed_scans(url: str, uploader_key_id: str, count: int) -> list[str]:
    """Insert `count` finished-looking scans directly; returns their ids."""
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        rows.append({
            "id": str(uuid.uuid4()), "sha256": secrets.token_hex(32), "options_hash": "0" * 64,
            "active_key": None, "idempotency_key": None, "filename": f"seed-{i}.mp4",
            "size_bytes": 1000, "duration": 10.0, "status": "done", "progress": 100.0,
            "risk_score": (i % 100) / 100, "flagged": i % 100 >= 50, "external_id": f"ext-{i}",
            "priority": "normal", "callback_url": None, "metadata_": {"seed": i},
            "uploader_key_id": uploader_key_id, "worker_ref": None,
            "created_at": now - timedelta(seconds=count - i), "updated_at": now,
            "started_at": now, "finished_at": now, "error_code": None, "error_message": None})
    with engine.begin() as connection:
        for start in range(0, count, 1000):
            connection.execute(sa.insert(Scan), rows[start:start + 1000])
    engine.dispose()
    return [r["id"] for r in rows]


def sustained(seconds: float, concurrency: int, request: Callable[[httpx.Client], int]
              ) -> tuple[float, int, int]:
    """Run `request` from `concurrency` threads for `seconds`; (accepted/s, accepted, errors)."""
    accepted, errors = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < deadline:
                status = request(client)
                with lock:
                    if status in (200, 202):
                        accepted[0] += 1
                    else:
                        errors[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted[0] / (time.monotonic() - started), accepted[0], errors[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=10_000, help="scans in the database")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each load run")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--gets", type=int, default=2000, help="timed GET requests")
    parser.add_argument("--database", default=ADMIN_URL, help="PostgreSQL database to use")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    schema = f"incitescan_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(args.database, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{args.database}?options=-csearch_path%3D{schema}"
    workdir = Path(tempfile.mkdtemp(prefix="incitescan-bench-"))
    env = {**os.environ, "INCITESCAN_DATABASE_URL": url,
           "INCITESCAN_STORAGE": str(workdir / "storage"), "INCITESCAN_LOCAL_WORKERS": "0"}
    server = None
    try:
        settings = ServiceSettings(database_url=url, storage=workdir / "storage",
                                   local_workers=0)
        uploader_id, uploader = new_key("uploader", "bench", settings)
        _, reviewer = new_key("reviewer", "bench", settings)
        started = time.perf_counter()
        ids = seed_scans(url, uploader_id, args.scans)
        seed_s = time.perf_counter() - started

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "service.api:create_app", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=REPO_ROOT, env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)

        up = {"Authorization": f"Bearer {uploader}"}
        video = tiny_video(workdir)

        def upload(client: httpx.Client) -> int:
            return client.post(f"{base}/v1/scans", headers=up,
                               files={"file": ("v.mp4", distinct(video), "video/mp4")}
                               ).status_code

        from worker.storage import open_storage

        storage = open_storage(workdir / "storage")
        keys = []
        for _ in range(4000):
            source = workdir / "one.mp4"
            source.write_bytes(distinct(video))
            keys.append(storage.put(source))
        key_iter = iter(keys)
        key_lock = threading.Lock()

        def reference(client: httpx.Client) -> int:
            with key_lock:
                key = next(key_iter, keys[0])
            return client.post(f"{base}/v1/scans", headers=up, json={"storage_key": key}
                               ).status_code

        def duplicate(client: httpx.Client) -> int:
            return client.post(f"{base}/v1/scans", headers=up, json={"storage_key": keys[0]}
                               ).status_code

        results: dict[str, Any] = {"scans_in_db": args.scans, "seed_seconds": round(seed_s, 1),
                                   "concurrency": args.concurrency, "seconds": args.seconds}
        for name, request in (("upload (tiny mp4, new)", upload),
                              ("reference by key (new)", reference),
                              ("duplicate (idempotent hit)", duplicate)):
            rate, accepted, errors = sustained(args.seconds, args.concurrency, request)
            results[name] = {"per_second": round(rate, 1), "accepted": accepted,
                             "errors": errors}

        def get_latencies(headers: dict[str, str]) -> dict[str, float]:
            latencies: list[float] = []
            with httpx.Client(timeout=30) as client:
                for i in range(args.gets + 100):
                    scan_id = ids[secrets.randbelow(len(ids))]
                    t0 = time.perf_counter()
                    response = client.get(f"{base}/v1/scans/{scan_id}", headers=headers)
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert response.status_code == 200, response.text
                    if i >= 100:  # the first 100 warm the connection pools
                        latencies.append(elapsed)
            return {"p50": round(percentile(latencies, 0.50), 2),
                    "p99": round(percentile(latencies, 0.99), 2),
                    "mean": round(statistics.fmean(latencies), 2), "requests": len(latencies)}

        results["get_scan_ms"] = {"uploader (own scan)": get_latencies(up),
                                  "reviewer (view audited)": get_latencies(
                                      {"Authorization": f"Bearer {reviewer}"})}
        from pipelines.media import probe

        (workdir / "probe.mp4").write_bytes(video)
        probes = []
        for _ in range(10):
            t0 = time.perf_counter()
            probe(workdir / "probe.mp4")
            probes.append((time.perf_counter() - t0) * 1000)
        results["ffprobe_ms_median"] = round(statistics.median(probes), 1)
        with admin.connect() as connection:
            total = connection.execute(sa.text(f'SELECT count(*) FROM "{schema}".scans')
                                       ).scalar()
        results["scans_at_end"] = total

        print(f"\nIncitementScan API on loopback, PostgreSQL, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}; {args.concurrency} client threads, "
              f"{args.seconds:g} s per run; {args.scans} scans seeded ({seed_s:.1f} s)\n")
        print(f"{'submissions (POST /v1/scans)':<34} {'accepted/s':>11} {'accepted':>9} "
              f"{'errors':>7}")
        for name in ("upload (tiny mp4, new)", "reference by key (new)",
                     "duplicate (idempotent hit)"):
            row = results[name]
            print(f"{name:<34} {row['per_second']:>11.1f} {row['accepted']:>9} "
                  f"{row['errors']:>7}")
        print(f"(each new submission runs ffprobe: {results['ffprobe_ms_median']:.0f} ms "
              f"median on this machine now)")
        print(f"\nGET /v1/scans/{{id}} with {total} scans in PostgreSQL, sequential keep-alive, "
              f"{args.gets} requests each")
        print(f"{'caller':<34} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
        for name, row in results["get_scan_ms"].items():
            print(f"{name:<34} {row['p50']:>8.2f} {row['p99']:>8.2f} {row['mean']:>8.2f}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
