"""Change windows: spans longer than the API's 90 days are split into contiguous whole-second UTC windows."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_ontrack.client.errors import OnTrackConfigError
from airflow_provider_ontrack.client.windows import MAX_WINDOW, api_time, change_windows

UTC = dt.timezone.utc
START = dt.datetime(2026, 1, 5, 6, 30, 15, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def _assert_contiguous(windows: list[tuple[dt.datetime, dt.datetime]]) -> None:
    for (_, first_end), (second_start, _) in zip(windows, windows[1:], strict=False):
        assert first_end == second_start


class TestSplitting:
    def test_200_days_make_three_windows_of_90_90_and_20_days(self):
        end = START + 200 * DAY

        windows = change_windows(START, end)

        assert [stop - start for start, stop in windows] == [90 * DAY, 90 * DAY, 20 * DAY]
        assert windows[0][0] == START
        assert windows[-1][1] == end
        _assert_contiguous(windows)
        assert all(start.tzinfo is UTC and stop.tzinfo is UTC for start, stop in windows)

    def test_exactly_90_days_is_one_window(self):
        windows = change_windows(START, START + MAX_WINDOW)

        assert windows == [(START, START + 90 * DAY)]

    def test_one_second_over_90_days_is_two_windows(self):
        windows = change_windows(START, START + MAX_WINDOW + dt.timedelta(seconds=1))

        assert [stop - start for start, stop in windows] == [90 * DAY, dt.timedelta(seconds=1)]

    def test_a_shorter_longest_window_is_honoured(self):
        windows = change_windows(START, START + 10 * DAY, longest=4 * DAY)

        assert [stop - start for start, stop in windows] == [4 * DAY, 4 * DAY, 2 * DAY]
        _assert_contiguous(windows)

    @pytest.mark.parametrize("end", [START, START - dt.timedelta(seconds=1), START - 400 * DAY])
    def test_empty_or_inverted_span_has_no_windows(self, end):
        windows = change_windows(START, end)

        assert windows == []

    @pytest.mark.parametrize("end_micro", [400_000, 100_000])
    def test_empty_or_inverted_span_with_fractions_has_no_windows(self, end_micro):
        start = START.replace(microsecond=400_000)

        windows = change_windows(start, START.replace(microsecond=end_micro))

        assert windows == []


class TestEdges:
    def test_edges_are_whole_seconds_start_floored_end_ceiled(self):
        start = START.replace(microsecond=999_999)
        end = START + 200 * DAY + dt.timedelta(microseconds=1)

        windows = change_windows(start, end)

        assert windows[0][0] == START
        assert windows[-1][1] == START + 200 * DAY + dt.timedelta(seconds=1)
        assert all(edge.microsecond == 0 for window in windows for edge in window)
        _assert_contiguous(windows)
        assert len(windows) == 3

    def test_whole_second_end_is_not_moved(self):
        windows = change_windows(START.replace(microsecond=5), START + DAY)

        assert windows == [(START, START + DAY)]

    def test_other_offsets_are_converted_to_utc(self):
        zurich_summer = dt.timezone(dt.timedelta(hours=2))
        tokyo = dt.timezone(dt.timedelta(hours=9))
        start = dt.datetime(2026, 6, 1, 2, 0, tzinfo=zurich_summer)
        end = dt.datetime(2026, 6, 2, 9, 0, tzinfo=tokyo)

        windows = change_windows(start, end)

        assert windows == [
            (dt.datetime(2026, 6, 1, 0, 0, tzinfo=UTC), dt.datetime(2026, 6, 2, 0, 0, tzinfo=UTC))
        ]
        assert windows[0][0].utcoffset() == dt.timedelta(0)
        assert api_time(windows[0][0]) == "2026-06-01T00:00:00Z"

    def test_negative_offset_crossing_midnight(self):
        new_york = dt.timezone(dt.timedelta(hours=-5))
        start = dt.datetime(2026, 1, 31, 22, 15, 30, tzinfo=new_york)

        windows = change_windows(start, start + dt.timedelta(hours=1))

        assert windows == [
            (dt.datetime(2026, 2, 1, 3, 15, 30, tzinfo=UTC), dt.datetime(2026, 2, 1, 4, 15, 30, tzinfo=UTC))
        ]

    def test_api_time_is_utc_with_z_and_whole_seconds(self):
        moment = dt.datetime(2026, 3, 1, 1, 2, 3, 456_789, tzinfo=dt.timezone(dt.timedelta(hours=1)))

        assert api_time(moment) == "2026-03-01T00:02:03Z"


class TestNaiveTimes:
    @pytest.mark.parametrize("field", ["start", "end"])
    def test_naive_datetime_is_refused_naming_the_argument(self, field):
        naive = dt.datetime(2026, 1, 1, 12, 0)
        arguments = {"start": START, "end": START + DAY, field: naive}

        with pytest.raises(OnTrackConfigError) as raised:
            change_windows(**arguments)

        assert raised.value.field == field
        assert "time zone" in str(raised.value)
        assert str(raised.value).startswith(f"{field}:")

    def test_both_naive_names_start_first(self):
        with pytest.raises(OnTrackConfigError) as raised:
            change_windows(dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1))

        assert raised.value.field == "start"
