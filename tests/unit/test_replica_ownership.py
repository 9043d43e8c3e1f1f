"""Ownership: what one replica owns as live membership changes (monitor/replicas.py)."""

from __future__ import annotations

from datetime import timedelta

from expressway_certd.monitor.replicas import (
    Ownership,
    assign,
    heartbeat_interval,
    heartbeat_timeout,
)

TARGETS = [f"exp{i:03d}" for i in range(200)]


def test_three_replicas_partition_the_targets_and_agree() -> None:
    live = ["a", "b", "c"]
    views = {r: Ownership(r) for r in live}
    for own in views.values():
        own.update(live, TARGETS)
    owned = [views[r].owned for r in live]
    assert set().union(*owned) == set(TARGETS)
    assert sum(len(o) for o in owned) == len(TARGETS)
    assert all(owned)
    assert {r: set(ts) for r, ts in assign(TARGETS, live).items()} == {
        r: set(views[r].owned) for r in live
    }


def test_a_dead_replica_s_targets_move_to_the_survivors_and_nothing_else_moves() -> None:
    a, b = Ownership("a"), Ownership("b")
    for own in (a, b):
        own.update(["a", "b", "c"], TARGETS)
    before_a, before_b = a.owned, b.owned
    change_a = a.update(["a", "b"], TARGETS)
    change_b = b.update(["a", "b"], TARGETS)
    assert not change_a.lost and not change_b.lost
    assert change_a.gained | change_b.gained == set(TARGETS) - before_a - before_b
    assert a.owned | b.owned == set(TARGETS) and not a.owned & b.owned
    # unchanged membership: nothing moves
    assert a.update(["a", "b"], TARGETS).gained == frozenset()


def test_a_replica_missing_from_the_live_list_still_counts_itself() -> None:
    me = Ownership("me")
    me.update(["other"], TARGETS)  # our own heartbeat was late
    assert me.owned and "me" in me.live
    alone = Ownership("alone")
    alone.update([], TARGETS)
    assert alone.owned == set(TARGETS)


def test_heartbeat_follows_the_poll_interval_within_bounds() -> None:
    assert heartbeat_interval(timedelta(minutes=5)) == timedelta(seconds=10)
    assert heartbeat_interval(timedelta(seconds=6)) == timedelta(seconds=2)
    assert heartbeat_interval(timedelta(seconds=1)) == timedelta(seconds=1)
    assert heartbeat_timeout(timedelta(minutes=5)) == timedelta(seconds=30)
