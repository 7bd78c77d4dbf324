"""Month by month: who is active, which archetype they carry, how much they use, what they bought.

The planner keeps only small per-subscriber state between months (history of the last months'
archetypes and usage), so memory does not grow with the number of months beyond a few arrays.

First months: ``falling`` needs history, so it is planted from the run's second month on (its
baseline is the mean of the up to 3 generated months before). ``overflow`` subscribers overflow in
every month they hold that archetype, so from the second month on the previous month's overflow is
in the data; in the first month the previous month is simply not observed (rules should treat a
missing previous month as satisfied, or the first month's upgrade stage will be empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowops.synth import archetypes as A
from flowops.synth import behaviour as B
from flowops.synth.catalog import Products, load_devices, load_products
from flowops.synth.plans import allowance_mb, choose_plans, fitting_data_plan, usage_level
from flowops.synth.population import Population

GONE, PENDING, ACTIVE = 0, 1, 2
RANDOM_CHURN_P = 0.004
CHURN_P_FIRST = 0.12       # churn in the first month flagged churn_risk
CHURN_P_REPEAT = 0.45      # churn in a later consecutive churn_risk month
CHANNELS_ORDER = ("counter", "app", "web", "sms", "hotline")
ORDER_CHANNEL_P = np.array([0.15, 0.45, 0.10, 0.20, 0.10])
BRANDS = ("gotone", "mzone", "easyown")
CONTACT_CHANNELS = ("sms", "app", "web", "outbound", "manager")
# Preferred contact channel weights per identity (manager is added for VIPs only).
PREF_WEIGHTS = np.array([
    [0.15, 0.50, 0.30, 0.05, 0.0], [0.20, 0.50, 0.25, 0.05, 0.0], [0.55, 0.15, 0.05, 0.25, 0.0],
    [0.20, 0.45, 0.20, 0.15, 0.0], [0.30, 0.40, 0.10, 0.20, 0.0], [0.40, 0.30, 0.10, 0.20, 0.0],
])


@dataclass
class MonthPlan:
    """Everything planned for one month, for the subscribers in that month's CRM snapshot."""

    month: str
    index: int
    first_ord: int
    last_ord: int
    subs: np.ndarray            # int32 population rows
    arch: np.ndarray            # int8
    flow: np.ndarray            # int8 into FLOW_TYPES
    churn_ord: np.ndarray       # int32, 0 if not churned this month
    end_ord: np.ndarray         # int32 last day with usage (churn date or month end)
    base: np.ndarray
    data: np.ndarray
    idle: np.ndarray
    target_mb: np.ndarray
    idle_share: np.ndarray
    shares: np.ndarray          # float32 (n, days): fraction of the month's data per day
    boosters: np.ndarray        # int8 count of boosters bought
    booster_id: np.ndarray      # int16
    voice_min: np.ndarray       # (n, 3) local, long distance, roaming minutes
    sms: np.ndarray
    vas_fee: np.ndarray
    complaints: np.ndarray
    # (population row, date ordinal, second of day, product row, channel, action)
    orders: list[tuple] = field(default_factory=list)

    @property
    def days(self) -> int:
        return self.last_ord - self.first_ord + 1


class Planner:
    """Carries subscriber state from month to month and plans each month in turn."""

    def __init__(self, pop: Population, seed: int, month_bounds: list[tuple[int, int]],
                 month_names: list[str]) -> None:
        self.pop = pop
        self.seed = seed
        self.bounds = month_bounds
        self.names = month_names
        self.products: Products = load_products()
        devices = load_devices()
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
        n = pop.n
        self.gen = devices.gen[pop.dev]
        self.feature = ~devices.smart[pop.dev]
        self.base, self.data, self.idle = choose_plans(rng, self.products, pop.home, self.gen)
        self.home = pop.home.copy()
        allow = allowance_mb(self.products, self.base, self.data)
        self.level, self.idle_share = usage_level(rng, self.home, allow, pop.level_u)
        pack = self.idle >= 0
        self.idle_share[pack] = 0.2 + 0.25 * rng.random(int(pack.sum()))
        self.boost_flavour = rng.random(n) < 0.25
        self.vas = np.where(rng.random(n) < 0.2, rng.choice([5.0, 10.0, 15.0], n), 0.0)
        self.state = np.where(pop.join_month < 0, ACTIVE, PENDING).astype(np.int8)
        self.hist_arch = np.full((n, 3), -1, dtype=np.int8)     # last 3 months, newest first
        self.hist_mb = np.full((n, 3), np.nan)
        self.last_arpu = np.full(n, np.nan)
        self.pending_base = np.full(n, -2, dtype=np.int16)
        self.pending_data = np.full(n, -2, dtype=np.int16)
        self.pending_idle = np.full(n, -2, dtype=np.int16)
        self._profile(rng)

    def _profile(self, rng: np.random.Generator) -> None:
        """CRM attributes that follow from the plan held at the start: brand, VIP, opt-outs."""
        pop, prod = self.pop, self.products
        n = pop.n
        pid = np.array(prod.product_id)[self.base]
        fee = prod.fee[self.base] + np.where(self.data >= 0, prod.fee[np.maximum(self.data, 0)], 0)
        young = (pop.identity == 0) | (pop.age_band == 0)
        brand = np.where(rng.random(n) < 0.5, BRANDS.index("gotone"), BRANDS.index("easyown"))
        brand = np.where(young, BRANDS.index("mzone"), brand)
        brand = np.where(fee >= 88, BRANDS.index("gotone"), brand)
        brand = np.where(np.char.startswith(pid.astype(str), "BP_EASY"), BRANDS.index("easyown"),
                         brand)
        self.brand = np.where(pid == "BP_MZ18", BRANDS.index("mzone"), brand).astype(np.int8)
        tenure_y = (self.bounds[0][0] - pop.activation) / 365.25
        vip = np.select([(fee >= 188) & (tenure_y >= 5), (fee >= 128) & (tenure_y >= 2),
                         (fee >= 88) & (tenure_y >= 1)], [3, 2, 1], 0)
        self.vip = np.where(rng.random(n) < 0.15, np.maximum(vip - 1, 0), vip).astype(np.int8)
        self.manager = np.where(self.vip > 0, np.char.add(
            np.char.add("AM", np.char.zfill(pop.city.astype("U2"), 2)),
            np.char.zfill(rng.integers(1, 40, n).astype("U3"), 3)), "")
        self.opt_out_all = rng.random(n) < 0.03
        chosen = rng.random((n, len(CONTACT_CHANNELS))) < 0.35
        has = (rng.random(n) < 0.05)
        chosen[has & ~chosen.any(axis=1), 0] = True
        self.opt_out_channels = np.array(
            [";".join(c for c, on in zip(CONTACT_CHANNELS, row, strict=False) if on) if h else ""
             for row, h in zip(chosen, has, strict=False)], dtype=object)
        self.pref_channel = self.draw_preference(rng)

    def draw_preference(self, rng: np.random.Generator) -> np.ndarray:
        """Each subscriber's preferred contact channel (index into CONTACT_CHANNELS, -1 for none), drawn from
        weights by identity (an account manager only for VIPs)."""
        n = self.pop.n
        w = PREF_WEIGHTS[self.pop.identity].copy()
        w[:, CONTACT_CHANNELS.index("manager")] = np.where(self.vip > 0, 0.8, 0.0)
        cdf = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        pick = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), len(CONTACT_CHANNELS) - 1)
        return np.where(rng.random(n) < 0.55, pick, -1).astype(np.int8)

    def record_bill(self, plan: MonthPlan, totals: np.ndarray) -> None:
        """Remember each subscriber's bill total (ARPU) for next month's falling eligibility."""
        self.last_arpu[plan.subs] = totals

    # ------------------------------------------------------------------ month step
    def plan(self, m: int) -> MonthPlan:
        """Plan month ``m`` (0-based); must be called for 0, 1, 2, ... in order."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3, m]))
        pop, prod = self.pop, self.products
        first, last = self.bounds[m]
        self._apply_pending()
        self.state[(pop.join_month == m)] = ACTIVE
        subs = np.flatnonzero(self.state == ACTIVE).astype(np.int32)
        n = subs.size
        joined = pop.join_month[subs] == m
        prev = self.hist_arch[subs, 0]
        arch = self.home[subs].copy()
        arch[joined] = A.NEW
        arch = self._overlays(rng, m, subs, arch, prev, joined)

        # Churn: mostly among churn_risk (more so when it persists), a little everywhere else.
        p = np.where(arch == A.CHURN_RISK, np.where(prev == A.CHURN_RISK, CHURN_P_REPEAT,
                                                    CHURN_P_FIRST), RANDOM_CHURN_P)
        p[joined] = 0.0
        churn = rng.random(n) < p
        arch[churn] = A.CHURN_RISK
        churn_ord = np.where(churn, rng.integers(first + 1, last + 1, n), 0).astype(np.int32)
        end_ord = np.where(churn, churn_ord, last).astype(np.int32)
        act = np.maximum(pop.activation[subs], first)
        active_frac = (end_ord - act + 1) / (last - first + 1)

        allow = allowance_mb(prod, self.base[subs], self.data[subs])
        target, idle_share, level = self._targets(rng, m, subs, arch, allow, active_frac)
        boosters, booster_id = self._boosters(rng, arch, subs, target, allow)
        prev_avg = nanmean_rows(self.hist_mb[subs, :min(m, 3)])
        flow = A.flow_type(target, allow, prev_avg, boosters)

        voice = self._voice(rng, subs, arch, active_frac)
        complaints = np.where(arch == A.COMPLAINER, 1 + rng.poisson(0.5, n), 0)
        complaints = np.where((arch == A.CHURN_RISK) & (rng.random(n) < 0.25), 1, complaints)
        vas = np.where(arch == A.CHURN_RISK, 0.0, self.vas[subs])

        plan = MonthPlan(
            month=self.names[m], index=m, first_ord=first, last_ord=last, subs=subs, arch=arch,
            flow=flow, churn_ord=churn_ord, end_ord=end_ord, base=self.base[subs].copy(),
            data=self.data[subs].copy(), idle=self.idle[subs].copy(), target_mb=target,
            idle_share=idle_share,
            shares=self._day_shares(rng, subs, arch, target, act, end_ord, first, last),
            boosters=boosters, booster_id=booster_id, voice_min=voice,
            sms=rng.poisson(np.where(pop.identity[subs] == 0, 25, 12)) * (active_frac > 0),
            vas_fee=vas * active_frac, complaints=complaints.astype(np.int8))
        plan.orders = self._orders(rng, plan, level)
        self._remember(plan, churn)
        return plan

    # ------------------------------------------------------------------ pieces
    def _apply_pending(self) -> None:
        for pend, cur in ((self.pending_base, self.base), (self.pending_data, self.data),
                          (self.pending_idle, self.idle)):
            hit = pend != -2
            cur[hit] = pend[hit]
            pend[:] = -2

    def _overlays(self, rng: np.random.Generator, m: int, subs: np.ndarray, arch: np.ndarray,
                  prev: np.ndarray, joined: np.ndarray) -> np.ndarray:
        """Monthly overlays on steady subscribers: churn_risk, falling, complainer, rising."""
        pop = self.pop
        n = subs.size
        steady = (arch == A.STEADY) & ~joined
        # Persistence from last month.
        keep_risk = steady & (prev == A.CHURN_RISK) & (rng.random(n) < 0.5)
        after_fall = steady & (prev == A.FALLING)
        u = rng.random(n)
        arch[keep_risk] = A.CHURN_RISK
        arch[after_fall & (u < 0.2)] = A.CHURN_RISK
        arch[after_fall & (u >= 0.2) & (u < 0.35)] = A.FALLING
        free = (arch == A.STEADY) & ~joined & ~after_fall & (prev != A.CHURN_RISK)

        def draw(mask: np.ndarray, wanted: int, weight: np.ndarray | None = None) -> np.ndarray:
            idx = np.flatnonzero(mask)
            k = int(min(max(wanted, 0), idx.size))
            if k == 0:
                return idx[:0]
            w = None if weight is None else weight[idx] / weight[idx].sum()
            return rng.choice(idx, size=k, replace=False, p=w)

        tenure = self.bounds[m][0] - pop.activation[subs]
        risk_w = np.where(tenure < 540, 4.0, 1.0)
        pick = draw(free, round(A.CHURN_RISK_SHARE * n) - int((arch == A.CHURN_RISK).sum()), risk_w)
        arch[pick] = A.CHURN_RISK
        free[pick] = False
        if m >= 1:
            depth = min(m, 3)
            hist_ok = np.isin(self.hist_arch[subs, :depth], (A.STEADY, A.COMPLAINER)).all(axis=1)
            eligible = free & hist_ok & (tenure >= 730) & (self.last_arpu[subs] >= 62)
            pick = draw(eligible, round(A.FALLING_SHARE * n) - int((arch == A.FALLING).sum()))
            arch[pick] = A.FALLING
            free[pick] = False
        pick = draw(free, round(A.COMPLAINER_SHARE * n))
        arch[pick] = A.COMPLAINER
        free[pick] = False
        if m >= 1:
            # Rising: some steady users grow for good, while staying inside their allowance.
            allow = allowance_mb(self.products, self.base[subs], self.data[subs])
            room = free & (self.level[subs] * 1.6 <= 0.85 * allow)
            pick = draw(room, round(0.03 * n))
            self.level[subs[pick]] *= 1.45 + 0.15 * rng.random(pick.size)
        return arch

    def _targets(self, rng: np.random.Generator, m: int, subs: np.ndarray, arch: np.ndarray,
                 allow: np.ndarray, active_frac: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = subs.size
        level = self.level[subs]
        noise = np.clip(rng.lognormal(0.0, 0.04, n), 0.92, 1.08)
        t = level * noise
        idle = self.idle_share[subs].copy()

        def where(code: int) -> np.ndarray:
            return arch == code

        s = where(A.STEADY) | where(A.COMPLAINER)
        t[s] = np.clip(t[s], 150.0, 0.88 * allow[s])
        o = where(A.OVERFLOW)
        t[o] = np.maximum(t[o], 1.2 * allow[o])
        i = where(A.IDLE_NO_PACK)
        t[i] = np.minimum(t[i], 0.88 * allow[i])
        idle[i] = np.maximum(idle[i], 170.0 / np.maximum(t[i], 1.0))
        p = where(A.NO_PLAN)
        t[p] = np.clip(t[p], 200.0, 800.0)
        lo = where(A.LOW_SMART)
        t[lo] = np.clip(t[lo], 1.0, np.minimum(95.0, 0.8 * allow[lo]))
        lf = where(A.LOW_FEATURE)
        t[lf] = np.clip(t[lf], 0.2, 0.8 * allow[lf])
        f = where(A.FALLING)
        base_avg = nanmean_rows(self.hist_mb[subs[f], :min(m, 3)])
        t[f] = base_avg * (0.2 + 0.3 * rng.random(int(f.sum())))
        c = where(A.CHURN_RISK)
        t[c] = level[c] * (0.4 + 0.3 * rng.random(int(c.sum())))
        nw = where(A.NEW)
        k = int(nw.sum())
        t[nw] = np.where(rng.random(k) < 0.5, 0.0, 1.0 + 79.0 * rng.random(k))
        t[where(A.ZERO_SMART) | where(A.ZERO_FEATURE)] = 0.0
        t = t * np.where(nw | c, active_frac, 1.0)
        return t, np.clip(idle, 0.0, 0.9), level

    def _boosters(self, rng: np.random.Generator, arch: np.ndarray, subs: np.ndarray,
                  target: np.ndarray, allow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Overflowing subscribers of the booster flavour buy 1-2 boosters, less than the excess."""
        n = subs.size
        ids = self.products.ids("BST_3", "BST_5", "BST_10")
        booster_id = ids[rng.integers(0, 3, n)]
        count = rng.integers(1, 3, n)
        excess = target - allow
        mb = self.products.allowance_mb[booster_id] * count
        buy = (arch == A.OVERFLOW) & self.boost_flavour[subs] & (mb < excess)
        return np.where(buy, count, 0).astype(np.int8), booster_id

    def _voice(self, rng: np.random.Generator, subs: np.ndarray, arch: np.ndarray,
               active_frac: np.ndarray) -> np.ndarray:
        n = subs.size
        mou = self.pop.voice_mou[subs] * np.clip(rng.lognormal(0, 0.06, n), 0.85, 1.15)
        mou = mou * np.where(arch == A.CHURN_RISK, 0.3 + 0.3 * rng.random(n), 1.0) * active_frac
        roam = np.where(self.pop.identity[subs] == 3, 0.30, 0.05)
        split = np.stack([1.0 - 0.12 - roam, np.full(n, 0.12), roam], axis=1)
        return np.round(mou[:, None] * split)

    def _day_shares(self, rng: np.random.Generator, subs: np.ndarray, arch: np.ndarray,
                    target: np.ndarray, act: np.ndarray, end: np.ndarray, first: int,
                    last: int) -> np.ndarray:
        days = last - first + 1
        n = subs.size
        ords = first + np.arange(days)
        allowed = (ords[None, :] >= act[:, None]) & (ords[None, :] <= end[:, None])
        active = allowed & (rng.random((n, days)) < B.ACTIVE_DAY_P[arch][:, None])
        # Anyone with data uses it on at least one allowed day.
        none = ~active.any(axis=1) & allowed.any(axis=1)
        if none.any():
            pick = np.argmax(allowed[none] * rng.random((int(none.sum()), days)), axis=1)
            active[np.flatnonzero(none), pick] = True
        weekend = np.array([(o + 6) % 7 >= 5 for o in ords])  # ordinal 1 = Monday
        factor = np.where(weekend[None, :], B.WEEKEND_FACTOR[self.pop.identity[subs]][:, None], 1.0)
        w = np.where(active, factor * rng.lognormal(0.0, 0.35, (n, days)), 0.0)
        w[target <= 0] = 0.0
        tot = w.sum(axis=1, keepdims=True)
        return (w / np.where(tot > 0, tot, 1.0)).astype(np.float32)

    def _orders(self, rng: np.random.Generator, plan: MonthPlan, level: np.ndarray) -> list[tuple]:
        """Organic orders of the month; plan changes take effect next month (次月生效)."""
        prod, subs, arch = self.products, plan.subs, plan.arch
        n = subs.size
        u = rng.random(n)
        alive = plan.churn_ord == 0
        out: list[tuple] = []

        def add(mask: np.ndarray, product: np.ndarray, action: str = "order") -> None:
            for i in np.flatnonzero(mask):
                day = int(rng.integers(max(plan.first_ord, int(self.pop.activation[subs[i]])),
                                       plan.last_ord + 1))
                ch = CHANNELS_ORDER[int(rng.choice(5, p=ORDER_CHANNEL_P))]
                out.append((int(subs[i]), day, int(rng.integers(8 * 3600, 23 * 3600)),
                            int(product[i]), ch, action))

        buy_plan = alive & (arch == A.NO_PLAN) & (u < 0.06)
        dp = fitting_data_plan(prod, plan.base, plan.target_mb)
        add(buy_plan, dp)
        self.pending_data[subs[buy_plan]] = dp[buy_plan]
        self.home[subs[buy_plan]] = A.STEADY

        buy_idle = alive & (arch == A.IDLE_NO_PACK) & (u < 0.05)
        pack = np.where(plan.target_mb * plan.idle_share <= 500, prod.index["IDLE_5"],
                        prod.index["IDLE_10"]).astype(np.int16)
        add(buy_idle, pack)
        self.pending_idle[subs[buy_idle]] = pack[buy_idle]
        self.home[subs[buy_idle]] = A.STEADY

        upgrade = alive & (arch == A.OVERFLOW) & (u < 0.04)
        dp = fitting_data_plan(prod, plan.base, plan.target_mb * 1.05)
        add(upgrade, dp)
        self.pending_data[subs[upgrade]] = dp[upgrade]
        self.home[subs[upgrade]] = A.STEADY

        for k in range(2):
            add(plan.boosters > k, plan.booster_id)
        apps = prod.ids("APP_MIGU_VIDEO", "APP_MIGU_MUSIC", "APP_139MAIL", "APP_MIGU_READ",
                        "APP_FETION")
        app_pick = apps[rng.integers(0, apps.size, n)]
        new_app = alive & (self.vas[subs] == 0) & (rng.random(n) < 0.008)
        add(new_app, app_pick)
        self.vas[subs[new_app]] = np.maximum(prod.fee[app_pick[new_app]], 0.0)
        cancel = alive & (self.vas[subs] > 0) & ~new_app & (rng.random(n) < 0.006)
        add(cancel, apps[np.zeros(n, dtype=int)], "cancel")
        self.vas[subs[cancel]] = 0.0
        terms = prod.ids("TERM_4G_LOW", "TERM_5G_MID", "TERM_5G_HIGH")
        add(alive & ~self.feature[subs] & (rng.random(n) < 0.002), terms[rng.integers(0, 3, n)])
        out.sort(key=lambda r: (r[1], r[2], r[0]))
        return out

    def _remember(self, plan: MonthPlan, churn: np.ndarray) -> None:
        subs = plan.subs
        self.hist_arch[subs] = np.column_stack([plan.arch, self.hist_arch[subs, :2]])
        self.hist_mb[subs] = np.column_stack([plan.target_mb, self.hist_mb[subs, :2]])
        self.state[subs[churn]] = GONE


def nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Row means ignoring NaN; NaN for rows (or matrices with no columns) without any value."""
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    ok = ~np.isnan(x)
    cnt = ok.sum(axis=1)
    tot = np.where(ok, x, 0.0).sum(axis=1)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
