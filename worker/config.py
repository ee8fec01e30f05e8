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
        )


def settings() -> WorkerSettings:
    """The settings of this process (read from the environment on each call)."""
    return WorkerSettings.from_env()
