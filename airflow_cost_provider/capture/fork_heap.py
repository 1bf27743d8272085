"""Keep the OpenLineage listener's forked children off the task process's heap.

The OpenLineage listener forks a child for each task event. A garbage collection that starts in that
child walks every object it inherited and writes to each one's header, so the kernel copies every page
of the parent's heap, and whatever it finds is thrown away when the child exits: under `airflow dags
test` (about 860,000 objects in the one process) a full collection in such a child took 0.8 s where the
child otherwise takes 15 ms. Freezing the heap while the task listeners run (gc.freeze, as Airflow's
LocalExecutor does around its own forks) leaves the child's collections only the objects the child
makes. The parent unfreezes once the listeners are done: objects only move between generations (the
young ones to the oldest, where a garbage cycle among them waits for the next full collection), none is
kept for good.

The plugin registers the two listeners that do it only when OpenLineage forks (not disabled, not
[openlineage] execute_in_thread) and [cost_provider] freeze_heap_for_openlineage is on. Nothing is
frozen when garbage collection is off, or when something else already froze the heap (the LocalExecutor
forks its workers with the heap frozen, and their task processes inherit it): unfreezing would undo
that freeze too.
"""

from __future__ import annotations

import functools
import gc

_frozen_here = False


@functools.cache
def openlineage_forks() -> bool:
    """Whether the OpenLineage listener in this process forks a child for each task event."""
    try:
        from airflow.providers.openlineage import conf as ol_conf

        execute_in_thread = getattr(ol_conf, "execute_in_thread", None)  # not in older providers
        return not ol_conf.is_disabled() and not (execute_in_thread is not None and execute_in_thread())
    except Exception:  # not installed, or a configuration it cannot read: it will not fork either
        return False


def freeze() -> bool:
    """Freeze the heap before the other task listeners run; True if this call froze it."""
    global _frozen_here
    if _frozen_here or not gc.isenabled() or gc.get_freeze_count():
        return False
    gc.freeze()
    _frozen_here = True
    return True


def release() -> bool:
    """Undo what freeze() did, after the other task listeners ran; True if there was something to undo."""
    global _frozen_here
    if not _frozen_here:
        return False
    _frozen_here = False
    gc.unfreeze()
    return True
