"""The chaos schedule: drawn from the seed alone, every kind of fault, a quiet tail."""

from tools.chaos.faults import FIRST_AT, KINDS, quiet_tail, schedule

NODES = ["node-1", "node-2", "node-3"]


def test_the_seed_alone_decides_the_schedule() -> None:
    assert schedule(1, 25, NODES) == schedule(1, 25, NODES)
    assert schedule(1, 25, NODES) != schedule(2, 25, NODES)


def test_every_kind_strikes_and_none_in_the_quiet_tail() -> None:
    for seconds in (25, 60, 300):
        plan = schedule(7, seconds, NODES)
        assert {fault.kind for fault in plan} == set(KINDS)
        assert all(FIRST_AT <= fault.at <= seconds - quiet_tail(seconds) for fault in plan)
        assert [fault.at for fault in plan] == sorted(fault.at for fault in plan)
    assert len(schedule(7, 300, NODES)) > len(schedule(7, 60, NODES))


def test_each_fault_names_what_it_strikes() -> None:
    targets = {fault.kind: fault.target for fault in schedule(3, 120, NODES)}
    assert targets["node_kill"] in NODES
    assert targets["postgres_restart"] == "postgres"
    assert {targets[kind] for kind in ("redis_kill", "redis_pause", "bus_drop")} == {"redis"}


def test_a_run_too_short_for_faults_has_none() -> None:
    assert schedule(1, 5, NODES) == []
