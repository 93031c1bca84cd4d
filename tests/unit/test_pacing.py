"""Tests of the client-side rate limit, back-off delays and Retry-After parsing."""

from __future__ import annotations

import random
import threading
import time
from email.utils import formatdate

import pytest

from airflow_provider_ontrack.client import pacing
from airflow_provider_ontrack.client.pacing import (
    SPACING_MARGIN,
    CallPacer,
    backoff_delay,
    parse_retry_after,
    shared_pacer,
)


class TestCallPacer:
    def test_calls_at_two_per_second_are_half_a_second_apart(self, clock, sleeps) -> None:
        sleeps.clock = clock
        clock.now = 1000.0
        pacer = CallPacer(2.0, clock=clock, sleep=sleeps)

        times = []
        for _ in range(6):
            pacer.wait_for_slot()
            times.append(clock.now)

        assert times == pytest.approx([1000.0 + n * 0.5 * SPACING_MARGIN for n in range(6)])
        assert sleeps.calls == pytest.approx([0.5 * SPACING_MARGIN] * 5)

    def test_returns_seconds_waited(self, clock, sleeps) -> None:
        pacer = CallPacer(4.0, clock=clock, sleep=sleeps)
        clock.now = 10.0
        assert pacer.wait_for_slot() == 0
        assert pacer.wait_for_slot() == pytest.approx(0.25 * SPACING_MARGIN)  # booked ahead: no time passed
        assert pacer.wait_for_slot() == pytest.approx(0.5 * SPACING_MARGIN)

    def test_no_wait_after_a_long_pause(self, clock, sleeps) -> None:
        pacer = CallPacer(2.0, clock=clock, sleep=sleeps)
        clock.now = 5.0
        pacer.wait_for_slot()
        clock.now = 60.0  # idle for a while: no credit is saved up, but no waiting either
        assert pacer.wait_for_slot() == 0
        assert pacer.wait_for_slot() == pytest.approx(0.5 * SPACING_MARGIN)
        assert sleeps.calls == pytest.approx([0.5 * SPACING_MARGIN])

    def test_threads_sharing_a_pacer_never_exceed_the_rate(self) -> None:
        rate, threads, calls_each = 50.0, 20, 3
        local = threading.local()

        def clock() -> float:
            local.now = time.monotonic()
            return local.now

        pacer = CallPacer(rate, clock=clock, sleep=time.sleep)
        booked: list[float] = []
        actual: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(threads)

        def worker() -> None:
            barrier.wait()
            for _ in range(calls_each):
                waited = pacer.wait_for_slot()
                sent = time.monotonic()
                with lock:
                    booked.append(local.now + waited)
                    actual.append(sent)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=10)

        n = threads * calls_each
        assert len(booked) == len(actual) == n
        booked.sort()
        actual.sort()
        per_window = int(rate)
        # The slots the pacer handed out: any rate+1 consecutive calls span at least one second.
        for i in range(n - per_window):
            assert booked[i + per_window] - booked[i] >= 1.0 - 1e-9
        # The calls really waited for their slots (up to scheduling delays of the machine).
        for i in range(n - per_window):
            assert actual[i + per_window] - actual[i] >= 1.0 - 0.05
        assert actual[-1] - actual[0] >= (n - 1) / rate - 0.05

    def test_tighten_only_slows_down(self) -> None:
        pacer = CallPacer(10.0)
        pacer.tighten(2.0)
        assert pacer.interval == pytest.approx(0.5 * SPACING_MARGIN)
        pacer.tighten(100.0)
        assert pacer.interval == pytest.approx(0.5 * SPACING_MARGIN)


class TestSharedPacer:
    def test_same_key_same_pacer(self) -> None:
        first = shared_pacer(("https://a", "id", "user"), 2.0)
        second = shared_pacer(("https://a", "id", "user"), 2.0)
        assert first is second
        assert pacing._pacers[("https://a", "id", "user")] is first

    def test_other_key_other_pacer(self) -> None:
        first = shared_pacer(("https://a", "id", "user"), 2.0)
        other = shared_pacer(("https://a", "id", "other-user"), 2.0)
        assert first is not other

    def test_slower_rate_tightens_the_shared_pacer(self) -> None:
        first = shared_pacer("tenant", 10.0)
        assert first.interval == pytest.approx(0.1 * SPACING_MARGIN)
        again = shared_pacer("tenant", 1.0)
        assert again is first
        assert first.interval == pytest.approx(SPACING_MARGIN)
        shared_pacer("tenant", 50.0)
        assert first.interval == pytest.approx(SPACING_MARGIN)


class _Extreme(random.Random):
    def __init__(self, pick_high: bool) -> None:
        super().__init__(0)
        self.pick_high = pick_high

    def uniform(self, a: float, b: float) -> float:
        return b if self.pick_high else a


class TestBackoffDelay:
    @pytest.mark.parametrize("attempt", range(12))
    def test_between_half_ceiling_and_ceiling(self, attempt: int) -> None:
        base, cap = 1.0, 60.0
        ceiling = min(cap, base * 2**attempt)
        rng = random.Random(attempt)
        for _ in range(200):
            delay = backoff_delay(attempt, base, cap, rng)
            assert ceiling / 2 <= delay <= ceiling

    def test_extremes(self) -> None:
        assert backoff_delay(0, 1.0, 60.0, _Extreme(False)) == pytest.approx(0.5)
        assert backoff_delay(0, 1.0, 60.0, _Extreme(True)) == pytest.approx(1.0)
        assert backoff_delay(3, 1.0, 60.0, _Extreme(True)) == pytest.approx(8.0)
        assert backoff_delay(3, 1.0, 60.0, _Extreme(False)) == pytest.approx(4.0)

    @pytest.mark.parametrize("attempt", [6, 10, 20])
    def test_capped(self, attempt: int) -> None:
        assert backoff_delay(attempt, 1.0, 60.0, _Extreme(True)) == pytest.approx(60.0)
        assert backoff_delay(attempt, 1.0, 60.0, _Extreme(False)) == pytest.approx(30.0)

    def test_random_part_varies(self) -> None:
        rng = random.Random(1)
        delays = {backoff_delay(4, 1.0, 60.0, rng) for _ in range(20)}
        assert len(delays) > 1

    def test_zero_base_means_no_wait(self) -> None:
        assert backoff_delay(5, 0.0, 60.0) == 0.0


class TestParseRetryAfter:
    @pytest.mark.parametrize(("value", "expected"), [("3", 3.0), ("1.5", 1.5), (" 7 ", 7.0), ("0", 0.0)])
    def test_seconds(self, value: str, expected: float) -> None:
        assert parse_retry_after(value) == pytest.approx(expected)

    def test_negative_seconds_mean_now(self) -> None:
        assert parse_retry_after("-4") == 0.0

    def test_http_date_in_future(self) -> None:
        now = 1_700_000_000.0
        assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)

    def test_http_date_in_future_against_real_time(self) -> None:
        value = formatdate(time.time() + 120, usegmt=True)
        assert 115.0 <= parse_retry_after(value) <= 120.0

    def test_http_date_in_past_is_zero(self) -> None:
        now = 1_700_000_000.0
        assert parse_retry_after(formatdate(now - 3600, usegmt=True), now=now) == 0.0
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0

    @pytest.mark.parametrize("value", ["soon", "3 seconds", "Wed, 99 Foo 2015", "nan", "NaN"])
    def test_garbage_is_none(self, value: str) -> None:
        assert parse_retry_after(value) is None

    @pytest.mark.parametrize("value", ["", "   ", None])
    def test_empty_is_none(self, value: str | None) -> None:
        assert parse_retry_after(value) is None
