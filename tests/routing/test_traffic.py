"""The console's per-minute windows and ring of recent requests (routing.traffic)."""

from __future__ import annotations

import json

from routing.traffic import (
    MAX_KEYS_PER_MINUTE,
    MINUTES,
    OTHER,
    RecentRequests,
    TrafficWindow,
    merge_windows,
    per_minute,
)

T0 = 1_700_000_040.0  # a minute boundary (divisible by 60)


def window_json(window: TrafficWindow) -> dict:
    return json.loads(window.to_json())


def test_rates_error_shares_and_percentiles_over_five_minutes_and_an_hour() -> None:
    window = TrafficWindow(clock=lambda: T0 + 30 * 60 + 30)
    # 30 minutes ago: 100 slow requests; in the current minute: 90 fast 200s, 6 404s, 4 502s.
    for _ in range(100):
        window.add("acme", "/a", "api", 200, 0.800, T0)
    now = T0 + 30 * 60 + 30
    for _ in range(90):
        window.add("acme", "/a", "api", 200, 0.004, now)
    for _ in range(6):
        window.add("acme", "/a", "api", 404, 0.004, now)
    for _ in range(4):
        window.add("acme", "/a", "api", 502, 0.040, now)
    data = [window_json(window)]

    five, seconds = merge_windows(data, now=now, minutes=5)
    agg = five[("acme", "/a", "api")]
    assert (agg.requests, agg.client_errors, agg.server_errors) == (100, 6, 4)
    assert seconds == 4 * 60 + 30  # four whole minutes and the current half minute
    assert 3 <= agg.percentile(0.5) <= 5  # the 4 ms bucket
    assert 30 <= agg.percentile(0.99) <= 40  # the 502s took 40 ms

    hour, seconds = merge_windows(data, now=now, minutes=60)
    agg = hour[("acme", "/a", "api")]
    assert agg.requests == 200 and seconds == 59 * 60 + 30
    assert 700 <= agg.percentile(0.99) <= 1000  # the slow half of the hour


def test_old_minutes_age_out_and_memory_stays_bounded() -> None:
    window = TrafficWindow(clock=lambda: T0 + 200 * 60)
    for minute in range(200):
        window.add("acme", "/a", "", 200, 0.001, T0 + minute * 60)
    assert len(window.closed) == MINUTES
    data = window_json(window)
    minutes = [m for m, _rows in data["minutes"]]
    # Now is minute 200 (no request yet): the hour is minutes 141..200.
    assert minutes == list(range(int(T0) // 60 + 141, int(T0) // 60 + 200))
    rows, _ = merge_windows([data], now=T0 + 200 * 60, minutes=60)
    assert rows[("acme", "/a", "")].requests == 59  # the current minute (200) has no request


def test_a_flood_of_distinct_routes_folds_into_one_row() -> None:
    window = TrafficWindow(clock=lambda: T0)
    for n in range(MAX_KEYS_PER_MINUTE + 50):
        window.add("acme", f"/r{n}", "api", 200, 0.001, T0)
    assert len(window.current) == MAX_KEYS_PER_MINUTE + 1
    assert window.current[("acme", OTHER, "")][0] == 50


def test_workers_windows_add_up_minute_by_minute() -> None:
    a, b = TrafficWindow(clock=lambda: T0 + 90), TrafficWindow(clock=lambda: T0 + 90)
    a.add("acme", "/a", "api", 200, 0.001, T0 + 10)
    b.add("acme", "/a", "api", 500, 0.001, T0 + 70)
    b.add("globex", "/", "", 200, 0.001, T0 + 70)
    charts = per_minute([window_json(a), window_json(b)], now=T0 + 90, minutes=2)
    assert charts["acme"] == [(T0, 1, 0, 0), (T0 + 60, 1, 0, 1)]
    assert charts["globex"] == [(T0, 0, 0, 0), (T0 + 60, 1, 0, 0)]


def test_recent_requests_keep_the_newest_in_milliseconds() -> None:
    ring = RecentRequests(size=3)
    for n in range(5):
        ring.add((f"id{n}", T0 + n, "acme", "/a", 200, "api", 2, "GET", "/a", 0.0125, 0.01,
                  0.0001, 0, ""))
    rows = ring.to_list()
    assert [r[0] for r in rows] == ["id2", "id3", "id4"]
    assert dict(zip(RecentRequests.FIELDS, rows[-1], strict=True))["total_ms"] == 12.5
