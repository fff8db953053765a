"""The price catalog: $/hour of an instance type in a market, with where the price came from.

>>> quote = PriceCatalog.load().quote("g5.xlarge", "on_demand")
>>> quote.usd_per_hour, quote.source
(1.006, 'AWS EC2 On-Demand rate card, us-east-1, Linux (2026-06-17)')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spotbatch.errors import PriceError  # noqa: F401 (its home; importable from here as before)

CATALOG = Path(__file__).with_name("prices.yaml")
MARKETS = ("on_demand", "spot", "reserved")


@dataclass(frozen=True)
class PriceQuote:
    instance_type: str
    market: str
    usd_per_hour: float
    source: str
    on_demand_usd_per_hour: float  # the same machine on-demand, for "what it would have cost"


def normalize_market(market: str) -> str:
    """`spot`, `on-demand`, `ON_DEMAND`, `reserved`... as the catalog names them."""
    name = market.strip().lower().replace("-", "_")
    if name not in MARKETS:
        raise PriceError(f"unknown market {market!r}; known: {', '.join(MARKETS)}")
    return name


def request_prices(store: str = "s3-standard", path: Path = CATALOG) -> dict[str, Any]:
    """$ per 1,000 storage requests of each class, with the entry's date and source."""
    return dict(yaml.safe_load(path.read_text())["storage_requests"][store])


def requests_usd(counts: dict[str, int], prices: dict[str, Any]) -> float:
    """What requests counted by class (LIST, PUT, GET, HEAD, DELETE) cost.

    >>> round(requests_usd({"PUT": 1000, "LIST": 1000, "GET": 1000, "DELETE": 5}, request_prices()), 6)
    0.0104
    """
    per_1k = {"PUT": "put_list_per_1k", "LIST": "put_list_per_1k", "POST": "put_list_per_1k",
              "COPY": "put_list_per_1k", "DELETE": "delete_per_1k"}
    return sum(n / 1000 * float(prices[per_1k.get(kind, "get_head_per_1k")]) for kind, n in counts.items())


class PriceCatalog:
    def __init__(self, entries: dict[str, dict[str, Any]], as_of: str):
        self.entries = entries
        self.as_of = as_of

    @classmethod
    def load(cls, path: Path = CATALOG, overrides: dict[str, dict[str, Any]] | None = None) -> PriceCatalog:
        """The catalog, with a spec's overrides merged per instance type and market."""
        data = yaml.safe_load(path.read_text())
        entries = {k: dict(v) for k, v in data["instance_types"].items()}
        for name, prices in (overrides or {}).items():
            entry = entries.setdefault(name, {})
            for market, value in prices.items():
                if market.endswith("_source"):
                    continue
                market = normalize_market(market)
                entry[market] = float(value)
                entry[f"{market}_source"] = prices.get(f"{market}_source", "spec override (cost.prices)")
        return cls(entries, str(data.get("as_of", "")))

    def quote(self, instance_type: str, market: str) -> PriceQuote:
        market = normalize_market(market)
        entry = self.entries.get(instance_type)
        if entry is None:
            raise PriceError(
                f"no price for instance type {instance_type!r}; known: {', '.join(sorted(self.entries))}; "
                f"add it under cost.prices in the spec"
            )
        if entry.get(market) is None:
            raise PriceError(f"no {market} price for {instance_type!r}; add it under cost.prices in the spec")
        return PriceQuote(
            instance_type=instance_type,
            market=market,
            usd_per_hour=float(entry[market]),
            source=str(entry.get(f"{market}_source", "")),
            on_demand_usd_per_hour=float(entry.get("on_demand") or entry[market]),
        )


PROVIDERS = Path(__file__).with_name("provider_prices.yaml")


@dataclass(frozen=True)
class BatchPrice:
    """A provider's batch price for one model, $ per 1M tokens, with where it came from."""

    name: str
    provider: str
    usd_per_1m_input_tokens: float
    usd_per_1m_output_tokens: float
    as_of: str
    source: str


def batch_price(name: str, path: Path = PROVIDERS) -> BatchPrice:
    """A reference model's batch price, by its name; a name with no price is refused by name.

    >>> batch_price("gpt-4o-mini").usd_per_1m_input_tokens
    0.075
    >>> batch_price("gpt-9")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    spotbatch.errors.PriceError: no batch price for reference model 'gpt-9'; known: claude-3-5-haiku, ...
    """
    providers = yaml.safe_load(path.read_text())
    for provider, entry in providers.items():
        model = entry["models"].get(name)
        if model is not None:
            return BatchPrice(name, provider, float(model["batch_input"]), float(model["batch_output"]),
                              str(entry["as_of"]), str(entry["source"]))
    known = sorted(m for entry in providers.values() for m in entry["models"])
    raise PriceError(f"no batch price for reference model {name!r}; known: {', '.join(known)}")
