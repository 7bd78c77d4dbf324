"""The evaluation recovers what the channel simulator planted, on a world of its own (tests/validation/recovery.py
with a small population; `python -m tests.validation.recovery` runs the large version), and `flowops run` of the
campaign month evaluates the month before it and learns from it."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from flowops.definitions import Definitions
from flowops.errors import LakeError
from flowops.scenarios.estimates import estimate
from flowops.steps.run import run_month
from flowops.steps.target import read_cells, run_target
from tests.conftest import CONF
from tests.validation.recovery import CAMPAIGN_MONTH, DATA_MONTH, prepare, trial

pytestmark = pytest.mark.slow
SEEDS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("recovery")
    return out, prepare(out, subscribers=1500)


@pytest.fixture(scope="module")
def trials(world):
    import pandas as pd

    out, ctx = world
    with pytest.raises(LakeError, match="wave 1's contacts have no outcome yet|exported nothing"):
        run_target(ctx, DATA_MONTH, 2)   # wave 2 waits for wave 1's evaluation
    return pd.concat([trial(ctx, out / "raw", seed) for seed in SEEDS], ignore_index=True)


def test_measured_uplift_recovers_the_planted_effects(trials):
    assert len(trials) >= 6 * len(SEEDS), trials   # most scenarios had a control group to compare with
    # The 95% intervals cover what treated minus control is in expectation (about 95%; 80% allows for few seeds).
    assert trials["covers_expected"].mean() >= 0.8, trials
    # The sign of every clear planted effect comes back, averaged over the seeds (realistic effects are a few
    # points: one seed's small control group cannot tell them from zero).
    mean = trials.groupby("scenario").agg(planted=("planted_uplift", "first"), measured=("uplift", "mean"))
    clear = mean[mean["planted"] > 0.02]
    assert len(clear) and (clear["measured"] > 0).mean() >= 0.8, mean
    # The scenario planted with no effect: its interval covers zero in (nearly) every seed.
    zero = trials[trials["effect"] == 0]
    assert len(zero) == len(SEEDS) and zero["covers_zero"].sum() >= len(SEEDS) - 1, zero
    # Size: averaged over seeds, measured and planted uplift agree within a few points per scenario.
    per = trials.groupby("scenario").agg(planted=("expected_difference", "first"), measured=("uplift", "mean"),
                                         n=("control", "first"))
    big = per[per["n"] >= 20]
    assert len(big) and ((big["measured"] - big["planted"]).abs() <= 0.1).all(), per


def test_simulating_a_wave_again_replaces_its_answers_in_the_landing_files(world, trials):
    import json

    raw = world[0] / "raw"
    label = json.loads((raw / "_truth" / "simulated" / f"month={DATA_MONTH}" / "wave=1" / "simulation.json")
                       .read_text(encoding="utf-8"))
    assert label["simulated"] is True and label["seed"] == SEEDS[-1]
    lines = (raw / "orders" / f"month={CAMPAIGN_MONTH}" / "orders.csv").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith(label["order_id_prefix"]) for line in lines) == label["orders"]
    receipts = sum(len((raw / name).read_text(encoding="utf-8").splitlines()) - 1 for name in label["files"]
                   if name.startswith("feedback/"))
    assert receipts == label["receipts"]   # one seed's answers, however many seeds ran before


def test_run_of_the_campaign_month_evaluates_the_month_before_and_targets_with_what_it_learnt(world, trials):
    out, ctx = world
    result = run_month(ctx, out / "raw", CAMPAIGN_MONTH)
    assert result.ran == ["ingest", "evaluate", "tags", "segment", "target"], result
    assert result.evaluation is not None and result.evaluation.month == DATA_MONTH
    lake = ctx.lake
    history = lake.read("ops/contact_history", partitions={"month": [DATA_MONTH]})
    assert history.where(F.col("outcome").isNull()).count() == 0
    # The uplift the policy valued the campaign month's contacts by is the channels' priors updated by the
    # experiments measured in the month before (treated against control, per scenario x channel).
    cells = read_cells(lake, CAMPAIGN_MONTH)
    assert cells and {c.channel for c in cells}
    conf = Definitions.load(CONF)
    learnt = estimate(cells, [s.id for s in conf.scenarios], conf.channels)
    prior = estimate([], [s.id for s in conf.scenarios], conf.channels)
    used = {(r.scenario, r.channel): r.uplift for r in lake.read(
        "gold/scenario_targets", partitions={"month": [CAMPAIGN_MONTH]}).where("decision = 'targeted'")
        .select("scenario", "channel", "uplift").distinct().collect()}
    assert used and all(rate == pytest.approx(learnt.uplift[key].mean) for key, rate in used.items())
    assert any(abs(learnt.uplift[key].mean - prior.uplift[key].mean) > 0.001 for key in used)
