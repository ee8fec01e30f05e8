"""Rate limiting of wrong credentials: each client address may send `max_failures` wrong API
keys (to the API or the UI login form) within `window_s` seconds; the next one locks the address
out for `lockout_s` seconds, during which every attempt with credentials from it is answered
429 without being checked (so the lock-out is no oracle). In memory, per server process; the
service writes the failures and lock-outs to the audit log."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_TRACKED = 100_000  # addresses remembered at once (oldest forgotten first)


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class AuthThrottle:
    """Counts wrong credentials per client address and locks an address out."""

    def __init__(self, max_failures: int, window_s: float, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float:
        """Seconds `address` stays locked out (0: it may try)."""
        with self._lock:
            record = self._records.get(address)
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def failed(self, address: str) -> bool:
        """Count one wrong credential from `address`; True when this locks it out."""
        now = self.clock()
        with self._lock:
            record = self._records.pop(address, None) or _Record()
            self._records[address] = record  # most recent last
            while record.failures and record.failures[0] < now - self.window_s:
                record.failures.popleft()
            record.failures.append(now)
            locked = len(record.failures) >= self.max_failures
            if locked:
                record.locked_until = now + self.lockout_s
                record.failures.clear()
            while len(self._records) > MAX_TRACKED:
                del self._records[next(iter(self._records))]
            return locked
