"""What one invocation of a run did (the counts of the units it committed), and what the whole
output cost so far: what `pipelines.run.run` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.cost import CostSummary
from pipelines.store.counts import UnitCounts, counts_of
from pipelines.unit.protocol import Skip, UnitOutcome


@dataclass
class RunSummary(UnitCounts):
    """What one invocation did (the counts of the units it committed), and what the whole
    output cost so far."""

    output: str = ""
    units_total: int = 0
    units_run: int = 0  # units this invocation committed
    units_skipped: int = 0  # units another run (or a stale attempt) committed first
    skipped_why: dict[str, int] = field(default_factory=dict)  # why units were not committed here, by reason
    units_unfinished: int = 0  # units left pending: the storage kept failing them, or their input changed
    left_to_others: int = 0  # units another run still held when this one stopped waiting
    last_fault: str | None = None  # why, the last time
    wall_seconds: float = 0.0
    finished: bool = False
    stopped: str | None = None  # why the run ended early: budget, deadline, cancelled (pipelines/stops/stopping.py)
    cost: CostSummary | None = None  # of the whole output, every invocation so far
    startup: dict | None = None  # where this run's first seconds went (pipelines/store/startup.py)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def add_unit(self, unit: UnitOutcome) -> None:
        if unit.committed:
            self.units_run += 1
            self.add(counts_of(unit))
        else:  # engine time spent on a unit another attempt committed first still counts
            self.units_skipped += 1
            why = unit.skip.value if unit.skip else "not committed"
            self.skipped_why[why] = self.skipped_why.get(why, 0) + 1
            self.engine_seconds += unit.engine_seconds
            if unit.skip in (Skip.STORAGE_ERROR, Skip.INPUT_CHANGED):
                self.units_unfinished += 1
                self.last_fault = unit.skipped
