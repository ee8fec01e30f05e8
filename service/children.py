"""Keeping the local pool's processes tied to the server that started them. Each pool process
asks the kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`, Linux), so a
`kill -9` of `incitescan serve` no longer leaves a ~1.4 GB scanning process behind, and records
itself in `<storage>/.pool/<pid>` (its start time and its parent). At start-up the server ends
the recorded processes whose parent is gone (left by a crash on a system without the signal,
or started before it was set) — only those: the start time must match, so a reused pid is
never touched, and the children of another live server are left alone."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
REGISTRY = ".pool"


def _start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (/proc), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of stat, counted from field 3


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def die_with_parent(parent_pid: int, storage_root: str | None = None) -> None:
    """Pool initializer: SIGKILL this process when its parent dies, leave at once if it has
    died already, and record the process under `storage_root` for the start-up sweep."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    if storage_root is not None:
        with contextlib.suppress(OSError):
            folder = Path(storage_root) / REGISTRY
            folder.mkdir(parents=True, exist_ok=True)
            (folder / str(os.getpid())).write_text(json.dumps(
                {"start": _start_time(os.getpid()), "parent": parent_pid}))


def end_stale_children(storage_root: Path) -> list[int]:
    """End (SIGKILL) the recorded pool processes of `storage_root` whose parent server is gone;
    forget records of processes that have ended. Returns the pids ended."""
    folder = Path(storage_root) / REGISTRY
    ended: list[int] = []
    if not folder.is_dir():
        return ended
    for record in folder.iterdir():
        try:
            pid = int(record.name)
            entry = json.loads(record.read_text())
            started, parent = entry["start"], int(entry["parent"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                record.unlink()
            continue
        if _start_time(pid) != started or started is None:  # ended; the pid may be reused
            with contextlib.suppress(OSError):
                record.unlink()
            continue
        if _parent(pid) == parent and _start_time(parent) is not None:
            continue  # its server is alive: not ours to end
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            ended.append(pid)
            log.warning("ended pool process %d left running by a server that died", pid)
        with contextlib.suppress(OSError):
            record.unlink()
    return ended
