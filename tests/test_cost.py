"""Prices, node facts and the cost arithmetic, without an engine."""

import pytest

from cluster.node_facts import ActorAsks, describe_node
from cluster.prices import PriceCatalog, PriceError
from operators.cost import ActorTime, Attempt, attempt_seconds, split_actor_time, summarize
from pipelines.spec import CostSpec, SpecError, validate_spec


def test_catalog_prices_name_their_source():
    catalog = PriceCatalog.load()
    assert catalog.as_of
    for name, entry in catalog.entries.items():
        for market in ("on_demand", "spot", "reserved"):
            assert entry[market] > 0 and entry[f"{market}_source"], (name, market)
        assert entry["spot"] < entry["reserved"] < entry["on_demand"]


def test_overrides_win_and_say_so():
    catalog = PriceCatalog.load(overrides={"g5.xlarge": {"spot": 0.42, "spot_source": "our bill, Nov"},
                                           "my.box": {"on-demand": 2}})
    assert catalog.quote("g5.xlarge", "spot").usd_per_hour == 0.42
    assert catalog.quote("g5.xlarge", "spot").source == "our bill, Nov"
    assert catalog.quote("my.box", "on_demand").source == "spec override (cost.prices)"
    with pytest.raises(PriceError, match="no spot price for 'my.box'"):
        catalog.quote("my.box", "spot")
    with pytest.raises(PriceError, match="unknown market 'preemptible'"):
        catalog.quote("g5.xlarge", "preemptible")


def test_spec_with_an_unpriced_instance_type_is_refused():
    with pytest.raises(SpecError, match="no price for instance type 'x9.big'"):
        validate_spec({"input": {"paths": "in", "prompt_column": "t"}, "output": {"path": "o"},
                       "cost": {"instance_type": "x9.big"}})


def node(labels=None, resources=None, cost=None, spot_resource=None, gpus=0.0, threads=2):
    asks = ActorAsks(spot_resource, gpus, threads)
    return describe_node(labels or {}, resources or {"CPU": 2}, cost or CostSpec(), asks, "n1")


def test_node_facts_from_labels_groups_resources_and_defaults():
    assert (node().instance_type, node().market) == ("cpu-2vcpu", "on_demand")
    spot = node(resources={"CPU": 2, "spot": 1}, spot_resource="spot")
    assert spot.market == "spot" and spot.usd_per_hour == PriceCatalog.load().quote("cpu-2vcpu", "spot").usd_per_hour
    labelled = node(labels={"spotbatch.io/instance-type": "g5.xlarge", "ray.io/market-type": "spot"},
                    resources={"GPU": 1}, gpus=1)
    assert (labelled.instance_type, labelled.market, labelled.share) == ("g5.xlarge", "spot", 1.0)
    grouped = node(labels={"ray.io/node-group": "gpu-spot"}, resources={"GPU": 8}, gpus=2,
                   cost=CostSpec(node_groups={"gpu-spot": {"instance_type": "p4d.24xlarge", "market": "spot"}}))
    assert grouped.instance_type == "p4d.24xlarge" and grouped.share == 0.25
    assert grouped.usd_per_second == pytest.approx(grouped.usd_per_hour * 0.25 / 3600)
    assert grouped.on_demand_usd_per_hour == 32.773


def actor(**kw):
    base = dict(actor_id="a", started_at=0.0, loaded_at=10.0, ended_at=100.0, usd_per_second=0.01,
                on_demand_usd_per_second=0.03)
    return ActorTime(**{**base, **kw})


def test_every_actor_second_lands_in_one_bucket():
    a = split_actor_time(actor(), [
        Attempt("u1", "a", 10.0, 30.0, committed=True, input_tokens=100, output_tokens=50),
        Attempt("u2", "a", 30.0, 35.0, committed=False),  # generated, but another attempt committed first
        Attempt("u3", "a", 90.0, None, committed=False),  # lost with the actor at t=100
    ])
    assert a.seconds == {"load": 10.0, "useful": 20.0, "wasted": 15.0, "idle": 55.0}
    assert a.lifetime == 100.0 and a.usd("wasted") == pytest.approx(0.15)


def test_summary_adds_up_and_compares_with_a_reference():
    actors = [split_actor_time(actor(actor_id="a"), [Attempt("u1", "a", 10, 60, True, 1000, 500)]),
              split_actor_time(actor(actor_id="b", ended_at=50.0), [Attempt("u2", "b", 10, None, False)])]
    s = summarize(actors, input_tokens=1000, output_tokens=500,
                  reference={"name": "provider batch", "usd_per_1m_input_tokens": 100.0,
                             "usd_per_1m_output_tokens": 400.0, "as_of": "2026-11-01"})
    assert s.total_usd == pytest.approx(1.5) and sum(s.breakdown_usd.values()) == pytest.approx(s.total_usd)
    assert s.on_demand_usd == pytest.approx(4.5)
    assert s.breakdown_usd["wasted"] == pytest.approx(0.4)
    assert s.usd_per_1m_output_tokens == pytest.approx(3000.0)
    assert s.reference["usd"] == pytest.approx(0.3) and s.reference["ratio"] == pytest.approx(5.0)


def test_units_in_flight_together_share_their_seconds():
    """Two units overlap on one engine for 10 s: the actor's useful time is the 30 s it had
    work, not 40, and the lost one is charged only its share."""
    a = split_actor_time(actor(), [
        Attempt("u1", "a", 10.0, 30.0, committed=True),
        Attempt("u2", "a", 20.0, 40.0, committed=True),
        Attempt("u3", "a", 35.0, None, committed=False),  # lost with the actor at t=100
    ])
    assert a.seconds["useful"] == pytest.approx(10 + (5 + 5) + 5 + 2.5)  # u1 alone, both, u2 alone, u2 with u3
    assert a.seconds["wasted"] == pytest.approx(2.5 + 60)
    assert a.seconds["idle"] == pytest.approx(0.0) and a.lifetime == pytest.approx(100.0)


def test_attempt_seconds_are_each_seconds_share_among_the_attempts_running_then():
    import random

    def by_definition(attempts, actor_end):  # every interval between edges, every attempt scanned
        spans = [(a.started_at, a.ended_at if a.ended_at is not None else max(actor_end, a.started_at))
                 for a in attempts]
        edges = sorted({t for span in spans for t in span})
        shares = [0.0] * len(spans)
        for lo, hi in zip(edges, edges[1:]):
            active = [i for i, (s, e) in enumerate(spans) if s <= lo and e >= hi]
            for i in active:
                shares[i] += (hi - lo) / len(active)
        return shares

    rng = random.Random(4)
    for _ in range(200):  # shared edges, empty spans, lost attempts (no end) and overlaps
        attempts = []
        for n in range(rng.randint(0, 12)):
            start = rng.choice([0, 1, 2, 5, rng.uniform(0, 10)])
            end = rng.choice([None, start, start + rng.choice([1, 3, rng.uniform(0, 5)])])
            attempts.append(Attempt(f"u{n}", "x", start, end, end is not None))
        assert attempt_seconds(attempts, 12.0) == pytest.approx(by_definition(attempts, 12.0))
    many = [Attempt(f"u{n}", "x", n * 1.0, n + 1.5, True) for n in range(20_000)]  # a long-lived actor
    shares = attempt_seconds(many, 0)
    assert sum(shares) == pytest.approx(20_000.5) and shares[5] == pytest.approx(1.0)
