"""Warm engines: engine actors that outlive a run, for a driver that stays up (a notebook, a
Python process, a long job), released after `compute.keep_warm_seconds` with no work so the
cluster scales to zero.

Why actors the driver owns, not Ray Serve: a Serve replica is driven by requests and gives no
say over which replica takes which call or when a queued call is re-sent; a unit must go to an
engine whose run context it knows, at most `units_in_flight` at a time, and a lost one must come
back to the driver to be sent again. Owned actors do that with plain Ray calls, die with their
driver (nothing outlives the kernel), and need no Serve controller or proxy on the cluster.

A run with warm engines feeds them its units itself (pipelines/engine/warm_feed.py), instead of through
Ray Data's actor pool: the same EngineActor (pipelines/engine/actor.py) and the same unit protocol,
so exactly-once, resume, preemption and the notice drain hold as they do there. A unit whose
actor died is sent again; Ray restarts the actor (on another node if its node is gone).
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cluster.resources import ActorResources

log = logging.getLogger("spotbatch.warm")

REAP_SECONDS = 1.0  # how often idle engines are looked at
DEFAULT_KEEP_WARM_SECONDS = 300.0  # compute.keep_warm_seconds in an interactive Python


def keep_warm_seconds(spec) -> float:
    """compute.keep_warm_seconds, or its default: a few minutes where a person iterates (a
    notebook, a REPL), none in the CLI, a Ray job or a nightly run."""
    if spec.compute.keep_warm_seconds is not None:
        return spec.compute.keep_warm_seconds
    return DEFAULT_KEEP_WARM_SECONDS if interactive_python() else 0.0


def interactive_python() -> bool:
    """A REPL or an IPython shell (a notebook's kernel is one); not a script, a job or a test."""
    import sys

    from pipelines.progress import ipython_shell

    return hasattr(sys, "ps1") or ipython_shell() is not None


def engine_key(spec_data: dict[str, Any], model_source: dict[str, Any], resources: ActorResources,
               adapter_sources: dict[str, Any] | None = None) -> str:
    """What an engine is: the weights, how they are loaded, and what the actor holds. A run
    that differs in any of it gets other engines."""
    compute = spec_data["compute"]
    return json.dumps({
        "model": spec_data["model"], "source": model_source.get("pin"), "seed": spec_data["sampling"].get("seed"),
        **({"adapters": {k: s.get("pin") for k, s in adapter_sources.items()}} if adapter_sources else {}),
        **({"task": "embed"} if spec_data.get("task") == "embed" else {}),  # a pooling engine embeds only
        "resources": [resources.cpus, resources.gpus, resources.accelerator_type, resources.spot_resource,
                      sorted(resources.custom_resources().items())],
        "engine": [compute.get("engine_threads"), compute.get("max_tokens_in_flight"),
                   compute.get("preemption_notice")],
    }, sort_keys=True, default=str)


@dataclass
class Engines:
    key: str
    hosts: list[Any]
    keep_warm_seconds: float
    actor_options: dict[str, Any] = field(default_factory=dict)  # what each engine actor asks Ray for
    min_actors: int = 1  # started at once; more (up to max_actors) while units wait and there is room
    max_actors: int = 1
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False
    abandoned: bool = False  # a run left with units under way in them: let go, not kept warm
    # The output of the last run they served, and their actor ids there: the time they are
    # held after it, until released, is written to its records and priced in its ledger.
    last_output: tuple[str, dict] | None = None
    actor_ids: list[str] = field(default_factory=list)
    loaded_dtype: str | None = None  # what their engines loaded (`auto` depends on the hardware)

    def can_grow(self) -> bool:
        return len(self.hosts) < self.max_actors

    def grow(self) -> Any:
        """One more engine actor (its model loads with its first unit)."""
        import ray

        from pipelines.engine.host import EngineHost

        self.hosts.append(ray.remote(EngineHost).options(**self.actor_options).remote())
        return self.hosts[-1]


class WarmPool:
    """The driver's warm engines, by engine key."""

    def __init__(self):
        self._engines: dict[str, Engines] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def take(self, key: str, resources: ActorResources, keep_warm_seconds: float,
             dtype: str | None = None) -> Engines:
        """The engines for `key` (created if there are none), marked busy until `give_back`.
        `dtype` is what the run's output pinned (its first engine loaded it): warm engines that
        loaded another are let go, and new ones load it."""
        with self._lock:
            engines = self._engines.get(key)
            if engines is not None and not engines.busy and dtype and engines.loaded_dtype not in (None, dtype):
                self._kill(engines)
                engines = None
            if engines is None:
                # One set of engines is kept warm at a time: idle ones of other settings go
                # first, so they never hold the CPUs or GPUs the new ones need (a routed run's
                # next model, a notebook that switched models).
                for other in [e for e in self._engines.values() if not e.busy]:
                    self._kill(other)
            if engines is None or engines.busy:
                engines = Engines(key, [], keep_warm_seconds, resources.warm_actor_options())
                if key not in self._engines:
                    self._engines[key] = engines
            engines.min_actors, engines.max_actors = max(1, resources.min_actors), resources.max_actors
            while len(engines.hosts) < engines.min_actors:
                engines.grow()
            engines.busy = True
            engines.keep_warm_seconds = keep_warm_seconds
        self._start_reaper()
        return engines

    def give_back(self, engines: Engines, output: tuple[str, dict]) -> None:
        import ray

        if engines.abandoned:  # units may still be under way in them: never handed to another run
            with self._lock:
                self._kill(engines)
            return
        try:
            served = ray.get([h.identity.remote() for h in engines.hosts], timeout=30)
            engines.actor_ids = [s["actor_id"] for s in served if s["actor_id"]]
            engines.loaded_dtype = next((s["loaded_dtype"] for s in served if s["loaded_dtype"]), None)
        except Exception:  # an actor lost at the very end: its records say when it was last seen
            engines.actor_ids = []
        engines.last_output = output
        with self._lock:
            engines.busy = False
            engines.last_used = time.monotonic()
            if self._engines.get(engines.key) is not engines or not engines.keep_warm_seconds:
                self._kill(engines)

    def release(self) -> int:
        """Release every idle warm engine now; returns how many actors were let go."""
        with self._lock:
            idle = [e for e in self._engines.values() if not e.busy]
            for e in idle:
                self._kill(e)
        return sum(len(e.hosts) for e in idle)

    def held(self) -> int:
        with self._lock:
            return sum(len(e.hosts) for e in self._engines.values())

    def _kill(self, engines: Engines) -> None:
        import ray

        if self._engines.get(engines.key) is engines:
            del self._engines[engines.key]
        for host in engines.hosts:
            if not ray.is_initialized():
                break  # Ray is gone, and the actors with it (ray.kill would start a new Ray)
            try:
                ray.kill(host)
            except Exception:  # already gone
                pass
        if engines.last_output and engines.actor_ids:
            _record_release(engines.last_output, engines.actor_ids)

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap, name="spotbatch-warm-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(REAP_SECONDS)
            now = time.monotonic()
            with self._lock:
                for e in [e for e in self._engines.values()
                          if not e.busy and now - e.last_used >= e.keep_warm_seconds]:
                    self._kill(e)


def _record_release(output: tuple[str, dict], actor_ids: list[str]) -> None:
    """The last beat of engines held warm after a run: their time until now is that run's
    (pipelines/store/ledger.py). Written after the kill, so no beat of theirs comes later."""
    from pipelines.store.output import OutputStore
    from pipelines.store.records import HEARTBEAT_SECONDS, Records

    now = time.time()
    try:
        records = Records(OutputStore(*output))
        for actor_id in actor_ids:
            # What its last beat said (its storage requests) stays; the time is the release's.
            last = records.last_beat(actor_id) or {}
            records.actor_beat(actor_id, {**last, "time": now, "period": HEARTBEAT_SECONDS, "warm_until": now})
    except Exception as err:  # the output cannot be written: its ledger ends at its last beat
        log.warning("could not record the release of warm engines: %r", err)


POOL = WarmPool()
atexit.register(POOL.release)
