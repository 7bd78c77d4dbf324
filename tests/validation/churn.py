"""Does the churn model beat the rule score on a month it never saw, and are its probabilities calibrated?

One generated world (the generator plants churn: a `churn_risk` overlay, persisting from month to month, drawn
more often among short-tenure subscribers, and a few random departures), ingested, tagged month by month with the
rule score, then `flowops train churn` at the last month: fitted on the earlier labelled months, measured on the
latest one, against `churn_rule_score` on the same rows. A planted-state reference beside them: the generator's own
archetype of each subscriber in the tag month (`churn_risk` > `falling` > the rest, short tenure first within
each), which no tag shows directly, gives an idea of how much of the label the tag month can reveal at all. Then
the training runs again (an equal model must not take the alias) and the last month is tagged again, scored by
the champion.

    .venv/bin/python -m tests.validation.churn --subscribers 3000 --seed 83 --out /tmp/flowops-churn
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import pandas as pd

DONE = "_validation_done"   # written in a lake once every month is tagged: --reuse keeps such a lake
START = "2026-01"


def build(out: Path, subscribers: int, seed: int, months: list[str], reuse: bool) -> Path:
    """Generate the world and run ingest and tags for every month (tags from the second: the first is history)."""
    from flowops.definitions import Definitions
    from flowops.landing import month_days
    from flowops.steps.ingest import Reference, ingest_days, ingest_monthly
    from flowops.steps.tags import run_tags
    from flowops.synth import generate
    from tests.conftest import CONF
    from tests.validation.targeting import context

    raw, lake = out / "raw", out / "lake"
    if reuse and (lake / DONE).is_file():
        return lake
    if not (reuse and (raw / "_truth" / "manifest.json").is_file()):
        if raw.exists():
            shutil.rmtree(raw)
        generate(raw, subscribers=subscribers, start_month=months[0], months=len(months), seed=seed, bad_rate=0.0,
                 records_per_day=2)
    if lake.exists():
        shutil.rmtree(lake)
    ctx = context(CONF, lake)
    definitions = Definitions.load(CONF)
    reference = Reference.load(ctx, definitions)
    ingest_days(ctx, raw, [d for m in months for d in month_days(m)], reference)
    for month in months:
        ingest_monthly(ctx, raw, month, reference)
    for month in months[1:]:
        run_tags(ctx, month, definitions)
    (lake / DONE).write_text("ok\n", encoding="utf-8")
    return lake


def planted_reference(ctx, raw: Path, month: str, horizon: int) -> dict[str, float]:  # noqa: ANN001
    """ROC-AUC and top-decile lift of the generator's planted archetype in `month` (+ short tenure) on the rows the
    model was validated on."""
    from pyspark.sql import functions as F
    from sklearn.metrics import roc_auc_score

    from flowops.models.churn import LABEL, with_churn_label

    lake = ctx.lake
    snapshots = [m for m in lake.partition_values("silver/subscribers", "month") if m >= month]
    rows = with_churn_label(lake.read("gold/subscriber_tags", partitions={"month": [month]}),
                            lake.read("silver/subscribers", partitions={"month": snapshots}), horizon)
    keys = lake.read("restricted/subscriber_keys").select("sub_id", "msisdn").dropDuplicates(["sub_id"])
    frame = (rows.join(keys, "sub_id", how="left").select("msisdn", "tenure_months", F.col(LABEL).alias("y"))
             .toPandas())
    truth = pd.read_csv(raw / "_truth" / "archetypes.csv", dtype=str)
    truth = truth[truth["month"] == month][["msisdn", "archetype"]]
    frame = frame.merge(truth, on="msisdn", how="left")
    state = frame["archetype"].map({"churn_risk": 2.0, "falling": 1.0}).fillna(0.0)
    score = state + 0.3 * (frame["tenure_months"].fillna(99) < 18)
    top = frame.assign(s=score).sort_values("s", ascending=False).head(len(frame) // 10)
    return {"roc_auc": float(roc_auc_score(frame["y"], score)),
            "top_decile_lift": float(top["y"].mean() / frame["y"].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=83)
    parser.add_argument("--months", type=int, default=8, help="generated months (the first is history only)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flowops-churn"))
    parser.add_argument("--reuse", action="store_true", help="keep the world and the lake an earlier run finished")
    args = parser.parse_args()
    from flowops.cli import setup_logging
    from flowops.commands import format_training
    from flowops.definitions import Definitions
    from flowops.steps.tags import run_tags
    from flowops.steps.train import calibration_text, run_train_churn
    from tests.conftest import CONF
    from tests.validation.targeting import context

    setup_logging()
    os.environ.setdefault("FLOWOPS_PII_KEY", "validation-key")
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    months = pd.period_range(START, periods=args.months, freq="M").strftime("%Y-%m").tolist()
    lake = build(args.out, args.subscribers, args.seed, months, args.reuse)
    built = time.perf_counter() - started
    if args.reuse and (lake / "_mlflow").exists():
        shutil.rmtree(lake / "_mlflow")   # a fresh registry: the first training below has no champion to beat
    ctx = context(CONF, lake)
    definitions = Definitions.load(CONF)
    first = run_train_churn(ctx, months[-1], definitions)
    trained = time.perf_counter() - started - built
    again = run_train_churn(ctx, months[-1], definitions)
    tagged = run_tags(ctx, months[-1], definitions)
    sources = (ctx.lake.read("gold/subscriber_tags", partitions={"month": [months[-1]]})
               .groupBy("churn_score_source").count().collect())
    reference = planted_reference(ctx, args.out / "raw", first.validation_month,
                                  definitions.models.churn.horizon_months)

    print(f"\n{args.subscribers:,} subscribers, seed {args.seed}, months {months[0]} .. {months[-1]} "
          f"(lake built in {built:.0f}s, first training {trained:.0f}s)")
    print(format_training(first))
    print("  calibration of the rule score on the same rows:")
    print("    " + calibration_text(first.rule.calibration).replace("\n", "\n    "))
    print(f"  planted-state reference (the generator's archetype in {first.validation_month}, not a tag): ROC-AUC "
          f"{reference['roc_auc']:.4f}, top-10% lift {reference['top_decile_lift']:.2f}")
    print(f"\nsecond training, same month: v{again.version}, champion: {again.is_champion} "
          f"(ROC-AUC {again.model.metrics['roc_auc']:.4f} against the champion's "
          f"{again.champion.metrics['roc_auc']:.4f})" if again.champion else "")
    print(f"tags {months[-1]} again (run {tagged.run_id}): churn_score_source "
          f"{ {r['churn_score_source']: r['count'] for r in sources} }")
    print(f"took {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
