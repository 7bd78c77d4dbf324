"""Monthly bills: long-format lines per subscriber, consistent with the planted usage.

Tariffs: old voice-era plans (神州行 / 动感地带) pay every minute; 4G/5G plans bundle minutes and
charge only beyond them. Data outside every allowance costs PAYPERUSE_YUAN_PER_MB, capped at
PAYPERUSE_CAP_YUAN a month. Idle-time data is first taken from an idle pack, if held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowops.synth.catalog import PAYPERUSE_CAP_YUAN, PAYPERUSE_YUAN_PER_MB, Products
from flowops.synth.planning import MonthPlan
from flowops.synth.population import Population

ITEMS: tuple[tuple[str, str, str], ...] = (  # item_code, item_name, unit
    ("base_plan_fee", "套餐月费", "month"),
    ("data_plan_fee", "流量包月费", "month"),
    ("idle_pack_fee", "闲时包月费", "month"),
    ("booster_fee", "流量加油包", "pack"),
    ("data_payperuse", "套餐外流量费", "MB"),
    ("voice_local", "本地通话费", "min"),
    ("voice_longdistance", "国内长途通话费", "min"),
    ("voice_roaming", "国内漫游通话费", "min"),
    ("sms", "短信费", "msg"),
    ("vas", "增值业务费", "month"),
)
OLD_PLAN_RATES = np.array([0.15, 0.19, 0.39])   # local, long distance, roaming yuan/min
EXTRA_MINUTE_YUAN = 0.19
SMS_YUAN = 0.10
# Minutes bundled with 4G/5G plans, by monthly fee.
BUNDLED_MINUTES = {38: 100, 58: 200, 88: 500, 128: 500, 138: 700, 188: 1000, 198: 1000}


@dataclass(frozen=True)
class Bill:
    """Bill lines as parallel arrays; ``pos`` indexes the month plan's subscribers."""

    pos: np.ndarray
    item: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    total: np.ndarray       # yuan per subscriber (ARPU contribution), indexed like plan.subs


def payperuse_mb(plan: MonthPlan, products: Products) -> np.ndarray:
    """Data (MB) outside base plan, data plan, boosters and (for idle-time data) idle pack."""
    def allow(rows: np.ndarray) -> np.ndarray:
        return np.where(rows >= 0, products.allowance_mb[np.maximum(rows, 0)], 0.0)

    boost = allow(plan.booster_id) * plan.boosters
    idle_mb = plan.target_mb * plan.idle_share
    idle_free = np.minimum(idle_mb, allow(plan.idle))
    return np.maximum(0.0, plan.target_mb - idle_free - allow(plan.base) - allow(plan.data) - boost)


def compute_bill(plan: MonthPlan, products: Products, pop: Population) -> Bill:
    """All bill lines of a month."""
    n = plan.subs.size
    act = np.maximum(pop.activation[plan.subs], plan.first_ord)
    frac = (plan.end_ord - act + 1) / plan.days

    def fee(rows: np.ndarray) -> np.ndarray:
        return np.where(rows >= 0, products.fee[np.maximum(rows, 0)], 0.0) * frac

    base_fee = products.fee[plan.base]
    old = np.isin(np.array(products.product_id)[plan.base], ["BP_EASY8", "BP_EASY19", "BP_EASY4G18",
                                                             "BP_MZ18"])
    bundled = np.array([BUNDLED_MINUTES.get(int(f), 0) for f in base_fee])
    v = plan.voice_min
    modern_local = np.maximum(0.0, v.sum(axis=1) - bundled) * EXTRA_MINUTE_YUAN
    voice_amt = np.where(old[:, None], v * OLD_PLAN_RATES[None, :],
                         np.stack([modern_local, np.zeros(n), np.zeros(n)], axis=1))
    ppu_mb = payperuse_mb(plan, products)
    ppu_amt = np.minimum(ppu_mb * PAYPERUSE_YUAN_PER_MB, PAYPERUSE_CAP_YUAN)
    booster_amt = np.where(plan.boosters > 0, products.fee[plan.booster_id] * plan.boosters, 0.0)

    cols = [  # (quantity, amount, emit?) per item, in ITEMS order
        (np.ones(n), fee(plan.base), np.ones(n, dtype=bool)),
        (np.ones(n), fee(plan.data), plan.data >= 0),
        (np.ones(n), fee(plan.idle), plan.idle >= 0),
        (plan.boosters.astype(float), booster_amt, plan.boosters > 0),
        (np.round(ppu_mb, 2), ppu_amt, ppu_mb > 0.005),
        (v[:, 0], voice_amt[:, 0], v[:, 0] > 0),
        (v[:, 1], voice_amt[:, 1], v[:, 1] > 0),
        (v[:, 2], voice_amt[:, 2], v[:, 2] > 0),
        (plan.sms.astype(float), plan.sms * SMS_YUAN, plan.sms > 0),
        (np.ones(n), plan.vas_fee, plan.vas_fee > 0),
    ]
    qty = np.stack([c[0] for c in cols], axis=1)
    amt = np.round(np.stack([c[1] for c in cols], axis=1), 2)
    emit = np.stack([c[2] for c in cols], axis=1)
    pos, item = np.nonzero(emit)
    return Bill(pos=pos, item=item, quantity=qty[pos, item], amount=amt[pos, item],
                total=np.where(emit, amt, 0.0).sum(axis=1))
