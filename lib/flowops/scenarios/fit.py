"""Product fit: which product of the catalogue a scenario offers each subscriber, and what it saves them.

All as Spark columns over a subscriber's tags (last month's usage):
- cheapest_data_plan: the data plan whose fee plus the pay-per-use charges left over would have cost least;
  the saving is what they paid pay-per-use minus that.
- booster_for_overflow: the smallest booster covering the data used over the allowance (else the largest).
- idle_pack_for_idle: the smallest idle pack covering the idle-time MB (else the largest); the saving is the
  pay-per-use charge the idle-time data caused (at most what they paid) minus the fee.
- plan_upgrade: the base plan with more data than held (for the handset's network or older) whose fee plus
  leftover pay-per-use costs least; the saving is today's plans, packs and pay-per-use minus that.
- fixed: the listed products, in order.
Never an offer the subscriber holds (base plan, data plan, idle pack). `extra_cost_yuan` is what an offer
costs more than it saves (0 when it saves).
"""

from __future__ import annotations

from flowops.products import Catalogue, Product
from flowops.scenarios.templates import FIT_TYPES, IncentiveModel, ProductModel
from flowops.segments import sql_literal

# Spark SQL text throughout: a scenario's columns are built in one `selectExpr` (Column objects would cost a
# JVM round trip per literal, thousands per scenario).
HELD = "array_compact(array(base_plan, data_plan, idle_pack))"


def fit_sql(product: ProductModel, catalogue: Catalogue) -> dict[str, str]:
    """product_id (null when nothing fits), offers (none held) and saving_yuan, as SQL over the tags."""
    choices = [p for p in catalogue.products if p.type in FIT_TYPES[product.fit]]
    if product.fit == "fixed":
        listed = ", ".join(sql_literal(pid) for pid in product.ids)
        offers = f"filter(array({listed}), x -> NOT array_contains({HELD}, x))"
        return {"product_id": f"get({offers}, 0)", "offers": offers, "saving_yuan": "CAST(NULL AS DOUBLE)"}
    ppu = _payperuse(catalogue)
    usage, paid = "coalesce(dou_mb, 0D)", "coalesce(payperuse_yuan, 0D)"
    if product.fit == "cheapest_data_plan":
        base = "coalesce(base_allowance_mb_held, 0D)"
        best = _cheapest([(p, f"{_num(p.fee_yuan)} + {ppu(f'{usage} - {base} - {_num(p.allowance_mb)}')}")
                          for p in choices])
        saving = f"{paid} - ({best}).cost"
    elif product.fit == "plan_upgrade":
        today = f"coalesce(plan_fee, 0D) + {paid}"
        best = _cheapest([(p, f"CASE WHEN {_num(p.allowance_mb)} > coalesce(allowance_mb, 0D) AND "
                              f"{sql_literal(p.generation or '2G')} <= coalesce(terminal_network_gen, '2G') "
                              f"THEN {_num(p.fee_yuan)} + {ppu(f'{usage} - {_num(p.allowance_mb)}')} END")
                          for p in choices])
        saving = f"{today} - ({best}).cost"
    elif product.fit == "booster_for_overflow":
        need = f"greatest({usage} - coalesce(allowance_mb, 0D), 0D)"
        best = _covering(choices, need)
        saving = f"{ppu(need)} - ({best}).fee - {ppu(f'{need} - ({best}).mb')}"
    else:
        need = "coalesce(idle_mb, 0D)"
        best = _covering(choices, need)
        saving = f"least({paid}, {ppu(need)}) - ({best}).fee"
    chosen = f"CASE WHEN NOT array_contains({HELD}, ({best}).id) THEN ({best}).id END"
    return {"product_id": chosen, "offers": f"CASE WHEN {chosen} IS NOT NULL THEN array({chosen}) "
                                            "ELSE CAST(array() AS ARRAY<STRING>) END",
            "saving_yuan": f"CASE WHEN {chosen} IS NOT NULL THEN round({saving}, 2) END"}


def _num(value: float) -> str:
    return f"{float(value)!r}D"


def _payperuse(catalogue: Catalogue):  # noqa: ANN202 - a text function
    tariff = catalogue.tariff

    def charge(mb: str) -> str:
        cost = f"greatest({mb}, 0D) * {_num(tariff.payperuse_yuan_per_mb)}"
        return f"least({cost}, {_num(tariff.payperuse_cap_yuan)})" if tariff.payperuse_cap_yuan else f"({cost})"
    return charge


def _cheapest(costs: list[tuple[Product, str]]) -> str:
    """The (cost, fee, id) struct of least cost among products whose cost is not null (null when none)."""
    structs = [f"CASE WHEN ({cost}) IS NOT NULL THEN named_struct('cost', {cost}, 'fee', {_num(p.fee_yuan)}, "
               f"'id', {sql_literal(p.id)}) END" for p, cost in costs]
    return f"array_min(array_compact(array({', '.join(structs)})))"


def _covering(products: list[Product], need: str) -> str:
    """The cheapest product whose allowance covers `need`, else the largest one: a struct (fee, mb, id)."""
    structs = [f"named_struct('short', CASE WHEN {_num(p.allowance_mb)} >= {need} THEN 0 ELSE 1 END, "
               f"'rank', CASE WHEN {_num(p.allowance_mb)} >= {need} THEN {_num(p.fee_yuan)} "
               f"ELSE {_num(-p.allowance_mb)} END, 'fee', {_num(p.fee_yuan)}, 'mb', {_num(p.allowance_mb)}, "
               f"'id', {sql_literal(p.id)})" for p in products]
    return f"array_min(array({', '.join(structs)}))"


def incentive_on_order(incentive: IncentiveModel) -> bool:
    """Credit and coupons are paid when the subscriber orders; trial data, free minutes, double data and gifts go
    to everyone contacted."""
    return incentive.kind in ("credit", "coupon")


def incentive_sql(incentive: IncentiveModel, cap_share: float) -> dict[str, str]:
    """incentive (its kind, or none), incentive_yuan (its value to the subscriber), incentive_cost and
    incentive_on_order (credit and coupons are paid when the subscriber orders; trial data, double data and gifts
    go to everyone contacted).

    A credit gift is never above `cap_share` of the month's bill: it is cut to whole yuan under the cap, and
    dropped when under 1 yuan is left (no bill, or a tiny one)."""
    if incentive.kind == "credit":
        value = f"least({_num(incentive.yuan)}, floor(coalesce(arpu_yuan, 0D) * {_num(cap_share)}))"
        value = f"CASE WHEN {value} >= 1 THEN CAST({value} AS DOUBLE) ELSE 0D END"
        return {"incentive": f"CASE WHEN {value} > 0 THEN 'credit' ELSE 'none' END", "incentive_yuan": value,
                "incentive_cost": value, "incentive_on_order": "true"}
    cost = incentive.cost_yuan if incentive.cost_yuan is not None else incentive.yuan
    return {"incentive": sql_literal(incentive.kind), "incentive_yuan": _num(incentive.yuan),
            "incentive_cost": _num(cost), "incentive_on_order": str(incentive_on_order(incentive)).lower()}
