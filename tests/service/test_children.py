"""Pool processes end with their server: a `kill -9` of the process that owns a LocalExecutor
pool takes the pool process with it (it used to keep running, ~1.4 GB with its models), and a
start ends recorded pool processes whose server is gone, never another live server's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from service.children import _start_time, end_stale_children

OWNER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from service.execution import LocalExecutor
    executor = LocalExecutor(workers=1, options=None, storage_root=Path(sys.argv[1]),
                             database_url="sqlite://", video_path=Path, on_done=print)
    pool = executor._new_pool()
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    return _start_time(pid) is not None and "Z" not in Path(
        f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_a_pool_process_dies_with_its_killed_server(tmp_path: Path, repo_root: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], cwd=repo_root,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(repo_root)})
    try:
        child = int(owner.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child)
        assert (tmp_path / ".pool" / str(child)).is_file()  # recorded for the start sweep
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert _wait_gone(child, 10), "the pool process outlived its killed server"
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]


def test_a_start_ends_stale_pool_processes_it_recorded(tmp_path: Path) -> None:
    # A stand-in pool process whose server is gone: its parent (a shell) exits at once.
    shell = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True)
    orphan = int(shell.stdout)
    live = subprocess.Popen(["sleep", "60"])  # a child of this live process: left alone
    try:
        registry = tmp_path / ".pool"
        registry.mkdir()
        (registry / str(orphan)).write_text(
            f'{{"start": {_start_time(orphan)}, "parent": 999999999}}')
        (registry / str(live.pid)).write_text(
            f'{{"start": {_start_time(live.pid)}, "parent": {os.getpid()}}}')
        (registry / "424242").write_text('{"start": 1, "parent": 1}')  # long gone
        (registry / "junk").write_text("not json")
        assert end_stale_children(tmp_path) == [orphan]
        assert _wait_gone(orphan, 5) and live.poll() is None
        assert sorted(p.name for p in registry.iterdir()) == [str(live.pid)]
    finally:
        live.kill()
        live.wait()
        subprocess.run(["kill", "-9", str(orphan)], capture_output=True, check=False)
