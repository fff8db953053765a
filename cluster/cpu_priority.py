"""Give the engine the node's CPU before everything else of ours.

Ray starts worker processes at niceness 15, so its own services stay responsive. An engine
on CPU cores runs a team of OpenMP threads that meet at a barrier after every operation: when
anything else on the node wakes up (the raylet, the driver, Ray Data's stats actors), the
kernel preempts a niced engine thread first, and the whole team waits for it. Measured here:
the engine stepped at about 0.65 of its speed outside Ray.

Linux niceness is per thread and inherited by threads created later, so this is called in
the actor's constructor, before the engine and its threads start. Lowering niceness needs
CAP_SYS_NICE (root, or a pod granted it); without it the engine runs niced and the actor
record says so.

The driver yields too (`yield_to_engines`): it and the local Ray it starts (GCS, raylet, Ray
Data's executor) otherwise run at the engine's priority and take its cores at every wake-up.
Measured on the long-tail bench set, in the same rounds: spotbatch x0.959 and x0.875 of plain
vLLM with the driver at niceness 0, x0.977 and x0.928 with it at 10.
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


DRIVER_NICENESS = 10  # the engine runs at 0; the kernel still gives a niceness-10 thread ~10% of a busy core


def can_raise_priority() -> bool:
    """Whether this process may lower niceness (CAP_SYS_NICE), as an engine actor must to
    take its priority back."""
    try:
        with open("/proc/self/status") as fh:
            caps = next(line.split()[1] for line in fh if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caps, 16) >> 23 & 1)  # bit 23: CAP_SYS_NICE


def yield_to_engines() -> int:
    """Put the calling thread, and every thread and process it starts from now on, at niceness
    DRIVER_NICENESS: call it first thing in the driver, before any thread exists. Only where the
    engine can restore its own priority: otherwise it would sink with the rest. Returns the
    niceness now in effect."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < DRIVER_NICENESS and can_raise_priority():
        os.setpriority(os.PRIO_PROCESS, 0, DRIVER_NICENESS)
    return os.getpriority(os.PRIO_PROCESS, 0)
