"""The heap frozen around the OpenLineage listener's forks: a forked child's collector sees only what the
child made, the parent gets its heap back unfrozen once the listeners ran, and a freeze made by
something else is never undone."""

from __future__ import annotations

import gc
import json
import os

import pytest
from airflow._shared.listeners.listener import ListenerManager
from airflow._shared.listeners.spec import taskinstance
from airflow.providers.common.compat.sdk import hookimpl

from airflow_cost_provider.capture import fork_heap
from airflow_cost_provider.listener import (
    HeapFreezer,
    HeapReleaser,
    RunsFirstCostListener,
    RunsLastCostListener,
    make_listeners,
)
from tests.support.fake_ti import FakeTaskInstance

HEAP = 50_000  # objects the parent holds: a heap a child's collection would have to walk


@pytest.fixture(autouse=True)
def nothing_left_frozen():
    assert gc.get_freeze_count() == 0
    yield
    fork_heap.release()
    gc.unfreeze()


def in_forked_child(work) -> dict:
    """What work() returns, computed in a forked child (as the OpenLineage listener's events are)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and exit, whatever happens
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(data)


def collector_view() -> dict:
    return {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}


def test_a_forked_child_collects_only_what_it_made_while_the_listeners_run():
    heap = [[i] for i in range(HEAP)]
    ti = FakeTaskInstance()
    unguarded = in_forked_child(collector_view)

    HeapFreezer().on_task_instance_success(previous_state=None, task_instance=ti)
    guarded = in_forked_child(collector_view)
    HeapReleaser().on_task_instance_success(previous_state=None, task_instance=ti)

    assert unguarded["frozen"] == 0 and unguarded["tracked"] > HEAP
    assert guarded["frozen"] > HEAP and guarded["tracked"] < HEAP // 10
    # the parent's objects are back where its collector sees them, none lost
    assert gc.get_freeze_count() == 0
    assert len(gc.get_objects()) > HEAP and all(gc.is_tracked(item) for item in heap[:: HEAP // 100])


def test_each_event_kind_freezes_and_releases():
    ti = FakeTaskInstance()
    freezer, releaser = HeapFreezer(), HeapReleaser()
    for event, extra in (
        ("on_task_instance_running", {}),
        ("on_task_instance_success", {}),
        ("on_task_instance_failed", {"error": RuntimeError("boom")}),
        ("on_task_instance_skipped", {}),
    ):
        getattr(freezer, event)(previous_state=None, task_instance=ti, **extra)
        assert gc.get_freeze_count() > 0, event
        getattr(releaser, event)(previous_state=None, task_instance=ti, **extra)
        assert gc.get_freeze_count() == 0, event


def test_a_heap_frozen_by_something_else_stays_frozen():
    kept = [object()]  # a tracked object made before the freeze
    gc.freeze()  # as the LocalExecutor's forked workers, and their task processes, inherit it
    assert fork_heap.freeze() is False
    assert fork_heap.release() is False
    # still in the permanent generation, in none of the collected ones (the frozen count itself
    # drops as other threads free frozen objects, so it is no measure)
    assert gc.get_freeze_count() > 0
    assert not any(found is kept for generation in range(3) for found in gc.get_objects(generation))


def test_nothing_is_frozen_with_garbage_collection_off():
    gc.disable()
    try:
        assert fork_heap.freeze() is False
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_one_release_undoes_a_repeated_freeze_and_a_lone_release_does_nothing():
    assert fork_heap.release() is False
    assert fork_heap.freeze() is True
    assert fork_heap.freeze() is False  # a release skipped after a listener raised: still one freeze
    assert fork_heap.release() is True
    assert gc.get_freeze_count() == 0
    assert fork_heap.release() is False


class ForkingListener:
    """Stands in for the OpenLineage listener: no ordering, forks a child per event."""

    def __init__(self) -> None:
        self.children: list[dict] = []

    @hookimpl
    def on_task_instance_running(self, previous_state, task_instance) -> None:
        self.children.append(in_forked_child(collector_view))

    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance) -> None:
        self.children.append(in_forked_child(collector_view))


@pytest.mark.parametrize("order", ["first", "last"])
@pytest.mark.parametrize("forking_registered_first", [True, False])
def test_airflow_calls_the_pair_around_the_other_listeners(order, forking_registered_first):
    heap = [[i] for i in range(HEAP)]
    manager = ListenerManager()
    manager.add_hookspecs(taskinstance)
    forking = ForkingListener()
    ours = make_listeners(order, freeze_heap=True)
    # pluggy calls unordered hookimpls by registration: the OpenLineage provider's listener may come
    # before or after the plugin's
    for listener in [forking, *ours] if forking_registered_first else [*ours, forking]:
        manager.add_listener(listener)
    ti = FakeTaskInstance()

    manager.hook.on_task_instance_running(previous_state=None, task_instance=ti)
    assert gc.get_freeze_count() == 0  # the task itself runs with its heap unfrozen
    manager.hook.on_task_instance_success(previous_state=None, task_instance=ti)
    assert gc.get_freeze_count() == 0

    assert len(forking.children) == 2
    assert all(child["frozen"] > HEAP and child["tracked"] < HEAP // 10 for child in forking.children)
    assert len(heap) == HEAP


def test_the_pair_is_left_out_when_not_asked_for():
    assert [type(listener) for listener in make_listeners("first", freeze_heap=False)] == [
        RunsFirstCostListener
    ]
    assert [type(listener) for listener in make_listeners("last", freeze_heap=True)] == [
        HeapFreezer,
        RunsLastCostListener,
        HeapReleaser,
    ]
