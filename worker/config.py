"""Settings of the distributed scanner, read from the environment: where the broker, the result
backend and the shared media storage are, and the reliability knobs (visibility timeout, time
limits, how long results are kept). One frozen object, built by `settings()`; every process of a
deployment (clients and workers) must see the same broker, backend and storage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

# Queues: `scan` orchestrates (probe, plan, finish: light), `detect` decodes frames and runs the
# detectors, `speech` runs Whisper. Dedicated workers can consume only the heavy ones.
QUEUES = ("scan", "detect", "speech")

# Redis emulates priorities with one list per step and pops the lowest step first, so a lower
# number is served earlier (the reverse of AMQP). Steps are kombu's default [0, 3, 6, 9].
FAST_TRACK_PRIORITY = 0
NORMAL_PRIORITY = 6


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything a client or worker process needs to know about the deployment."""

    broker_url: str = DEFAULT_REDIS  # INCITESCAN_BROKER_URL
    result_backend: str = DEFAULT_REDIS  # INCITESCAN_RESULT_BACKEND (default: the broker URL)
    storage: Path = Path("~/.local/share/incitescan/storage").expanduser()
    # Seconds before Redis hands an unacknowledged task (its worker died) to another worker.
    # Must exceed the longest hard time limit, or a slow task would run twice (harmlessly:
    # tasks are idempotent, but wastefully).
    visibility_timeout: float = 1200.0
    chunk_time_limit: float = 900.0  # hard limit of a detect/speech chunk task (s)
    scan_time_limit: float = 300.0  # hard limit of the start and finish tasks (s)
    result_ttl: float = 30 * 86400.0  # how long reports, parts and scan records are kept (s)
    # Leases (`worker.leases`): a worker renews the lease of every task it holds every
    # `heartbeat` seconds; a lease not renewed for `lease_timeout` seconds (its worker died) has
    # its task handed back to the queue by the watchdog, long before the visibility timeout.
    lease_timeout: float = 30.0
    heartbeat: float = 5.0
    # Seconds a worker told to stop (SIGTERM) may finish its current task before handing it
    # back to the queue and exiting.
    shutdown_grace: float = 60.0

    @classmethod
    def from_env(cls) -> WorkerSettings:
        """Build the settings from INCITESCAN_* environment variables (defaults above)."""
        env, default = os.environ, cls()
        broker = env.get("INCITESCAN_BROKER_URL") or default.broker_url
        return cls(
            broker_url=broker,
            result_backend=env.get("INCITESCAN_RESULT_BACKEND") or broker,
            storage=Path(env.get("INCITESCAN_STORAGE") or default.storage).expanduser(),
            visibility_timeout=_float("INCITESCAN_VISIBILITY_TIMEOUT",
                                      default.visibility_timeout),
            chunk_time_limit=_float("INCITESCAN_CHUNK_TIME_LIMIT", default.chunk_time_limit),
            scan_time_limit=_float("INCITESCAN_SCAN_TIME_LIMIT", default.scan_time_limit),
            result_ttl=_float("INCITESCAN_RESULT_TTL", default.result_ttl),
            lease_timeout=_float("INCITESCAN_LEASE_TIMEOUT", default.lease_timeout),
            heartbeat=_float("INCITESCAN_HEARTBEAT", default.heartbeat),
            shutdown_grace=_float("INCITESCAN_SHUTDOWN_GRACE", default.shutdown_grace),
        )

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat <= self.lease_timeout / 2:
            raise ValueError(f"INCITESCAN_HEARTBEAT ({self.heartbeat:g} s) must be positive and "
                             f"at most half of INCITESCAN_LEASE_TIMEOUT "
                             f"({self.lease_timeout:g} s)")
        if self.shutdown_grace < 0:
            raise ValueError("INCITESCAN_SHUTDOWN_GRACE must not be negative")


def settings() -> WorkerSettings:
    """The settings of this process (read from the environment on each call)."""
    return WorkerSettings.from_env()
