"""Does the evaluation recover the effects the channel simulator planted?

One generated world (a history month, the data month A and the campaign month B), the pipeline run for A, then
for each seed: `flowops simulate` answers A's wave 1, B's monthly files (orders, receipts) are ingested and
`flowops evaluate` measures A. Each scenario's wave-1 uplift (channel `all`) is compared with
RAW/_truth/simulated/.../planted_effects.csv: `planted_uplift` (what contact adds to a contacted subscriber's
chance of ordering, averaged over them) for sign and size, and `expected_difference` (treated minus control
conversion in expectation for this split of treated and control) for the interval's coverage, since only the
answers are redrawn between seeds.

    .venv/bin/python -m tests.validation.recovery --subscribers 6000 --seeds 20 --out /tmp/recovery

The test suite runs the same code on a small world (tests/integration/test_evaluate.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import pandas as pd

DATA_MONTH, CAMPAIGN_MONTH, HISTORY_MONTH = "2026-02", "2026-03", "2026-01"


def prepare(out: Path, subscribers: int, records_per_day: float = 4, seed: int = 3,  # noqa: ANN201
            driver_memory: str = "2g"):
    """Generate RAW under `out/raw` and run A (ingest, tags, segment, target) into `out/lake`; the context."""
    from flowops.context import Context
    from flowops.landing import month_days
    from flowops.steps.ingest import ingest_days, ingest_monthly
    from flowops.steps.segment import run_segment
    from flowops.steps.tags import run_tags
    from flowops.steps.target import run_target
    from flowops.synth import generate
    from tests.conftest import make_settings

    os.environ.setdefault("FLOWOPS_PII_KEY", "test-key")
    if out.exists():
        shutil.rmtree(out)
    raw = out / "raw"
    generate(raw, subscribers=subscribers, start_month=HISTORY_MONTH, months=3, seed=seed, bad_rate=0.0,
             records_per_day=records_per_day)
    settings = make_settings(out / "lake")
    ctx = Context(settings.model_copy(update={"spark": settings.spark.model_copy(
        update={"driver_memory": driver_memory})}))
    ingest_days(ctx, raw, [d for m in (HISTORY_MONTH, DATA_MONTH) for d in month_days(m)])
    for month in (HISTORY_MONTH, DATA_MONTH):
        ingest_monthly(ctx, raw, month)
    run_tags(ctx, DATA_MONTH)
    run_segment(ctx, DATA_MONTH)
    run_target(ctx, DATA_MONTH)
    return ctx


def trial(ctx, raw: Path, seed: int) -> pd.DataFrame:  # noqa: ANN001
    """One simulated answer to A's wave 1, landed and evaluated: a row per scenario with a control group."""
    from flowops.steps.evaluate import run_evaluate
    from flowops.steps.ingest import ingest_monthly
    from flowops.steps.simulate import run_simulate

    simulated = run_simulate(ctx, raw, DATA_MONTH, 1, seed)
    ingest_monthly(ctx, raw, CAMPAIGN_MONTH)
    measured = pd.DataFrame([r for r in run_evaluate(ctx, DATA_MONTH).rows if r["wave"] == 1 and r["channel"] == "all"
                             and r["uplift_low"] is not None])
    out = measured.merge(simulated.planted, on=["scenario", "wave"])
    out["seed"] = seed
    out["covers_expected"] = (out["uplift_low"] <= out["expected_difference"]) & (
        out["expected_difference"] <= out["uplift_high"])
    out["covers_zero"] = (out["uplift_low"] <= 0) & (out["uplift_high"] >= 0)
    return out[["seed", "scenario", "effect", "pushed", "control", "planted_uplift", "expected_difference", "uplift",
                "uplift_low", "uplift_high", "covers_expected", "covers_zero"]]


def recover(out: Path, subscribers: int, seeds: int, records_per_day: float = 4) -> pd.DataFrame:
    ctx = prepare(out, subscribers, records_per_day, driver_memory="8g")
    return pd.concat([trial(ctx, out / "raw", seed) for seed in range(1, seeds + 1)], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=6000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flowops-recovery"))
    args = parser.parse_args()
    started = time.perf_counter()
    trials = recover(args.out, args.subscribers, args.seeds)
    trials.to_csv(args.out / "trials.csv", index=False)
    first = trials[trials["seed"] == 1]
    pd.set_option("display.width", 200)
    print(f"seed 1 of {args.seeds}, {args.subscribers} subscribers, wave 1 (uplift in percentage points):")
    shown = first.assign(**{c: (first[c] * 100).round(1) for c in ("planted_uplift", "expected_difference", "uplift",
                                                                   "uplift_low", "uplift_high")})
    print(shown.drop(columns=["seed", "covers_zero"]).to_string(index=False))
    print(f"\n95% intervals covering the expected difference: {trials['covers_expected'].mean():.1%} of "
          f"{len(trials)} (scenario x seed)")
    signs = trials[trials["planted_uplift"].abs() > 0.02]
    print(f"sign of the measured uplift = sign of the planted one: {(signs['uplift'] > 0).mean():.1%} of {len(signs)} "
          "with a planted uplift over 2 points")
    fair = signs[signs["control"] >= 10]
    print(f"  ... with a control group of 10 or more: {(fair['uplift'] > 0).mean():.1%} of {len(fair)}; the interval "
          f"excludes 0 (significant) in {(fair['uplift_low'] > 0).mean():.1%}")
    zero = trials[trials["effect"] == 0]
    print(f"zero-effect scenario: interval covers 0 in {zero['covers_zero'].mean():.1%} of {len(zero)} seeds")
    per = trials.groupby("scenario").agg(planted=("planted_uplift", "first"), mean_measured=("uplift", "mean"),
                                         coverage=("covers_expected", "mean"))
    print("\nper scenario over seeds (points):")
    print((per.assign(planted=per.planted * 100, mean_measured=per.mean_measured * 100)).round(2).to_string())
    print(f"\ntook {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
