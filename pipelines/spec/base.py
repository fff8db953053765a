"""What every spec section shares: unknown fields are refused, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    """A spec section: an unknown field is refused by name, an assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Input kinds that are a provider's batch JSONL files (pipelines/formats/), not Parquet.
BATCH_KINDS = ("openai_batch", "anthropic_batch")
