"""Give the engine back the CPU priority Ray takes from its workers.

Ray starts worker processes at niceness 15, so its own services stay responsive. An engine
on CPU cores runs a team of OpenMP threads that meet at a barrier after every operation: when
anything else on the node wakes up (the raylet, the driver, Ray Data's stats actors), the
kernel preempts a niced engine thread first, and the whole team waits for it. Measured here:
the engine stepped at about 0.65 of its speed outside Ray.

Linux niceness is per thread and inherited by threads created later, so this is called in
the actor's constructor, before the engine and its threads start. Lowering niceness needs
CAP_SYS_NICE (root, or a pod granted it); without it the engine runs niced and the actor
record says so.
"""

from __future__ import annotations

import os


def restore_priority(target: int = 0) -> int:
    """Set this thread's niceness to `target` if allowed; returns the niceness now in effect."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current > target:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, target)  # 0: this thread (Linux)
        except PermissionError:
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)
