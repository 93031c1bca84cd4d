"""Pacing of calls: the shared client-side rate limit, back-off delays and ``Retry-After``."""

from __future__ import annotations

import random
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Callable, Hashable

# Calls leave a little further apart than the rate asks: a gateway counting calls per trailing second
# sees them after network jitter, and a call that arrives a few milliseconds early would be refused.
SPACING_MARGIN = 1.05


class CallPacer:
    """Spaces calls evenly so that all users of one pacer stay at or under ``calls_per_second``.

    A reservation model rather than a token bucket: each caller books the next free slot and sleeps
    until it. With no burst allowance, no window of one second ever holds more calls than the rate,
    which is what a gateway that counts calls per second wants to see.
    """

    def __init__(
        self,
        calls_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = SPACING_MARGIN / calls_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0

    def tighten(self, calls_per_second: float) -> None:
        """Lower the rate when another user of the same tenant asks for a slower one."""
        with self._lock:
            self.interval = max(self.interval, SPACING_MARGIN / calls_per_second)

    def wait_for_slot(self) -> float:
        """Block until the caller may send its call; return the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval

        waited = slot - now
        if waited > 0:
            self._sleep(waited)
        return waited


_pacers: dict[Hashable, CallPacer] = {}
_pacers_lock = threading.Lock()


def shared_pacer(key: Hashable, calls_per_second: float) -> CallPacer:
    """Return the one pacer of ``key`` in this process, creating it on first use."""
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None:
            pacer = _pacers[key] = CallPacer(calls_per_second)
        else:
            pacer.tighten(calls_per_second)
        return pacer


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Exponential, capped, with half of the delay drawn at random so that many clients that failed
    together do not all come back together.
    """
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` header given in seconds or as an HTTP date; ``None`` if unusable."""
    if value is None or not value.strip():
        return None

    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)

    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
