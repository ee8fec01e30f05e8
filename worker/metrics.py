"""Prometheus metrics of the distributed scanner, for the whole deployment at once. Workers
write what they measure to Redis as they go (task durations from Celery's task signals in the
pool processes, model load times from `worker.tasks`, re-enqueues from `worker.leases`, scan
state changes from `worker.state`), and a collector reads it back at scrape time, so one
`incitescan metrics` exporter (or `incitescan workers --prometheus`) shows every worker, dead
ones included, and no worker needs a port of its own:

- `incitescan_scans_total{state}` (counter): scans that entered each state;
- `incitescan_scans_in_progress{state}` (gauge): scans queued or running now;
- `incitescan_task_duration_seconds{task}` (histogram): run time of each task kind;
- `incitescan_requeues_total{reason}` (counter): tasks handed back by the watchdog
  (`lease_lapsed`) or by a stopping worker (`shutdown`);
- `incitescan_queue_depth{queue,priority}` (gauge), `incitescan_unacknowledged` (gauge);
- `incitescan_workers` (gauge): live workers; `incitescan_model_load_seconds{model}` (summary)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from celery import signals

from .config import WorkerSettings, settings
from .leases import REQUEUES, cluster_state
from .state import PREFIX, SCAN_COUNTS, ScanStore, redis_client

log = logging.getLogger(__name__)

TASK_SECONDS = f"{PREFIX}:stats:task-seconds"  # hash: "<task>|<bucket or sum or count>" -> n
MODEL_LOAD = f"{PREFIX}:stats:model-load"  # hash: "<model>|sum" / "<model>|count" -> n
BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)


def record_task_duration(client: Any, task: str, seconds: float) -> None:
    """Count one run of `task` that took `seconds` (cumulative histogram buckets)."""
    with client.pipeline(transaction=False) as pipe:
        for bound in BUCKETS:
            if seconds <= bound:
                pipe.hincrby(TASK_SECONDS, f"{task}|{bound}", 1)
        pipe.hincrby(TASK_SECONDS, f"{task}|+Inf", 1)
        pipe.hincrbyfloat(TASK_SECONDS, f"{task}|sum", seconds)
        pipe.execute()


def record_model_load(client: Any, model: str, seconds: float) -> None:
    """Count one load of `model` that took `seconds`."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(MODEL_LOAD, f"{model}|count", 1)
        pipe.hincrbyfloat(MODEL_LOAD, f"{model}|sum", seconds)
        pipe.execute()


# Task run times, measured in the pool process that runs the task.
_started: dict[str, float] = {}


@signals.task_prerun.connect
def _task_started(task_id: str, **_: Any) -> None:
    _started[task_id] = time.monotonic()


@signals.task_postrun.connect
def _task_finished(task_id: str, task: Any, **_: Any) -> None:
    began = _started.pop(task_id, None)
    if began is None:
        return
    try:
        record_task_duration(redis_client(settings().broker_url), task.name,
                             time.monotonic() - began)
    except Exception:  # noqa: BLE001 - a lost sample must not fail the task
        log.warning("could not record the duration of %s", task.name, exc_info=True)


class DeploymentCollector:
    """Reads the deployment's numbers from Redis at each scrape."""

    def __init__(self, config: WorkerSettings) -> None:
        self.config = config

    def collect(self) -> Iterator[Any]:
        # Imported here: workers only write to Redis and run without prometheus-client.
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            SummaryMetricFamily,
        )



        broker: Any = redis_client(self.config.broker_url)
        store = ScanStore(redis_client(self.config.result_backend), self.config.result_ttl)
        entered = CounterMetricFamily("incitescan_scans", "Scans that entered each state",
                                      labels=["state"])
        for state, count in sorted(store.client.hgetall(SCAN_COUNTS).items()):
            entered.add_metric([state], float(count))
        yield entered
        now = GaugeMetricFamily("incitescan_scans_in_progress", "Scans queued or running now",
                                labels=["state"])
        for state, count in sorted(store.active_states().items()):
            now.add_metric([state], float(count))
        yield now

        durations = HistogramMetricFamily("incitescan_task_duration_seconds",
                                          "Run time of the scan tasks", labels=["task"])
        raw = broker.hgetall(TASK_SECONDS)
        for task in sorted({key.split("|", 1)[0] for key in raw}):
            buckets = [(str(bound), float(raw.get(f"{task}|{bound}", 0))) for bound in BUCKETS]
            buckets.append(("+Inf", float(raw.get(f"{task}|+Inf", 0))))
            durations.add_metric([task], buckets, float(raw.get(f"{task}|sum", 0)))
        yield durations

        loads = SummaryMetricFamily("incitescan_model_load_seconds",
                                    "Time to load a model into a worker process",
                                    labels=["model"])
        raw = broker.hgetall(MODEL_LOAD)
        for model in sorted({key.split("|", 1)[0] for key in raw}):
            loads.add_metric([model], int(raw.get(f"{model}|count", 0)),
                             float(raw.get(f"{model}|sum", 0)))
        yield loads

        requeues = CounterMetricFamily("incitescan_requeues",
                                       "Tasks handed back to the queue, by reason",
                                       labels=["reason"])
        counts = broker.hgetall(REQUEUES)
        for reason in ("lease_lapsed", "shutdown"):
            requeues.add_metric([reason], float(counts.get(reason, 0)))
        yield requeues

        cluster = cluster_state(self.config)
        depth = GaugeMetricFamily("incitescan_queue_depth", "Messages waiting, by queue and "
                                  "priority step (0 = fast track)", labels=["queue", "priority"])
        for queue, steps in cluster.queues.items():
            for step, count in steps.items():
                depth.add_metric([queue, str(step)], float(count))
        yield depth
        yield GaugeMetricFamily("incitescan_unacknowledged",
                                "Messages delivered to a worker and not yet acknowledged",
                                value=float(cluster.unacknowledged))
        yield GaugeMetricFamily("incitescan_workers", "Live workers (lease renewed in time)",
                                value=float(len(cluster.workers)))


def registry(config: WorkerSettings) -> Any:
    """A prometheus-client registry holding only the deployment's metrics."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(DeploymentCollector(config))  # type: ignore[arg-type]
    return reg


def render(config: WorkerSettings | None = None) -> str:
    """The deployment's metrics in Prometheus' text format."""
    from prometheus_client import generate_latest

    return generate_latest(registry(config or settings())).decode()


def serve(port: int, addr: str = "127.0.0.1", config: WorkerSettings | None = None) -> Any:
    """Serve the deployment's metrics on http://`addr`:`port`/metrics (a daemon thread);
    returns the server."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=addr, registry=registry(config or settings()))
    return server
