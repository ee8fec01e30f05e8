"""The Celery application of the distributed scanner, configured for at-least-once processing
on Redis: tasks are acknowledged only after they finish (`acks_late`) and requeued when their
worker process dies, each worker process reserves one task at a time, an unacknowledged task of
a vanished worker goes back to the queue after the visibility timeout, and workers reconnect to a
restarted broker forever. Tasks are idempotent (see `worker.state`), so running one twice is
harmless.

Start a worker with `incitescan worker` or `celery -A worker.app worker -Q scan,detect,speech`;
the broker and backend come from INCITESCAN_BROKER_URL / INCITESCAN_RESULT_BACKEND."""

from __future__ import annotations

from functools import cache

from celery import Celery
from kombu import Queue

from .config import NORMAL_PRIORITY, QUEUES, WorkerSettings, settings

TASK_QUEUES = {
    "incitescan.start_scan": "scan",
    "incitescan.finish_scan": "scan",
    "incitescan.detect_chunk": "detect",
    "incitescan.transcribe_chunk": "speech",
}


@cache
def make_app(config: WorkerSettings) -> Celery:
    """A Celery app for `config` (one per distinct configuration and process)."""
    app = Celery("incitescan", broker=config.broker_url, backend=config.result_backend,
                 include=["worker.tasks", "worker.leases", "worker.metrics"])
    restore_every = max(1, min(10, int(config.visibility_timeout / 10)))
    redis_options = {
        "socket_timeout": 30,  # a vanished broker is noticed instead of waited on forever
        "socket_connect_timeout": 10,
        "health_check_interval": 10,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue="scan",
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_queue_max_priority=9,
        task_default_priority=NORMAL_PRIORITY,
        broker_transport_options={
            **redis_options,
            "visibility_timeout": config.visibility_timeout,
            # Check for abandoned tasks every few seconds, not kombu's default ~100 s.
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            # Poll queues by priority step first: a fast-track task in any queue goes first.
            "queue_order_strategy": "priority",
            "priority_steps": [0, 3, 6, 9],
        },
        result_backend_transport_options=redis_options,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        result_backend_always_retry=True,
        result_backend_max_retries=20,
        result_expires=int(config.result_ttl),
    )
    return app


app = make_app(settings())
