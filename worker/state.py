"""What the distributed scanner keeps in Redis besides Celery's own queues and results:

- `incitescan:scan:<id>` (hash): one submitted scan: its state (queued, running, done, failed),
  progress, the upload's display name and storage key, options, timestamps and failure reason;
- `incitescan:scan:<id>:done` (set): the chunk parts finished for it (progress counts these);
- `incitescan:scan:<id>:history` (list, oldest first): what happened to it besides the state
  changes, e.g. a task re-enqueued because its worker died (`worker.leases`);
- `incitescan:parts:<result key>` (hash): chunk results by part id (`detect:3`, `speech:3`);
- `incitescan:report:<result key>`: the finished report;
- `incitescan:dead-letters` (list, newest first): every task failure and its reason;
- `incitescan:stats:scans` (hash): how many scans entered each state, and
  `incitescan:active` (set): the ids of scans not yet done or failed (for `worker.metrics`).

A result key is the sha256 of the video, the settings and the model versions, so a retried or
duplicated task finds its part already there and a re-submitted video its report. Everything
expires after the configured result TTL. Writes retry through short Redis outages."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from pipelines.scan import ScanOptions

PREFIX = "incitescan"
DEAD_LETTERS = f"{PREFIX}:dead-letters"
DEAD_LETTERS_KEPT = 10_000
SCAN_COUNTS = f"{PREFIX}:stats:scans"
ACTIVE = f"{PREFIX}:active"
STATES = ("queued", "running", "done", "failed")
FINAL_STATES = ("done", "failed")


def now() -> str:
    """The current UTC time as ISO 8601 text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def result_key(video_sha256: str, options: ScanOptions, models: dict[str, str]) -> str:
    """The key of a scan's result: the same video, settings and model versions give the same
    report, whoever submits it and however often."""
    identity = {"video": video_sha256, "settings": asdict(options), "models": models}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


_clients: dict[tuple[str, int], redis.Redis] = {}


def redis_client(url: str) -> redis.Redis:
    """One client per URL and process (never shared across a fork); commands are retried with
    backoff for about half a minute, so a restarting Redis does not fail a task."""
    key = (url, os.getpid())
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5,
            health_check_interval=10,
            retry=Retry(ExponentialWithJitterBackoff(base=0.25, cap=4.0), retries=12),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    return _clients[key]


class ScanStore:
    """Scan records, chunk parts, reports and dead letters in one Redis database."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        # Typed Any: redis-py's annotations cannot express `decode_responses=True` (str replies).
        self.client: Any = client
        self.ttl = max(1, int(ttl))

    @staticmethod
    def _scan(scan_id: str) -> str:
        return f"{PREFIX}:scan:{scan_id}"

    # ----------------------------------------------------------------------- scan records

    def create(self, scan_id: str, **fields: Any) -> None:
        """Record a newly submitted scan as queued."""
        key = self._scan(scan_id)
        with self.client.pipeline() as pipe:
            pipe.hset(key, mapping={**_text(fields), "state": "queued", "progress": "0",
                                    "submitted_at": now()})
            pipe.expire(key, self.ttl)
            pipe.hincrby(SCAN_COUNTS, "queued", 1)
            pipe.sadd(ACTIVE, scan_id)
            pipe.execute()

    def get(self, scan_id: str) -> dict[str, str] | None:
        """The record of scan `scan_id`, or None when there is none (unknown or expired)."""
        record = self.client.hgetall(self._scan(scan_id))
        return record or None

    def update(self, scan_id: str, **fields: Any) -> None:
        """Set fields of a scan record (never its state; see `transition`)."""
        self.client.hset(self._scan(scan_id), mapping=_text(fields))

    def transition(self, scan_id: str, to: str, **fields: Any) -> bool:
        """Move scan `scan_id` to state `to` with `fields`, unless it is already done or failed
        (the first final state wins); False when nothing was changed."""
        key = self._scan(scan_id)

        def change(pipe: Any) -> bool:
            current = pipe.hget(key, "state")
            if current is None or current in FINAL_STATES:
                return False
            pipe.multi()
            pipe.hset(key, mapping={**_text(fields), "state": to})
            if to != current:
                pipe.hincrby(SCAN_COUNTS, to, 1)
            if to in FINAL_STATES:
                pipe.srem(ACTIVE, scan_id)
            return True

        changed: bool = self.client.transaction(change, key, value_from_callable=True)
        return changed

    def active_states(self) -> dict[str, int]:
        """How many scans are queued and running now (ids whose record expired are dropped)."""
        ids = list(self.client.smembers(ACTIVE))
        with self.client.pipeline(transaction=False) as pipe:
            for scan_id in ids:
                pipe.hget(self._scan(scan_id), "state")
            states = pipe.execute()
        counts = {"queued": 0, "running": 0}
        gone = [i for i, state in zip(ids, states, strict=True) if state not in counts]
        for state in states:
            if state in counts:
                counts[state] += 1
        if gone:
            self.client.srem(ACTIVE, *gone)
        return counts

    def part_done(self, scan_id: str, part: str) -> None:
        """Count `part` of scan `scan_id` as finished (idempotent) and update its progress."""
        done_key = f"{self._scan(scan_id)}:done"
        with self.client.pipeline() as pipe:
            pipe.sadd(done_key, part)
            pipe.expire(done_key, self.ttl)
            pipe.scard(done_key)
            pipe.hget(self._scan(scan_id), "parts_total")
            _, _, done, total = pipe.execute()
        total = int(total or 0)
        if total:
            # 99 at most: the scan is 100 % done only once its report is stored.
            self.update(scan_id, parts_done=done, progress=min(99.0, round(100 * done / total, 1)))

    def note(self, scan_id: str, **event: Any) -> None:
        """Add `event` to the history of scan `scan_id`; a re-enqueue is also counted in its
        record (`requeues`)."""
        key = f"{self._scan(scan_id)}:history"
        with self.client.pipeline() as pipe:
            pipe.rpush(key, json.dumps({"at": now(), **event}))
            pipe.expire(key, self.ttl)
            if event.get("event") == "requeued":
                pipe.hincrby(self._scan(scan_id), "requeues", 1)
            pipe.execute()

    def history(self, scan_id: str) -> list[dict[str, Any]]:
        """The history events of scan `scan_id`, oldest first."""
        events = self.client.lrange(f"{self._scan(scan_id)}:history", 0, -1)
        return [json.loads(e) for e in events]

    # ----------------------------------------------------------------- parts and reports

    def save_part(self, result: str, part: str, data: Any) -> None:
        """Store the result of one chunk part."""
        key = f"{PREFIX}:parts:{result}"
        with self.client.pipeline() as pipe:
            pipe.hset(key, part, json.dumps(data))
            pipe.expire(key, self.ttl)
            pipe.execute()

    def has_part(self, result: str, part: str) -> bool:
        """Whether the result of `part` is stored."""
        return bool(self.client.hexists(f"{PREFIX}:parts:{result}", part))

    def parts(self, result: str) -> dict[str, Any]:
        """Every stored part of result `result`, by part id."""
        raw = self.client.hgetall(f"{PREFIX}:parts:{result}")
        return {part: json.loads(data) for part, data in raw.items()}

    def save_report(self, result: str, report: dict[str, Any]) -> None:
        """Store a finished report under its result key."""
        self.client.set(f"{PREFIX}:report:{result}", json.dumps(report), ex=self.ttl)

    def report(self, result: str) -> dict[str, Any] | None:
        """The stored report of `result`, or None."""
        raw = self.client.get(f"{PREFIX}:report:{result}")
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------------------ dead letters

    def dead_letter(self, **record: Any) -> None:
        """Keep a record of a failed task (the newest `DEAD_LETTERS_KEPT` are kept)."""
        with self.client.pipeline() as pipe:
            pipe.lpush(DEAD_LETTERS, json.dumps({"at": now(), **record}))
            pipe.ltrim(DEAD_LETTERS, 0, DEAD_LETTERS_KEPT - 1)
            pipe.execute()

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest `count` dead-letter records."""
        return [json.loads(r) for r in self.client.lrange(DEAD_LETTERS, 0, count - 1)]


def _text(fields: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
