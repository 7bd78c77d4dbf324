"""How much the optimal arbitration gains over the old greedy passes, as capacity and budgets bind harder.

On a lake whose month is tagged and segmented (the demo's, say), wave 1's plan is solved again (nothing is
written) with the scarce channels' daily capacity and the scenarios' budgets scaled down, and, for each scale, the
expected incremental value of the optimum and of the greedy (cap, then capacity down the route, then budget by
value) on the very same options, the solver's status, gap and seconds.

    .venv/bin/python -m tests.validation.arbitration --lake demo/lakehouse --month 2026-03
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

SCALES = (1.0, 0.5, 0.25, 0.1)


def variant(conf, scale: float):  # noqa: ANN001, ANN201 - Definitions in and out
    """The conf with every scarce channel's daily capacity and every budget scaled (capacity at least 1 a day)."""
    channels = tuple(c.model_copy(update={"daily_capacity": max(1, int(c.daily_capacity * scale))})
                     if c.daily_capacity else c for c in conf.channels.channels)
    scenarios = [replace(s, model=s.model.model_copy(update={"budget_yuan": s.model.budget_yuan * scale}))
                 if s.model.budget_yuan else s for s in conf.scenarios]
    return replace(conf, channels=replace(conf.channels, channels=channels), scenarios=scenarios)


def compare(lake: Path, month: str, conf_dir: Path) -> list[dict]:
    from flowops.definitions import Definitions
    from flowops.landing import next_month
    from flowops.runs import Run
    from flowops.scenarios.plan import plan_wave
    from flowops.steps.target import read_inputs
    from tests.validation.targeting import context

    ctx = context(conf_dir, lake)
    conf = Definitions.load(conf_dir)
    inputs = read_inputs(ctx.lake, conf, month, next_month(month), 1, Run(job="target", params={}))
    rows = []
    for scale in SCALES:
        plan = plan_wave(inputs.tagged, variant(conf, scale), month, next_month(month), 1, opt_outs=inputs.opt_outs,
                         immunity=inputs.immunity, estimates=inputs.estimates, scorer=inputs.scorer)
        best, old = plan.optimal, plan.greedy
        rows.append({"scale": scale, "options": best.options, "contested": best.contested,
                     "optimal": round(best.value, 2), "greedy": round(old.value, 2),
                     "gain_pct": round(100 * (best.value / old.value - 1), 2) if old.value else None,
                     "status": best.status, "gap": best.gap, "solver_s": round(best.seconds, 3),
                     "contacts": int((plan.units["decision"] == "targeted").sum())})
    return rows


def main() -> None:
    import pandas as pd

    from tests.conftest import CONF

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path("demo/lakehouse"))
    parser.add_argument("--month", default="2026-03")
    parser.add_argument("--conf", type=Path, default=CONF)
    args = parser.parse_args()
    os.environ.setdefault("FLOWOPS_PII_KEY", "validation-key")
    frame = pd.DataFrame(compare(args.lake, args.month, args.conf))
    pd.set_option("display.width", 200)
    print(f"wave 1 of {args.month} on {args.lake}: capacities and budgets scaled; expected incremental value (yuan)")
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
