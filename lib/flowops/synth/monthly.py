"""Monthly landing files: CRM snapshot, bills, organic orders (UTF-8 CSV, RFC 4180 quoting)."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from flowops.synth.billing import ITEMS, Bill
from flowops.synth.catalog import Products
from flowops.synth.planning import BRANDS, MonthPlan, Planner
from flowops.synth.population import AGE_BANDS, CITIES, IDENTITIES

CRM_COLUMNS = ("msisdn", "imsi", "status", "activation_date", "churn_date", "brand", "identity",
               "age_band", "city", "region_type", "vip_level", "account_manager_id",
               "base_plan_id", "data_plan_id", "idle_pack_id", "opt_out_all", "opt_out_channels",
               "complaints", "imei")
BILLING_COLUMNS = ("month", "msisdn", "item_code", "item_name", "quantity", "unit", "amount_yuan")
ORDER_COLUMNS = ("order_id", "msisdn", "order_time", "product_id", "product_type", "channel",
                 "campaign_id", "action", "fee_yuan")


def iso(ordinal: np.ndarray | int) -> np.ndarray:
    """Date ordinals to ISO date strings ('' for 0)."""
    ords = np.atleast_1d(np.asarray(ordinal, dtype=np.int64))
    return np.array([dt.date.fromordinal(int(o)).isoformat() if o > 0 else "" for o in ords],
                    dtype=object)


def _write(df: pd.DataFrame, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, encoding="utf-8")
    return len(df)


def _product_ids(products: Products, rows: np.ndarray) -> np.ndarray:
    ids = np.array(products.product_id + ("",), dtype=object)
    return ids[np.where(rows >= 0, rows, len(products.product_id))]


def _num(values: np.ndarray, decimals: int) -> np.ndarray:
    return np.char.mod(f"%.{decimals}f", np.asarray(values, dtype=float)).astype(object)


def write_crm(out: Path, plan: MonthPlan, planner: Planner, products: Products) -> int:
    """``crm/month=YYYY-MM/subscribers.csv``: the snapshot at month end."""
    pop, s = planner.pop, plan.subs
    changed = (pop.dev2[s] >= 0) & (pop.change_ord[s] <= plan.last_ord)
    imei = np.where(changed, pop.imei2[s], pop.imei1[s]).astype("U15").astype(object)
    df = pd.DataFrame({
        "msisdn": pop.msisdn[s].astype("U11"),
        "imsi": pop.imsi[s].astype("U15"),
        "status": np.where(plan.churn_ord > 0, "churned", "active"),
        "activation_date": iso(pop.activation[s]),
        "churn_date": iso(plan.churn_ord),
        "brand": np.array(BRANDS)[planner.brand[s]],
        "identity": np.array(IDENTITIES)[pop.identity[s]],
        "age_band": np.array(AGE_BANDS)[pop.age_band[s]],
        "city": np.array([c[0] for c in CITIES])[pop.city[s]],
        "region_type": np.where(pop.rural[s], "rural", "urban"),
        "vip_level": planner.vip[s],
        "account_manager_id": planner.manager[s],
        "base_plan_id": _product_ids(products, plan.base),
        "data_plan_id": _product_ids(products, plan.data),
        "idle_pack_id": _product_ids(products, plan.idle),
        "opt_out_all": planner.opt_out_all[s].astype(np.int8),
        "opt_out_channels": planner.opt_out_channels[s],
        "complaints": plan.complaints,
        "imei": imei,
    }, columns=list(CRM_COLUMNS))
    return _write(df, out / "crm" / f"month={plan.month}" / "subscribers.csv")


def write_billing(out: Path, plan: MonthPlan, bill: Bill, planner: Planner) -> int:
    """``billing/month=YYYY-MM/billing.csv``: one line per subscriber and item."""
    items = np.array(ITEMS, dtype=object)
    integral = ~np.isin(bill.item, [ITEMS.index(i) for i in ITEMS if i[2] == "MB"])
    qty = np.where(integral, _num(np.round(bill.quantity), 0), _num(bill.quantity, 2))
    df = pd.DataFrame({
        "month": plan.month,
        "msisdn": planner.pop.msisdn[plan.subs[bill.pos]].astype("U11"),
        "item_code": items[bill.item, 0],
        "item_name": items[bill.item, 1],
        "quantity": qty,
        "unit": items[bill.item, 2],
        "amount_yuan": _num(bill.amount, 2),
    }, columns=list(BILLING_COLUMNS))
    return _write(df, out / "billing" / f"month={plan.month}" / "billing.csv")


def write_orders(out: Path, plan: MonthPlan, planner: Planner, products: Products) -> int:
    """``orders/month=YYYY-MM/orders.csv``: organic orders (no campaign)."""
    rows = []
    for k, (sub, day, sec, product, channel, action) in enumerate(plan.orders, start=1):
        when = dt.datetime.fromordinal(day) + dt.timedelta(seconds=sec)
        rows.append((f"ORD{plan.month.replace('-', '')}{k:07d}",
                     planner.pop.msisdn[sub].decode(), when.strftime("%Y-%m-%d %H:%M:%S"),
                     products.product_id[product], products.type[product], channel, "", action,
                     f"{products.fee[product]:.2f}" if action == "order" else "0.00"))
    df = pd.DataFrame(rows, columns=list(ORDER_COLUMNS))
    return _write(df, out / "orders" / f"month={plan.month}" / "orders.csv")
