"""Rendezvous hashing of targets over live replicas (monitor.replicas.owner/assign/moved)."""

from __future__ import annotations

import pytest

from expressway_certd.monitor.replicas import assign, moved, new_replica_id, owner

TARGETS = [f"expe-{i:04d}" for i in range(1000)]
R3 = ["a:1:00", "b:1:00", "c:1:00"]


def test_every_target_has_exactly_one_owner():
    split = assign(TARGETS, R3)
    owned = [t for ts in split.values() for t in ts]
    assert sorted(owned) == sorted(TARGETS)
    assert set(split) == set(R3)


def test_stable_when_membership_does_not_change():
    # same membership in another order, computed by another "process": same owners
    assert assign(TARGETS, R3) == assign(reversed(TARGETS), list(reversed(R3)))
    assert moved(assign(TARGETS, R3), assign(TARGETS, sorted(R3))) == set()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (R3, R3[:2]),  # c dies
        (R3, [R3[0], R3[2]]),  # b dies
        (R3, [*R3, "d:1:00"]),  # d joins
        (["a:1:00"], ["a:1:00", "b:1:00"]),  # a second replica starts
    ],
)
def test_minimal_movement_on_change(before, after):
    old, new = assign(TARGETS, before), assign(TARGETS, after)
    gone = set(before) - set(after)
    joined = set(after) - set(before)
    expected = {t for r in gone for t in old[r]} | {t for r in joined for t in new[r]}
    assert moved(old, new) == expected  # only the leaver's targets, or the joiner's, move
    assert expected  # (and something did move)


def test_the_split_is_roughly_even():
    sizes = sorted(len(ts) for ts in assign(TARGETS, R3).values())
    assert sizes[0] > 1000 / 3 * 0.8 and sizes[-1] < 1000 / 3 * 1.2  # deterministic input


def test_no_live_replica_owns_nothing():
    assert owner("expe-1", []) is None
    assert assign(TARGETS, []) == {}


def test_known_owners_table():
    # pinned: a change of the hash would reshuffle a running fleet during a rolling upgrade
    # (replicas of two releases would disagree on owners)
    assert {t: owner(t, R3) for t in ("expe-0000", "expe-0001", "expe-0002", "expe-0003")} == {
        "expe-0000": "b:1:00",
        "expe-0001": "c:1:00",
        "expe-0002": "c:1:00",
        "expe-0003": "a:1:00",
    }


def test_replica_ids_are_unique_per_start():
    a, b = new_replica_id("host", 1), new_replica_id("host", 1)
    assert a != b and a.startswith("host:1:")
