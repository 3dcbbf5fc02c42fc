"""Every charge model against worked examples: API.md's and published ones (source cited).

Each row is (charge, usage, expected total). Quantities are given as usage quantities or
as events; amounts are exact decimal strings, as the quote reports them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billfold.domain.pricing import parse_plan, parse_usage, quote

API_TIERS = [
    {"up_to": 5, "unit_price": 7},
    {"up_to": 10, "unit_price": "6.5"},
    {"up_to": None, "unit_price": 6},
]


def total(charge: dict[str, Any], usage: dict[str, Any], **plan: Any) -> str:
    definition = {
        "code": "p",
        "service": "s",
        "currency": "USD",
        "interval": "month",
        "charges": [charge],
        **plan,
    }
    return quote(parse_plan(definition), parse_usage(usage)).to_dict()["total"]


def q(value: object, metric: str = "m") -> dict[str, Any]:
    return {"quantities": {metric: value}}


def events(*values: object, metric: str = "m") -> dict[str, Any]:
    return {
        "events": [
            {"metric": metric, "value": v, "timestamp": f"2026-11-02T00:00:{i:02d}Z"}
            for i, v in enumerate(values)
        ]
    }


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # --- API.md worked examples ---
    (
        "API.md graduated q=6",
        {"metric": "m", "model": "graduated", "tiers": API_TIERS},
        q(6),
        "41.5",
    ),
    (
        "API.md graduated q=20",
        {"metric": "m", "model": "graduated", "tiers": API_TIERS},
        q(20),
        "127.5",
    ),
    ("API.md volume q=6", {"metric": "m", "model": "volume", "tiers": API_TIERS}, q(6), "39"),
    ("API.md volume q=20", {"metric": "m", "model": "volume", "tiers": API_TIERS}, q(20), "120"),
    (
        "API.md package q=121 free 0",
        {"metric": "m", "model": "package", "package_size": 10, "package_price": 100},
        q(121),
        "1300",
    ),
    (
        "API.md package q=121 free 10",
        {
            "metric": "m",
            "model": "package",
            "package_size": 10,
            "package_price": 100,
            "free_units": 10,
        },
        q(121),
        "1200",
    ),
    # --- per_unit ---
    (
        "per_unit with free units",
        {"metric": "m", "model": "per_unit", "unit_price": "0.25", "free_units": 100},
        q(150),
        "12.5",
    ),
    (
        "per_unit under the free units",
        {"metric": "m", "model": "per_unit", "unit_price": "0.25", "free_units": 100},
        q(40),
        "0",
    ),
    # Zuplo, "Pricing models" (zuplo.com/docs/articles/monetization/pricing-models):
    # $0.001 per unit, 100,000 API calls cost $100.
    (
        "Zuplo per-unit 100,000 calls",
        {"metric": "m", "model": "per_unit", "unit_price": "0.001"},
        q(100_000),
        "100",
    ),
    # --- graduated ---
    # Zuplo, same page: tiers 0-1,000 @ $0.10, 1,001-10,000 @ $0.05, 10,001+ @ $0.01;
    # 15,000 units cost $600 graduated.
    (
        "Zuplo graduated 15,000",
        {
            "metric": "m",
            "model": "graduated",
            "tiers": [
                {"up_to": 1000, "unit_price": "0.10"},
                {"up_to": 10000, "unit_price": "0.05"},
                {"up_to": None, "unit_price": "0.01"},
            ],
        },
        q(15_000),
        "600",
    ),
    # Autumn, "Graduated Pricing" (docs.useautumn.com): first 1,000 requests @ $0.01, next
    # 9,000 @ $0.008, above 10,000 @ $0.005; 15,000 requests cost $107.
    (
        "Autumn graduated 15,000",
        {
            "metric": "m",
            "model": "graduated",
            "tiers": [
                {"up_to": 1000, "unit_price": "0.01"},
                {"up_to": 10000, "unit_price": "0.008"},
                {"up_to": None, "unit_price": "0.005"},
            ],
        },
        q(15_000),
        "107",
    ),
    # Oracle Banking Liquidity Management, "Examples for Tier Based Amount": slabs 0-250,
    # 250-500, >500 at 1, 2, 3 per unit; a count of 1000 costs 2250 ("slab amount").
    (
        "Oracle slab per unit 1000",
        {
            "metric": "m",
            "model": "graduated",
            "tiers": [
                {"up_to": 250, "unit_price": 1},
                {"up_to": 500, "unit_price": 2},
                {"up_to": None, "unit_price": 3},
            ],
        },
        q(1000),
        "2250",
    ),
    # Same source: flat charges of 10, 20, 30 per slab; a count of 1000 costs 60.
    (
        "Oracle slab flat 1000",
        {
            "metric": "m",
            "model": "graduated",
            "tiers": [
                {"up_to": 250, "unit_price": 0, "flat_fee": 10},
                {"up_to": 500, "unit_price": 0, "flat_fee": 20},
                {"up_to": None, "unit_price": 0, "flat_fee": 30},
            ],
        },
        q(1000),
        "60",
    ),
    (
        "graduated first flat fee at q=0",
        {
            "metric": "m",
            "model": "graduated",
            "tiers": [
                {"up_to": 10, "unit_price": 1, "flat_fee": 5},
                {"up_to": None, "unit_price": 1, "flat_fee": 50},
            ],
        },
        q(0),
        "5",
    ),
    (
        "graduated next flat fee only past the bound",
        {
            "metric": "m",
            "model": "graduated",
            "tiers": [
                {"up_to": 10, "unit_price": 1, "flat_fee": 5},
                {"up_to": None, "unit_price": 1, "flat_fee": 50},
            ],
        },
        q(10),
        "15",
    ),
    # --- volume ---
    # Zuplo: the same tiers as volume, 15,000 units cost $150.
    (
        "Zuplo volume 15,000",
        {
            "metric": "m",
            "model": "volume",
            "tiers": [
                {"up_to": 1000, "unit_price": "0.10"},
                {"up_to": 10000, "unit_price": "0.05"},
                {"up_to": None, "unit_price": "0.01"},
            ],
        },
        q(15_000),
        "150",
    ),
    # Lago, "Volume" charge model (getlago.com/docs/guide/plans/charges/charge-models/volume):
    # four tiers with a $10 flat fee each; 65,000 API calls cost 65,000 x $0.0006 + $10 = $49.
    (
        "Lago volume 65,000",
        {
            "metric": "m",
            "model": "volume",
            "tiers": [
                {"up_to": 10000, "unit_price": "0.0010", "flat_fee": 10},
                {"up_to": 50000, "unit_price": "0.0008", "flat_fee": 10},
                {"up_to": 100000, "unit_price": "0.0006", "flat_fee": 10},
                {"up_to": None, "unit_price": "0.0004", "flat_fee": 10},
            ],
        },
        q(65_000),
        "49",
    ),
    # Oracle, same page, "variable amount": count 1000 at 3 per unit costs 3000.
    (
        "Oracle variable per unit 1000",
        {
            "metric": "m",
            "model": "volume",
            "tiers": [
                {"up_to": 250, "unit_price": 1},
                {"up_to": 500, "unit_price": 2},
                {"up_to": None, "unit_price": 3},
            ],
        },
        q(1000),
        "3000",
    ),
    (
        "volume at q=0 uses the first tier",
        {
            "metric": "m",
            "model": "volume",
            "tiers": [
                {"up_to": 10, "unit_price": 1, "flat_fee": 3},
                {"up_to": None, "unit_price": 1},
            ],
        },
        q(0),
        "3",
    ),
    # --- package ---
    # Lago, "Package" charge model: $5 per 100 units, first 100 free; 201 units cost $10.
    (
        "Lago package 201",
        {
            "metric": "m",
            "model": "package",
            "package_size": 100,
            "package_price": 5,
            "free_units": 100,
        },
        q(201),
        "10",
    ),
    # Chargebee, "Package Pricing": 1M tokens per package at $1.25; 1.5M tokens are
    # rounded up to 2 packages ($2.50) and 10 tokens to one ($1.25).
    (
        "Chargebee package 1.5M",
        {"metric": "m", "model": "package", "package_size": 1_000_000, "package_price": "1.25"},
        q(1_500_000),
        "2.5",
    ),
    (
        "Chargebee package 10",
        {"metric": "m", "model": "package", "package_size": 1_000_000, "package_price": "1.25"},
        q(10),
        "1.25",
    ),
    (
        "package rounding down",
        {
            "metric": "m",
            "model": "package",
            "package_size": 10,
            "package_price": 100,
            "rounding": "down",
        },
        q(129),
        "1200",
    ),
    # --- percentage ---
    # Stripe card pricing as modelled in Lago's "Clone Stripe pricing" template
    # (getlago.com/docs/templates/per-transaction/stripe): 2.9% + $0.30 per transaction.
    (
        "Stripe card fee on $100",
        {"metric": "m", "model": "percentage", "rate": "0.029", "fixed_fee_per_event": "0.30"},
        events(100),
        "3.2",
    ),
    (
        "percentage over three events",
        {"metric": "m", "model": "percentage", "rate": "0.029", "fixed_fee_per_event": "0.30"},
        events(100, 50, "10.5"),
        "5.5545",
    ),
    # Lago, "Percentage" charge model: "the first 3 events or $500 are free".
    (
        "Lago free 3 events or $500: events run out",
        {
            "metric": "m",
            "model": "percentage",
            "rate": "0.01",
            "fixed_fee_per_event": "0.1",
            "free_events": 3,
            "free_amount": 500,
        },
        events(100, 100, 100, 100),
        "1.1",
    ),
    (
        "Lago free 3 events or $500: amount runs out",
        {
            "metric": "m",
            "model": "percentage",
            "rate": "0.01",
            "fixed_fee_per_event": "0.1",
            "free_events": 3,
            "free_amount": 500,
        },
        events(300, 300, 100),
        "2.2",
    ),
    (
        "percentage min and max per event",
        {
            "metric": "m",
            "model": "percentage",
            "rate": "0.01",
            "min_per_event": "0.5",
            "max_per_event": 5,
        },
        events(10, 200, 1000),
        "7.5",
    ),
    # --- graduated_percentage ---
    # Lago, "Graduated percentage": tiers to 1,000 at 1% + $200, to 10,000 at 2% + $300,
    # beyond at 3% + $400. Transactions of $500, $550 and $4,000 cost $205, $306 and $80,
    # so the cumulative totals are 205, 511 and 591.
    (
        "Lago graduated percentage $500",
        {
            "metric": "m",
            "model": "graduated_percentage",
            "tiers": [
                {"up_to": 1000, "rate": "0.01", "flat_fee": 200},
                {"up_to": 10000, "rate": "0.02", "flat_fee": 300},
                {"up_to": None, "rate": "0.03", "flat_fee": 400},
            ],
        },
        events(500),
        "205",
    ),
    (
        "Lago graduated percentage $1,050",
        {
            "metric": "m",
            "model": "graduated_percentage",
            "tiers": [
                {"up_to": 1000, "rate": "0.01", "flat_fee": 200},
                {"up_to": 10000, "rate": "0.02", "flat_fee": 300},
                {"up_to": None, "rate": "0.03", "flat_fee": 400},
            ],
        },
        events(500, 550),
        "511",
    ),
    (
        "Lago graduated percentage $5,050",
        {
            "metric": "m",
            "model": "graduated_percentage",
            "tiers": [
                {"up_to": 1000, "rate": "0.01", "flat_fee": 200},
                {"up_to": 10000, "rate": "0.02", "flat_fee": 300},
                {"up_to": None, "rate": "0.03", "flat_fee": 400},
            ],
        },
        events(500, 550, 4000),
        "591",
    ),
]


@pytest.mark.parametrize(
    ("charge", "usage", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_worked_examples(charge: dict[str, Any], usage: dict[str, Any], expected: str) -> None:
    assert total(charge, usage) == expected


def test_partly_covered_percentage_event_pays_rate_on_the_rest_and_the_whole_fee() -> None:
    charge = {
        "metric": "m",
        "model": "percentage",
        "rate": "0.1",
        "fixed_fee_per_event": "1",
        "free_amount": 150,
    }
    result = quote(
        parse_plan({"code": "p", "service": "s", "currency": "USD", "charges": [charge]}),
        parse_usage(events(100, 100)),
    )
    line = result.lines[0]
    # Event 1 is free; event 2 has 50 of 100 covered: 10% of 50 + the whole fee of 1.
    assert line.amount == Decimal(6)
    assert line.details[0]["free_events"] == 1 and line.details[0]["partly_free_events"] == 1
    assert [d["fee"] for d in line.details[1:]] == ["0", "6"]


def test_the_api_md_quote_example() -> None:
    plan = {
        "code": "maps-pro",
        "name": "Maps Pro",
        "service": "maps",
        "currency": "USD",
        "interval": "month",
        "interval_count": 1,
        "fixed_fee": "30",
        "fee_timing": "advance",
        "trial_days": 0,
        "minimum": "0",
        "commission_rate": None,
        "charges": [{"metric": "api_calls", "model": "graduated", "tiers": API_TIERS}],
    }
    result = quote(parse_plan(plan), parse_usage({"quantities": {"api_calls": "20"}})).to_dict()
    assert result["total"] == "157.5" and result["currency"] == "USD"
    assert [(line["kind"], line["amount"]) for line in result["lines"]] == [
        ("fixed_fee", "30"),
        ("usage", "127.5"),
    ]
    tiers = result["lines"][1]["details"]
    assert [(t["tier"], t["units"], t["amount"]) for t in tiers] == [
        (1, "5", "35"),
        (2, "5", "32.5"),
        (3, "10", "60"),
    ]


def test_minimum_spend_true_up() -> None:
    plan = parse_plan(
        {
            "code": "p",
            "service": "s",
            "currency": "USD",
            "minimum": "50",
            "charges": [{"metric": "m", "model": "per_unit", "unit_price": "2"}],
        }
    )
    under = quote(plan, parse_usage(q(10))).to_dict()
    assert under["total"] == "50" and under["lines"][-1]["kind"] == "minimum"
    assert under["lines"][-1]["amount"] == "30"
    over = quote(plan, parse_usage(q(30))).to_dict()
    assert over["total"] == "60" and [line["kind"] for line in over["lines"]] == ["usage"]


def test_events_and_quantities_add_up_and_unknown_metrics_are_reported() -> None:
    plan = parse_plan(
        {
            "code": "p",
            "service": "s",
            "currency": "USD",
            "charges": [{"metric": "m", "model": "per_unit", "unit_price": "1"}],
        }
    )
    usage = parse_usage(
        {
            "quantities": {"m": "2.5", "other": 3},
            "events": [{"metric": "m"}, {"metric": "m", "value": "0.5"}],
        }
    )
    result = quote(plan, usage)
    assert result.total == Decimal(4) and result.lines[0].quantity == Decimal(4)
    assert result.ignored_metrics == ("other",)


def test_sub_cent_prices_add_up_without_drift() -> None:
    plan = parse_plan(
        {
            "code": "p",
            "service": "s",
            "currency": "USD",
            "charges": [{"metric": "m", "model": "per_unit", "unit_price": "0.000001"}],
        }
    )
    assert quote(plan, parse_usage(q(1_000_000))).total == Decimal(1)
