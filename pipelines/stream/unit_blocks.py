"""How pending units are cut into Ray Data blocks, so the driver's cost does not grow with them.

Up to ONE_PER_BLOCK units, each is a block of its own: dispatched alone, to whichever actor is
free. Beyond, Ray Data's driver would hold, schedule and track one block per unit (100k at
100k units), so units are grouped, and the groups shrink as the run goes (guided
self-scheduling): at most about HEAD_BLOCKS large ones, then ever smaller, the last ones
single units, so no actor is left with a long block while the others idle. The number of
blocks then grows with the fleet (its slots: actors x units in flight), not with the units.

A block is read into one block of rows (Ray Data makes one output block of each input block
when block shaping is off, pipelines/stream/ray_data.py), so a unit still reaches its actor whole, in
one call, or not at all.

>>> len(block_sizes(1000, slots=20)), set(block_sizes(1000, slots=20))
(1000, {1})
>>> sizes = block_sizes(100_000, slots=20)
>>> sum(sizes), len(sizes) < 1300, sizes[0], sizes[-40:] == [1] * 40
(100000, True, 98, True)
>>> len(block_sizes(10_000, slots=20)) < 1300
True
"""

from __future__ import annotations

import math

ONE_PER_BLOCK = 1024  # units up to which each unit is its own block
HEAD_BLOCKS = 1024  # about how many full-size blocks a large run is cut into


def block_sizes(units: int, slots: int) -> list[int]:
    """Sizes of consecutive blocks over `units` units, for a fleet of `slots` unit slots."""
    if units <= ONE_PER_BLOCK:
        return [1] * units
    most = math.ceil(units / HEAD_BLOCKS)
    share = 2 * max(1, slots)  # each slot takes about half its fair share of what is left
    sizes, left = [], units
    while left:
        size = max(1, min(most, math.ceil(left / share)))
        sizes.append(size)
        left -= size
    return sizes


def group(items: list, sizes: list[int]) -> list[list]:
    """`items` cut into consecutive lists of `sizes`."""
    groups, start = [], 0
    for size in sizes:
        groups.append(items[start:start + size])
        start += size
    return groups
