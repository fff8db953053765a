"""The `cost` section: what the nodes cost, a price to compare with, and a budget."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipelines.spec.base import _Section


class NodeGroupCost(_Section):
    instance_type: str = Field(description="Instance type of this group's nodes (a price catalog name).")
    market: str = Field("on_demand", description="on_demand, spot or reserved.")


class ReferencePrice(_Section):
    name: str = Field(description="What is compared, e.g. a provider's batch API for a model.")
    usd_per_1m_input_tokens: float = Field(ge=0, description="Its price per 1M input tokens.")
    usd_per_1m_output_tokens: float = Field(ge=0, description="Its price per 1M output tokens.")
    as_of: str = Field(description="The date of that price.")


class CostSpec(_Section):
    instance_type: str = Field(
        "cpu-2vcpu",
        description="Instance type of nodes that do not say (node label spotbatch.io/instance-type, "
        "or node_groups by the ray.io/node-group label).",
    )
    market: str = Field(
        "on_demand",
        description="Market of nodes that do not say (label ray.io/market-type); nodes that carry "
        "compute.spot_resource are spot.",
    )
    node_groups: dict[str, NodeGroupCost] = Field(
        default_factory=dict, description="Instance type and market per Ray node group."
    )
    prices: dict[str, dict[str, float | str]] = Field(
        default_factory=dict,
        description="Price overrides, $/hour: {instance_type: {spot: 0.31, spot_source: '...'}}.",
    )
    reference: ReferencePrice | None = Field(None, description="A price per 1M tokens to compare with.")
    max_cost_usd: float | None = Field(
        None, gt=0, description="Stop admitting units once spent plus projected cost would pass this."
    )

    @model_validator(mode="after")
    def _priced(self) -> CostSpec:
        from cluster.prices import PriceCatalog, PriceError

        try:
            catalog = PriceCatalog.load(overrides=self.prices)
            catalog.quote(self.instance_type, self.market)
            for group in self.node_groups.values():
                catalog.quote(group.instance_type, group.market)
        except PriceError as err:
            raise ValueError(str(err)) from None
        return self
