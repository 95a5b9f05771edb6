"""The flower suite's order: the compared runs in turns, rotated each turn, per client
count, so the machine's drift falls on each alike; the other runs once."""

from __future__ import annotations

from test_flower import CLIENTS, COMPARED, REPEATS, RUNS, cases


def test_compared_runs_take_turns_in_a_rotated_order() -> None:
    ordered = cases(quick=False)
    for clients in CLIENTS[False]:
        mine = [case for case in ordered if case[4] == clients]
        turns = REPEATS[False] * len(COMPARED)
        compared = [case[:4] for case in mine[:turns]]
        firsts = [compared[t * len(COMPARED)] for t in range(REPEATS[False])]
        assert firsts == [COMPARED[t % len(COMPARED)] for t in range(REPEATS[False])]
        for t in range(REPEATS[False]):  # every turn runs each compared run once
            assert sorted(compared[t * len(COMPARED) : (t + 1) * len(COMPARED)]) == sorted(COMPARED)
        assert [case[5] for case in mine[:turns]] == [
            t + 1 for t in range(REPEATS[False]) for _ in COMPARED
        ]
        rest = [case[:4] for case in mine[turns:]]
        assert rest == [run for run in RUNS if run not in COMPARED]


def test_the_quick_suite_runs_each_once() -> None:
    ordered = cases(quick=True)
    assert all(case[5] == 1 for case in ordered)
    assert len(ordered) == len({case[:5] for case in ordered})
