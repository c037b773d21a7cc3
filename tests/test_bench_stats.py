"""The bench's arithmetic: percentiles, merged wrk distributions, missed changes."""

from tools.bench import stats


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert stats.percentile([], 50) is None


def test_quantiles_sort_once_and_agree_with_percentile() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    table = stats.quantiles(values, [20, 60, 100])
    assert table == [(20, 1.0), (60, 3.0), (100, 5.0)]
    assert [v for _, v in table] == [stats.percentile(values, p) for p in (20, 60, 100)]


def test_at_reads_the_first_entry_at_or_past_a_percent() -> None:
    table = [(50.0, 0.001), (99.0, 0.01), (100.0, 0.1)]
    assert stats.at(table, 50) == 0.001
    assert stats.at(table, 75) == 0.01
    assert stats.at([], 50) is None


def test_merge_weights_each_distribution_by_its_count() -> None:
    fast = [(float(p), 0.001) for p in range(1, 101)]  # 100 requests, all 1 ms
    slow = [(float(p), 0.010) for p in range(1, 101)]  # 300 requests, all 10 ms
    merged = stats.merge([(100, fast), (300, slow)], [25.0, 26.0, 50.0, 100.0])
    assert merged == [(25.0, 0.001), (26.0, 0.010), (50.0, 0.010), (100.0, 0.010)]


def test_merge_of_one_distribution_is_itself() -> None:
    table = stats.quantiles([float(v) for v in range(1, 1001)], stats.CDF_PERCENTS)
    assert stats.merge([(1000, table)], stats.CDF_PERCENTS) == table
    assert stats.merge([(0, table)], [50.0]) == []


def test_missed_counts_changes_never_received_and_products_left_stale() -> None:
    ledger = {10: ("A", 2), 11: ("A", 3), 12: ("B", 5), 13: ("B", 6)}
    # A: the middle version was coalesced away but the latest arrived.
    # B: the latest never arrived: the client's picture is wrong.
    found = stats.missed_changes(ledger, [11, 12], {"A": 3, "B": 5})
    assert found == stats.Missed(missed=2, stale=1)


def test_a_snapshot_that_carries_the_latest_version_leaves_nothing_stale() -> None:
    ledger = {1: ("A", 2)}
    assert stats.missed_changes(ledger, [], {"A": 2}) == stats.Missed(missed=1, stale=0)
    assert stats.missed_changes(ledger, [1], {"A": 2}) == stats.Missed(missed=0, stale=0)
