"""The `compute` section: engine actors, their resources, units in flight, retries, stops."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipelines.spec.base import _Section


class PreemptionNoticeSpec(_Section):
    kind: Literal["aws", "gce", "url"] = Field(description="aws: spot instance-action; gce: preempted flag; url: any.")
    url: str | None = Field(None, description="Endpoint to poll instead of the cloud's default; {node_id} is filled.")
    poll_seconds: float = Field(2.0, gt=0, description="How often each engine actor polls.")
    window_seconds: float = Field(120.0, gt=0, description="Time from notice to termination (AWS: 120, GCE: 30).")

    @model_validator(mode="after")
    def _url_kind_needs_a_url(self) -> PreemptionNoticeSpec:
        if self.kind == "url" and not self.url:
            raise ValueError("kind url needs a url")
        if self.kind == "url":
            from cluster.preemption import refuse_metadata_url

            refuse_metadata_url(self.url)
        return self


class ComputeSpec(_Section):
    actors: int | None = Field(1, gt=0, description="A fixed number of engine actors.")
    min_actors: int | None = Field(None, gt=0, description="Autoscaling lower bound (with max_actors).")
    max_actors: int | None = Field(None, gt=0, description="Autoscaling upper bound (with min_actors).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves for each engine actor.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per engine actor; 0 runs the engine on CPU.")
    engine_threads: int | None = Field(
        None, gt=0, description="CPU engines: threads the engine computes with (default: the node's cores)."
    )
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. A10G, L4, H100.")
    spot_resource: str | None = Field(
        None, description="Custom Ray resource that marks spot nodes; engine actors are pinned to them."
    )
    resources: dict[str, float] = Field(default_factory=dict, description="Other custom resources per actor.")
    tokens_per_unit: int = Field(
        100_000, gt=0, description="Estimated prompt tokens per work unit (the unit of commit and retry)."
    )
    units_in_flight: int | None = Field(
        None, gt=0, description="Work units an engine actor may hold at once. A held unit starts only when "
        "the engine's queue runs low, so the next unit is fed while the last one's tail decodes, and a "
        "lost node loses only started units. Default: enough units to fill the engine's running set "
        "(model.engine_kwargs.max_num_seqs, vLLM's 256 if unset) twice, at least 2; 2 with a budget "
        "(cost.max_cost_usd), which can only stop units not yet started.",
    )
    max_tokens_in_flight: int | None = Field(
        None, gt=0, description="Token budget per engine: the KV of the requests it runs at their worst "
        "(prompt and max_tokens, in whole KV blocks, a prompt prefix shared with another request counted "
        "once); default: what its KV cache holds, so the engine never has to preempt a request.",
    )
    request_timeout_seconds: float | None = Field(
        None, gt=0, description="A request not finished this long after its unit started is an error "
        "record of class timeout.",
    )
    wait_for_other_runs_seconds: float = Field(
        3600.0, ge=0, description="How long a run waits, at its end, for units that a live actor of another "
        "run on the same output is generating; units still held then stay pending for the next run.",
    )
    max_attempts: int = Field(
        4, gt=0, description="Attempts at a unit that may fail (engine died) or be lost (node preempted) "
        "before its rows are written as error records (engine_error, preempted_exhausted) instead.",
    )
    preemption_notice: PreemptionNoticeSpec | None = Field(
        None, description="Watch for spot termination notices and drain the node when one comes."
    )
    keep_warm_seconds: float | None = Field(
        None, ge=0, description="How long engine actors stay loaded after a run, for the next run in the same "
        "driver (a notebook, a Python process) with the same model, engine settings and resources; then they "
        "are released. Default: 300 in an interactive Python (a notebook, a REPL), 0 elsewhere (the CLI, "
        "`ray job submit`, nightly runs). spotbatch.release_engines() lets them go at once.",
    )
    deadline: str | None = Field(
        None, description="When the run must be done: a UTC time of day (\"06:00\", the next one after the run "
        "starts) or a duration from its start (\"3h\", \"90m\", \"1h30m\"). The run takes no unit that its "
        "measured unit time says would end past it, commits those in flight, and exits 4 (stopped: deadline); "
        "the same command resumes.",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: str | None) -> str | None:
        from pipelines.stops.deadline import check_deadline

        return None if value is None else check_deadline(value)

    @model_validator(mode="after")
    def _fixed_or_range(self) -> ComputeSpec:
        if (self.min_actors is None) != (self.max_actors is None):
            raise ValueError("set both min_actors and max_actors, or neither")
        if self.min_actors is not None and self.max_actors is not None and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors must be <= max_actors, got {self.min_actors} > {self.max_actors}")
        return self
