"""Properties of the pure claim budget (pgflow/budget.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgflow.budget import claim_budget, partition_room, split_fairly

counts = st.integers(0, 50)
limits = st.none() | st.integers(1, 50)


@given(free_slots=counts, local_running=counts, worker_concurrency=limits,
       concurrency=limits, running=counts, rate_limit=limits, started_in_window=counts)
def test_claim_budget_is_the_tightest_room_and_never_negative(
        free_slots: int, local_running: int, worker_concurrency: int | None,
        concurrency: int | None, running: int, rate_limit: int | None,
        started_in_window: int) -> None:
    n = claim_budget(free_slots=free_slots, local_running=local_running,
                     worker_concurrency=worker_concurrency, concurrency=concurrency,
                     running=running, rate_limit=rate_limit,
                     started_in_window=started_in_window)
    rooms = [free_slots]
    if worker_concurrency is not None:
        rooms.append(worker_concurrency - local_running)
    if concurrency is not None:
        rooms.append(concurrency - running)
    if rate_limit is not None:
        rooms.append(rate_limit - started_in_window)
    assert n >= 0
    assert n <= free_slots
    if worker_concurrency is not None:
        assert local_running + n <= max(worker_concurrency, local_running)
    if concurrency is not None:
        assert running + n <= max(concurrency, running)
    if rate_limit is not None:
        assert started_in_window + n <= max(rate_limit, started_in_window)
    # ... and it takes all the room there is: one more would break a limit.
    assert n == max(0, min(rooms))


@given(concurrency=limits, running=counts, rate_limit=limits, started_in_window=counts,
       cap=counts)
def test_partition_room_honours_the_key_limits_and_the_cap(
        concurrency: int | None, running: int, rate_limit: int | None,
        started_in_window: int, cap: int) -> None:
    n = partition_room(concurrency=concurrency, running=running, rate_limit=rate_limit,
                       started_in_window=started_in_window, cap=cap)
    assert 0 <= n <= cap
    if concurrency is not None:
        assert running + n <= max(concurrency, running)
    if rate_limit is not None:
        assert started_in_window + n <= max(rate_limit, started_in_window)
    rooms = [cap] + ([concurrency - running] if concurrency is not None else []) + (
        [rate_limit - started_in_window] if rate_limit is not None else [])
    assert n == max(0, min(rooms))


keys = st.lists(st.text("abcdefgh", min_size=1, max_size=3), unique=True, max_size=8)


@st.composite
def splits(draw: st.DrawFn) -> tuple[int, dict[str, int], list[str]]:
    order = draw(keys)
    # Rooms may be zero or negative (a key over its limit), and may name keys not in order.
    rooms = {k: draw(st.integers(-3, 12)) for k in order}
    rooms.update(draw(st.dictionaries(st.text("xyz", min_size=1, max_size=2),
                                      st.integers(0, 5), max_size=2)))
    return draw(st.integers(-2, 60)), rooms, order


@given(splits())
def test_split_fairly_never_exceeds_a_room_and_hands_out_what_fits(
        case: tuple[int, dict[str, int], list[str]]) -> None:
    total, rooms, order = case
    shares = split_fairly(total, rooms, order)
    assert set(shares) <= set(order)
    for key, share in shares.items():
        assert 1 <= share <= rooms[key]
    room_left = sum(max(0, rooms.get(k, 0)) for k in order)
    assert sum(shares.values()) == min(max(0, total), room_left)


@given(splits())
def test_split_fairly_is_round_robin_fair(case: tuple[int, dict[str, int], list[str]]) -> None:
    total, rooms, order = case
    shares = split_fairly(total, rooms, order)
    got = {k: shares.get(k, 0) for k in order}
    uncapped = [k for k in order if got[k] < rooms.get(k, 0)]
    # A key that could take more got at most one less than any other key...
    for key in uncapped:
        assert all(got[other] <= got[key] + 1 for other in order), (key, got)
    # ...and the keys given one extra come first in the rotation order.
    for i, a in enumerate(uncapped):
        for b in uncapped[i + 1:]:
            assert got[a] >= got[b], (a, b, got)
