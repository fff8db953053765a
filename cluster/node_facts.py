"""What an engine actor knows of the node it runs on: what the node is, what it costs, and
which share of it the actor holds."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from cluster.prices import PriceCatalog

INSTANCE_TYPE_LABEL = "spotbatch.io/instance-type"
MARKET_LABEL = "ray.io/market-type"  # set by Ray from RAY_NODE_MARKET_TYPE (KubeRay does)
OWN_MARKET_LABEL = "spotbatch.io/market"  # for the cluster launcher's node labels
NODE_GROUP_LABEL = "ray.io/node-group"


@dataclass(frozen=True)
class NodeFacts:
    node_id: str
    instance_type: str
    market: str
    usd_per_hour: float  # the whole node
    on_demand_usd_per_hour: float
    price_source: str
    share: float  # of the node this actor holds: its GPUs, or for CPU engines its cores

    @property
    def usd_per_second(self) -> float:
        return self.usd_per_hour * self.share / 3600

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ActorAsks:
    """What an engine actor asks of its node, as its spec's `compute` says."""

    spot_resource: str | None
    """The custom resource that marks spot nodes, if any."""
    gpus_per_actor: float
    """The actor's GPUs; 0 for a CPU engine."""
    engine_threads: int
    """A CPU engine's threads, which decide its share of the node's cores."""


def describe_node(
    labels: dict[str, str],
    node_resources: dict[str, float],
    cost: Any,  # pipelines.spec.CostSpec (cluster does not import pipelines)
    asks: ActorAsks,
    node_id: str,
) -> NodeFacts:
    """What the node is and costs (its labels, else the spec's cost section), and the actor's share."""
    spot_resource, gpus_per_actor, engine_threads = asks.spot_resource, asks.gpus_per_actor, asks.engine_threads
    group = cost.node_groups.get(labels.get(NODE_GROUP_LABEL, ""))
    instance_type = labels.get(INSTANCE_TYPE_LABEL) or (group.instance_type if group else cost.instance_type)
    market = labels.get(MARKET_LABEL) or labels.get(OWN_MARKET_LABEL) or (group.market if group else None)
    if market is None:
        market = "spot" if spot_resource and node_resources.get(spot_resource) else cost.market
    quote = PriceCatalog.load(overrides=cost.prices).quote(instance_type, market)
    if gpus_per_actor:
        share = gpus_per_actor / max(node_resources.get("GPU", gpus_per_actor), gpus_per_actor)
    else:
        cores = os.cpu_count() or 1
        share = min(engine_threads, cores) / cores
    return NodeFacts(node_id, instance_type, quote.market, quote.usd_per_hour, quote.on_demand_usd_per_hour,
                     quote.source, share)


def this_node(cost: Any, spot_resource: str | None, gpus_per_actor: float, engine_threads: int) -> NodeFacts:
    """Facts about the node the calling Ray worker runs on."""
    import ray

    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    resources = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})
    asks = ActorAsks(spot_resource, gpus_per_actor, engine_threads)
    return describe_node(ctx.get_node_labels(), resources, cost, asks, node_id)
