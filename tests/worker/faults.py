"""Loaded by a worker that a fault test starts with `start_worker(..., pause=POINT)`: its pool
process stops at POINT (and says so in the log, with the task id) until the test kills it, so
a worker dies exactly there and nowhere else. Points: `before:<task name>` (the task has been
received and is about to run) and `after:save_report` (the report is stored, the scan not yet
marked done). Test code only; the worker's own code has no such hook."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import current_task, signals

from worker.state import ScanStore

POINT = os.environ.get("INCITESCAN_TEST_PAUSE", "")


def pause(where: str, task_id: str) -> None:
    if where == POINT:
        print(f"paused at {where} in task {task_id}", flush=True)
        time.sleep(3600)


@signals.task_prerun.connect
def _before(task_id: str, task: Any, **_: Any) -> None:
    pause(f"before:{task.name}", task_id)


_save_report = ScanStore.save_report


def _save_report_then_pause(self: ScanStore, result: str, report: dict[str, Any]) -> None:
    _save_report(self, result, report)
    pause("after:save_report", current_task.request.id)


ScanStore.save_report = _save_report_then_pause  # type: ignore[method-assign]
