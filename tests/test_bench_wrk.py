"""Reading wrk's figures back, combining processes, and the hot SKU's oversell check."""

import json

import pytest

from tools.bench import BenchError, wrk
from tools.bench.catalog import Stock
from tools.bench.scenarios import oversell_check, split


def line(requests: int, sent: int, status: int, latency_us: int) -> str:
    figures = {
        "requests": requests, "duration_us": 2_000_000, "sent": sent, "connect": 0,
        "read": 0, "write": 0, "status": status, "timeout": 1, "mean_us": latency_us,
        "quantiles_us": [[50, latency_us], [99, 2 * latency_us], [100, 3 * latency_us]],
    }  # fmt: skip
    return "Running 2s test @ http://x\n" + wrk.MARK + json.dumps(figures) + "\n"


def test_parse_reads_counts_errors_and_quantiles_in_seconds() -> None:
    result = wrk.parse(line(1000, 1004, 10, 2000))
    assert (result.requests, result.ok, result.in_flight) == (1000, 990, 4)
    assert result.rate == 495.0
    assert result.errors == {"connect": 0, "read": 0, "write": 0, "status": 10, "timeout": 1}
    assert result.latency(50) == 0.002
    assert result.latency(99) == 0.004


def test_output_without_figures_is_an_error_that_shows_it() -> None:
    with pytest.raises(BenchError, match="unable to connect"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_combine_adds_counts_and_merges_latencies() -> None:
    fast, slow = wrk.parse(line(100, 100, 0, 1000)), wrk.parse(line(300, 302, 0, 10_000))
    fast.cpu, slow.cpu = 0.5, 0.25
    both = wrk.combine([fast, slow])
    assert (both.requests, both.sent, both.in_flight, both.parts) == (400, 402, 2, 2)
    assert both.cpu == 0.75
    assert both.rate == 200.0
    assert both.latency(50) == 0.010
    assert both.mean == pytest.approx((100 * 0.001 + 300 * 0.010) / 400)


def test_orders_script_names_its_keys_and_skus() -> None:
    script = wrk.orders_script("tok", "run1", sku_format="S%05d", sku_count=10_000)
    assert "Bearer tok" in script
    assert '"run1-"' in script
    assert "S%05d" in script
    assert "function done(" in script
    assert wrk.MARK in script


def test_split_spreads_clients_over_nodes() -> None:
    assert split(16, 3) == [6, 5, 5]
    assert split(256, 3) == [86, 85, 85]
    assert split(2, 3) == [1, 1]


def checked(reserved_after: int, ok: int, sent: int) -> dict[str, object]:
    result = wrk.parse(line(ok, sent, 0, 1000))
    return oversell_check(Stock(1000, 100, 5), Stock(1000, reserved_after, 9), result)


def test_every_acknowledged_order_holds_its_unit() -> None:
    found = checked(reserved_after=150, ok=50, sent=50)
    assert found["ok"]
    assert found["lost"] == 0
    assert found["oversold"] == 0


def test_units_held_past_the_acknowledged_are_orders_in_flight_at_the_stop() -> None:
    assert checked(reserved_after=153, ok=50, sent=53)["ok"]
    found = checked(reserved_after=153, ok=50, sent=51)
    assert not found["ok"]
    assert found["unexplained"] == 2


def test_an_acknowledged_order_missing_from_the_database_is_lost() -> None:
    found = checked(reserved_after=149, ok=50, sent=50)
    assert not found["ok"]
    assert found["lost"] == 1
