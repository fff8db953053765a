"""The pipeline spec: one validated object, from YAML or from Python.

Every field has a description; every invalid value is reported as `section.field must be ...,
got VALUE` before any cluster or engine starts.

One module per section (input, model, sampling, compute, cost, output with cache and route),
row_sampling for a row's own sampling, problems for how an invalid value is said, and pipeline
for the whole PipelineSpec with reading YAML and `--set` overrides. Import from here.

>>> spec = PipelineSpec(input={"paths": "data/*.parquet", "prompt_column": "text"},
...                     output={"path": "out/"})
>>> spec.sampling.max_tokens
256
"""

from __future__ import annotations

from pipelines.spec.base import BATCH_KINDS
from pipelines.spec.compute import ComputeSpec, PreemptionNoticeSpec
from pipelines.spec.cost import CostSpec, NodeGroupCost, ReferencePrice
from pipelines.spec.input import InputSpec, template_columns
from pipelines.spec.model import CompileCacheSpec, ModelSpec
from pipelines.spec.output import CacheSpec, OutputSpec, RouteSpec
from pipelines.spec.pipeline import PipelineSpec, apply_overrides, load_spec, validate_spec
from pipelines.spec.problems import spec_error
from pipelines.spec.row_sampling import row_sampling
from pipelines.spec.sampling import (
    FIRST_SAMPLING_FIELDS,
    LATER_DEFAULTS,
    STRUCTURED_KINDS,
    SamplingSpec,
    sampling_identity,
)
from spotbatch.errors import SpecError

__all__ = [
    "BATCH_KINDS", "FIRST_SAMPLING_FIELDS", "LATER_DEFAULTS", "STRUCTURED_KINDS",
    "CacheSpec", "CompileCacheSpec", "ComputeSpec", "CostSpec", "InputSpec", "ModelSpec", "NodeGroupCost",
    "OutputSpec", "PipelineSpec", "PreemptionNoticeSpec", "ReferencePrice", "RouteSpec", "SamplingSpec",
    "SpecError", "apply_overrides", "load_spec", "row_sampling", "sampling_identity", "spec_error",
    "template_columns", "validate_spec",
]
