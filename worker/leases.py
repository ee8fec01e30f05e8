"""Leases on the work a worker holds, the watchdog that hands back the work of a dead worker,
and the warm shutdown with a grace time.

Redis hands an unacknowledged task to another worker only after the visibility timeout (20 min
by default), so a worker killed outright (OOM kill, lost node) would stall its scan that long.
Instead every worker's main process renews, every `heartbeat` seconds from a thread, a lease
on each task it holds (received, reserved or running: start, detect, speech and finish alike):

- `incitescan:lease:<delivery tag>` (string, expires after `lease_timeout`): the holder;
- `incitescan:leases` (hash): delivery tag -> the held task (name, id, scan, worker, renewal
  time), for `incitescan workers` and for the record of a re-enqueue;
- `incitescan:worker:<hostname>` (string, expires after `lease_timeout`): a live worker.

The same thread runs the watchdog, in every worker, under a Redis lock so that one acts at a
time: a message that kombu's Redis transport still holds as unacknowledged, whose lease was
taken once and has lapsed, is put back on its queue exactly as the visibility timeout would put
it back (same message, same task id, same chord), only minutes earlier. Tasks are idempotent
(`worker.tasks`), so a task handed back from a worker that was merely slow runs twice, harmlessly.
Every re-enqueue is logged, counted, and written to the scan's history. A message never leased
(a worker of an older version) is left to the visibility timeout, which stays the last resort.

SIGTERM starts Celery's warm shutdown: no new tasks are taken and the running one may finish;
if it is still running after `shutdown_grace` seconds its message is handed back to the queue
and the worker exits, so a deploy never waits on a long chunk."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, signals
from celery.worker import state as worker_state

from .config import QUEUES, WorkerSettings, settings
from .state import PREFIX, ScanStore, now, redis_client

log = logging.getLogger(__name__)

LEASE = f"{PREFIX}:lease"
LEASES = f"{PREFIX}:leases"
WORKER = f"{PREFIX}:worker"
WATCHDOG_LOCK = f"{PREFIX}:watchdog"
REQUEUES = f"{PREFIX}:requeues"  # hash: reason ("lease_lapsed", "shutdown") -> count
PRIORITY_STEPS = (0, 3, 6, 9)  # as in `worker.app`
QUEUE_SEPARATOR = "\x06\x16"  # kombu's Redis transport: `<queue><sep><priority step>`


def held_task(request: Any, channel: Any = None) -> tuple[str, dict[str, Any]] | None:
    """(delivery tag, description) of a Celery request this worker holds, or None when it is
    already acknowledged, carries no delivery tag, or came through another channel than the
    consumer's current `channel`: after a lost broker connection Celery never acknowledges
    such a message (it cancels the task, and may keep the dead request in its books), so its
    lease must lapse and the watchdog hand it back."""
    message = getattr(request, "message", None)
    tag = getattr(message, "delivery_tag", None)
    if tag is None or getattr(request, "acknowledged", False):
        return None
    if channel is not None and getattr(message, "channel", channel) is not channel:
        return None
    kwargs = request.kwargs if isinstance(request.kwargs, dict) else {}
    return str(tag), {"task": request.task_name, "task_id": request.id,
                      "scan_id": kwargs.get("scan_id"), "index": kwargs.get("index"),
                      "started": request.time_start}


def _requests(extra: Iterable[Any]) -> list[Any]:
    """Every request this worker process holds (Celery's own sets, read from another thread:
    retried when the main thread changes them meanwhile)."""
    for _ in range(10):
        try:
            return [*worker_state.active_requests, *worker_state.reserved_requests, *extra]
        except RuntimeError:  # "set changed size during iteration"
            time.sleep(0.01)
    return list(extra)


@dataclass
class Heartbeat:
    """The lease keeper and watchdog of one worker (a thread of its main process)."""

    app: Celery
    config: WorkerSettings
    hostname: str
    pool_pids: Any = None  # callable returning the pids of the pool processes
    current_channel: Any = None  # callable returning the consumer's channel now
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: dict[str, Any] = field(default_factory=dict)  # tag -> request, until acked
    # Released by Celery (acknowledged or rejected) but still unacknowledged in the broker: a
    # lost ack or requeue. Their leases are left to lapse, so the watchdog hands them back.
    unsettled: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # guards `received`
    _beating: threading.RLock = field(default_factory=threading.RLock)  # one beat at a time
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _channel: Any = None
    started_at: str = field(default_factory=now)

    @property
    def client(self) -> Any:
        return redis_client(self.config.broker_url)

    def start(self) -> None:
        """Start renewing leases and watching (a daemon thread)."""
        self._thread = threading.Thread(target=self._run, name="incitescan-heartbeat",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, hand back every message this worker held that the broker still
        counts as unacknowledged (it will never be acknowledged now: e.g. its pool process died
        of the same SIGTERM and the requeue was lost in the shutdown), and drop this worker's
        leases and liveness record."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.config.heartbeat * 2)
        try:
            self._beating.acquire()
            reason = f"worker {self.hostname} stopped while holding it"
            for tag, task in {**self.unsettled, **self.held}.items():
                self.hand_back(tag, task, "shutdown", reason)
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(f"{WORKER}:{self.hostname}")
                for tag in self.held.keys() | self.unsettled.keys():
                    pipe.delete(f"{LEASE}:{tag}")
                    pipe.hdel(LEASES, tag)
                pipe.execute()
            self.held, self.unsettled = {}, {}
        except Exception:  # noqa: BLE001 - a lease left behind lapses; the watchdog acts
            log.warning("could not hand back the tasks of %s", self.hostname, exc_info=True)
        finally:
            self._beating.release()

    def on_received(self, request: Any) -> None:
        """Lease a task as soon as it is received (from Celery's `task_received` signal), not
        at the next beat: a worker killed in between would leave it to the visibility timeout."""
        held = held_task(request)
        if held is not None:
            with self._lock:
                self.received[held[0]] = request
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
                self.watch()
            except Exception:  # noqa: BLE001 - a Redis outage must not end the thread
                log.warning("heartbeat of %s failed; retrying", self.hostname, exc_info=True)
                self._channel = None
            self._wake.wait(self.config.heartbeat)
            self._wake.clear()

    def beat(self) -> None:
        """Renew the lease of every task held and release those no longer held."""
        with self._beating:
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            self.received = {t: r for t, r in self.received.items() if not r.acknowledged}
            extra = list(self.received.values())
        channel = self.current_channel() if self.current_channel else None
        held = dict(filter(None, (held_task(r, channel) for r in _requests(extra))))
        ttl = int(self.config.lease_timeout * 1000)
        stamp = time.time()
        worker = {"hostname": self.hostname, "pid": os.getpid(), "started_at": self.started_at,
                  "renewed_at": stamp, "tasks": sorted(held)}
        released = [t for t in self.held if t not in held]
        unsettled = {**self.unsettled, **{t: self.held[t] for t in released}}
        if unsettled:
            unacked_key = self.channel().qos.unacked_key
            with self.client.pipeline(transaction=False) as pipe:
                for tag in unsettled:
                    pipe.hexists(unacked_key, tag)
                still = pipe.execute()
            self.unsettled = {tag: task for (tag, task), unacked
                              in zip(unsettled.items(), still, strict=True)
                              if unacked and tag not in held}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(f"{WORKER}:{self.hostname}", json.dumps(worker), px=ttl)
            for tag, task in held.items():
                pipe.set(f"{LEASE}:{tag}", self.hostname, px=ttl)
                pipe.hset(LEASES, tag, json.dumps({**task, "worker": self.hostname,
                                                   "renewed_at": stamp}))
            for tag in released:
                if tag not in self.unsettled:
                    pipe.delete(f"{LEASE}:{tag}")
                    pipe.hdel(LEASES, tag)
            pipe.execute()
        self.held = held

    # ----------------------------------------------------------------------------- watchdog

    def channel(self) -> Any:
        """A kombu Redis channel of the broker (its QoS restores messages as the visibility
        timeout does)."""
        if self._channel is None:
            self._channel = self.app.connection_for_write().default_channel
        return self._channel

    def watch(self) -> list[dict[str, Any]]:
        """Hand back every message whose lease lapsed (one worker at a time); returns the
        records of what was handed back."""
        lock = self.client.lock(WATCHDOG_LOCK, timeout=max(10.0, self.config.lease_timeout),
                                blocking=False)
        if not lock.acquire(blocking=False):
            return []
        try:
            qos = self.channel().qos
            leases = self.client.hgetall(LEASES)
            if not leases:
                return []
            # Only messages older than a lease: a message just received may not be leased yet.
            old = set(self.client.zrangebyscore(qos.unacked_index_key, "-inf",
                                                time.time() - self.config.lease_timeout))
            handed = []
            for tag, raw in leases.items():
                if self.client.exists(f"{LEASE}:{tag}"):
                    continue
                task = json.loads(raw)
                if tag in old:
                    lapsed = time.time() - float(task.get("renewed_at") or 0)
                    reason = (f"the lease of worker {task.get('worker')} lapsed (last renewed "
                              f"{lapsed:.0f} s ago)")
                    record = self.hand_back(tag, task, "lease_lapsed", reason)
                    if record:
                        handed.append(record)
                elif not self.client.hexists(qos.unacked_key, tag):
                    self.client.hdel(LEASES, tag)  # acknowledged: only the record was left
            return handed
        finally:
            with contextlib.suppress(Exception):  # an expired lock is released already
                lock.release()

    def hand_back(self, tag: str, task: dict[str, Any], kind: str, reason: str
                  ) -> dict[str, Any] | None:
        """Put the unacknowledged message `tag` back on its queue and record why; None when it
        was acknowledged meanwhile."""
        qos = self.channel().qos
        if not self.client.hexists(qos.unacked_key, tag):
            self.client.hdel(LEASES, tag)
            return None
        qos.restore_by_tag(tag)
        record = {"at": now(), "event": "requeued", "kind": kind, "task": task.get("task"),
                  "task_id": task.get("task_id"), "worker": task.get("worker"),
                  "by": self.hostname, "reason": reason}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hdel(LEASES, tag)
            pipe.delete(f"{LEASE}:{tag}")
            pipe.hincrby(REQUEUES, kind, 1)
            pipe.execute()
        scan_id = task.get("scan_id")
        if scan_id:
            ScanStore(redis_client(self.config.result_backend), self.config.result_ttl
                      ).note(scan_id, **record)
        log.warning("re-enqueued %s[%s] of scan %s: %s", task.get("task"), task.get("task_id"),
                    scan_id, reason)
        return record

    # ------------------------------------------------------------------------ warm shutdown

    def shutdown_after_grace(self) -> None:
        """After `shutdown_grace` seconds of a warm shutdown, hand back what is still held and
        exit (the pool processes are killed: their tasks run again elsewhere)."""
        def expire() -> None:
            if self._stop.wait(self.config.shutdown_grace):
                return  # the worker stopped by itself in time
            self._stop.set()  # the heartbeat thread ends after its current beat
            self._wake.set()
            self._beating.acquire()  # held until the exit: no beat renews what is handed back
            self._beat()
            reason = (f"worker {self.hostname} is shutting down and its grace of "
                      f"{self.config.shutdown_grace:g} s is over")
            for tag, task in {**self.unsettled, **self.held}.items():
                self.hand_back(tag, task, "shutdown", reason)
            self.held, self.unsettled = {}, {}
            for pid in (self.pool_pids() if self.pool_pids else []):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            log.warning("%s: handed back its tasks after the shutdown grace; exiting",
                        self.hostname)
            self.stop()
            logging.shutdown()
            os._exit(0)

        threading.Thread(target=expire, name="incitescan-shutdown-grace", daemon=True).start()


# ------------------------------------------------------------------- hooks into the worker

_heartbeat: Heartbeat | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender: Any, **_: Any) -> None:
    """Start leasing and watching once the worker consumes (main process only)."""
    global _heartbeat
    pool = sender.pool

    def pool_pids() -> list[int]:
        return list((pool.info or {}).get("processes", []))

    def current_channel() -> Any:
        consumer = getattr(sender, "task_consumer", None)
        return getattr(consumer, "channel", None)

    _heartbeat = Heartbeat(app=sender.app, config=settings(), hostname=sender.hostname,
                           pool_pids=pool_pids, current_channel=current_channel)
    _heartbeat.start()
    log.info("%s: leases every %g s, lapsing after %g s; shutdown grace %g s",
             sender.hostname, _heartbeat.config.heartbeat, _heartbeat.config.lease_timeout,
             _heartbeat.config.shutdown_grace)


@signals.task_received.connect
def _lease_on_receipt(request: Any, **_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.on_received(request)


@signals.worker_shutting_down.connect
def _grace(how: str = "", **_: Any) -> None:
    if _heartbeat is not None and how == "Warm":
        _heartbeat.shutdown_after_grace()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


# ------------------------------------------------------------------------- cluster overview


@dataclass(frozen=True, slots=True)
class HeldTask:
    """A task a live worker holds, and how old its lease is."""

    task: str
    task_id: str
    scan_id: str | None
    index: int | None
    lease_age: float  # seconds since the last renewal
    running_for: float | None  # seconds since it started in the pool (None: reserved)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker (renewed its record within the lease timeout)."""

    hostname: str
    pid: int
    started_at: str
    heartbeat_age: float
    tasks: tuple[HeldTask, ...]


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Live workers, their tasks, queue depths by priority step, and re-enqueue counts."""

    workers: tuple[WorkerInfo, ...]
    queues: dict[str, dict[int, int]]  # queue -> priority step -> messages waiting
    unacknowledged: int  # messages delivered to a worker and not yet acknowledged
    requeues: dict[str, int]  # reason -> count since the broker's data began
    orphaned: tuple[HeldTask, ...]  # leased tasks whose worker is gone (watchdog pending)


def queue_depths(client: Any) -> dict[str, dict[int, int]]:
    """Messages waiting per queue and priority step (kombu's Redis lists)."""
    with client.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            for step in PRIORITY_STEPS:
                pipe.llen(f"{queue}{QUEUE_SEPARATOR}{step}" if step else queue)
        counts = iter(pipe.execute())
    return {queue: {step: int(next(counts)) for step in PRIORITY_STEPS} for queue in QUEUES}


def cluster_state(config: WorkerSettings) -> ClusterState:
    """What the workers of the deployment in `config` are doing, read from the broker."""
    client: Any = redis_client(config.broker_url)
    stamp = time.time()
    workers_raw = [client.get(key) for key in client.scan_iter(f"{WORKER}:*", count=500)]
    leases = {tag: json.loads(raw) for tag, raw in client.hgetall(LEASES).items()}

    def held(task: dict[str, Any]) -> HeldTask:
        started = task.get("started")
        return HeldTask(task=task.get("task", "?"), task_id=task.get("task_id", "?"),
                        scan_id=task.get("scan_id"), index=task.get("index"),
                        lease_age=round(stamp - float(task.get("renewed_at") or stamp), 1),
                        running_for=round(stamp - started, 1) if started else None)

    workers, seen = [], set()
    for raw in filter(None, workers_raw):
        info = json.loads(raw)
        tasks = tuple(held(leases[t]) for t in info.get("tasks", []) if t in leases)
        seen.update(info.get("tasks", []))
        workers.append(WorkerInfo(hostname=info["hostname"], pid=int(info["pid"]),
                                  started_at=info.get("started_at", ""),
                                  heartbeat_age=round(stamp - float(info["renewed_at"]), 1),
                                  tasks=tasks))
    requeues = {k: int(v) for k, v in client.hgetall(REQUEUES).items()}
    return ClusterState(
        workers=tuple(sorted(workers, key=lambda w: w.hostname)),
        queues=queue_depths(client), unacknowledged=int(client.hlen("unacked")),
        requeues=requeues,
        orphaned=tuple(held(task) for tag, task in leases.items() if tag not in seen))
