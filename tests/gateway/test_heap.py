"""`settle_heap`: what survives start-up is frozen out of the collector's passes, and
garbage made afterwards is still collected."""

from __future__ import annotations

import gc

from fedgate.gateway.heap import settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_what_survives_is_frozen_and_later_garbage_still_collected() -> None:
    tracked = len(gc.get_objects())
    try:
        frozen = settle_heap()
        assert frozen == gc.get_freeze_count() >= tracked // 2  # this process's start-up
        assert len(gc.get_objects()) < frozen // 10  # a full pass no longer walks them
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made after start-up: only the collector frees it
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
