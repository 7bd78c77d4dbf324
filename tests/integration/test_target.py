"""Scenario targets on the demo's generated month: the contact rules hold in every export, the files are what
their manifests say, and a rerun changes nothing."""

from __future__ import annotations

import csv
import hashlib
import json
import stat
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from flowops.definitions import Definitions
from flowops.steps.run import run_month
from flowops.steps.target import ExportRefused, export_rows, refuse_violations, run_target
from tests.conftest import CONF
from tests.integration.conftest import DEMO_MONTH

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def conf() -> Definitions:
    return Definitions.load(CONF)


@pytest.fixture(scope="module")
def exported(demo_run, demo_ctx) -> list[dict]:
    """Every exported row with its wave, channel, scenario and the sub_id its msisdn belongs to."""
    keys = {r.msisdn: r.sub_id for r in demo_ctx.lake.read("restricted/subscriber_keys").collect()}
    rows = []
    for path in sorted((demo_run.lake / "exports" / f"month={DEMO_MONTH}").rglob("*.csv")):
        wave, channel = path.parent.parent.name.split("=")[1], path.parent.name.split("=")[1]
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                rows.append({**row, "wave": int(wave), "channel": channel, "scenario": path.stem,
                             "sub_id": keys.get(row["msisdn"])})
    assert rows, "the demo exported nothing"
    return rows


def test_no_export_holds_an_opted_out_churned_control_or_over_cap_subscriber(demo_ctx, conf, exported):
    crm = demo_ctx.lake.read("silver/subscribers").where(F.col("month") <= DEMO_MONTH).collect()
    opted_out = {r.sub_id for r in crm if r.opt_out_all}
    channel_out = {(r.sub_id, c) for r in crm for c in (r.opt_out_channels or [])}
    churned = {r.sub_id for r in crm if r.month == DEMO_MONTH and (r.status == "churned" or r.churn_date)}
    targets = demo_ctx.lake.read("gold/scenario_targets", partitions={"month": [DEMO_MONTH]}).collect()
    control = {(r.sub_id, r.scenario) for r in targets if r.control}
    assert opted_out and channel_out and control   # the rules had someone to keep out

    assert all(r["sub_id"] for r in exported)   # every msisdn is a subscriber of the lake
    assert [r for r in exported if r["sub_id"] in opted_out] == []
    assert [r for r in exported if (r["sub_id"], r["channel"]) in channel_out] == []
    assert [r for r in exported if r["sub_id"] in churned] == []
    assert [r for r in exported if (r["sub_id"], r["scenario"]) in control] == []
    modes = {c.id: c.mode for c in conf.channels.channels}
    per_mode = Counter((r["sub_id"], modes[r["channel"]]) for r in exported)
    assert max(per_mode.values()) == 1   # one active and one passive contact per subscriber and month


def test_the_contact_history_is_exactly_what_was_exported(demo_ctx, exported):
    history = demo_ctx.lake.read("ops/contact_history", partitions={"month": [DEMO_MONTH]}).collect()
    assert Counter((r.sub_id, r.scenario, r.channel, r.wave) for r in history) == Counter(
        (r["sub_id"], r["scenario"], r["channel"], r["wave"]) for r in exported)
    # Rounds count the unconverted earlier contacts with the same offer (the demo's two earlier campaigns).
    assert min(r.round for r in history) == 1 and max(r.round for r in history) > 1
    assert all(r.outcome is None for r in history)   # nothing of this month's campaign is measured yet


def test_scarce_channels_budgets_and_value_are_respected_across_waves(demo_ctx, conf):
    targets = demo_ctx.lake.read("gold/scenario_targets").collect()
    history = demo_ctx.lake.read("ops/contact_history").collect()
    care = {s.id: s.model.care.max_cost_yuan for s in conf.scenarios if s.model.care}
    contacted = [r for r in targets if r.decision == "targeted"]
    assert contacted
    for channel in conf.channels.channels:   # contacts only: the control group takes no slot
        per_day = Counter((r.month, r.contact_date) for r in contacted if r.channel == channel.id)
        if channel.daily_capacity and per_day:
            assert max(per_day.values()) <= channel.daily_capacity, channel.id
    assert all(r.window_start <= r.contact_date <= r.window_end for r in contacted)
    # No contact worth less than nothing, but a care scenario's within its ceiling.
    assert all(r.expected_value >= 0 or (r.scenario in care and r.cost_yuan <= care[r.scenario]) for r in contacted)
    assert not [r for r in contacted if r.expected_value < 0 and r.scenario not in care]
    # A budget holds over the waves: what wave 1 really spent (channels, incentives paid) + what wave 2 may spend.
    for scenario in conf.scenarios:
        budget = scenario.model.budget_yuan
        for month in {r.month for r in contacted}:
            if not budget:
                continue
            spent = sum(h.channel_cost_yuan + (h.incentive_cost_yuan if not h.incentive_on_order
                                               or h.outcome == "converted" else 0.0)
                        for h in history if (h.month, h.scenario, h.wave) == (month, scenario.id, 1))
            planned = sum(r.cost_yuan for r in contacted if (r.month, r.scenario, r.wave) == (month, scenario.id, 2))
            first = sum(r.cost_yuan for r in contacted if (r.month, r.scenario, r.wave) == (month, scenario.id, 1))
            assert first <= budget + 1e-6 and spent + planned <= budget + 1e-6, (scenario.id, month)


def test_manifests_match_the_files_byte_for_byte_and_only_the_owner_reads_them(demo_run):
    folders = [p for p in (demo_run.lake / "exports").rglob("channel=*") if p.is_dir()]
    assert folders
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        listed = {entry["file"]: entry for entry in manifest["files"]}
        assert set(listed) == {p.name for p in folder.glob("*.csv")}
        for name, entry in listed.items():
            body = (folder / name).read_bytes()
            assert hashlib.sha256(body).hexdigest() == entry["sha256"]
            assert body.count(b"\n") - 1 == entry["rows"]
        for path in [folder, *folder.iterdir()]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_the_export_writer_refuses_a_row_that_breaks_a_rule(demo_ctx, conf, demo_run):
    targets = demo_ctx.lake.read("gold/scenario_targets", partitions={"month": [DEMO_MONTH]})
    targeted = targets.where("decision = 'targeted'")
    rows = export_rows(demo_ctx.lake, targeted, DEMO_MONTH, conf)
    held = targets.where("decision = 'control'").select("sub_id", "scenario")
    refuse_violations(demo_ctx.lake, rows, DEMO_MONTH, 1, conf, None, held)   # what the step wrote passes
    crm = demo_ctx.lake.read("silver/subscribers")
    one = targeted.where("channel = 'sms'").limit(1)

    def smuggle(sub_id: str):
        return export_rows(demo_ctx.lake, one.withColumn("sub_id", F.lit(sub_id)), DEMO_MONTH, conf)

    bad = {
        "opted_out": smuggle(crm.where("opt_out_all").first().sub_id),
        "opted_out_of_channel": smuggle(crm.where("array_contains(opt_out_channels, 'sms') AND NOT opt_out_all")
                                        .first().sub_id),
        "churned": smuggle(crm.where(f"month = '{DEMO_MONTH}' AND status = 'churned'").first().sub_id),
        "control": export_rows(demo_ctx.lake, targets.where("decision = 'control'").limit(1)
                               .withColumn("message", F.lit("x")), DEMO_MONTH, conf),
        "over_cap": export_rows(demo_ctx.lake, one, DEMO_MONTH, conf),   # a second active contact for the same person
        "negative_value": export_rows(demo_ctx.lake, targeted.where(
            "channel = 'sms' AND scenario NOT IN ('high_value_care', 'complaint_stabilise')").limit(1)
            .withColumn("expected_value", F.lit(-1.0)), DEMO_MONTH, conf),
    }
    for problem, row in bad.items():
        with pytest.raises(ExportRefused, match=rf"refused, nothing written: .*\b{problem}\b"):
            refuse_violations(demo_ctx.lake, rows.unionByName(row), DEMO_MONTH, 1, conf, None, held)


def test_a_refused_export_leaves_no_trace_of_having_been_sent(demo_ctx, demo_run, monkeypatch):
    import flowops.steps.target as step

    tables = ("gold/scenario_targets", "ops/contact_history")
    versions = {t: demo_ctx.lake.version(t) for t in tables}
    files = {p: p.read_bytes() for p in (demo_run.lake / "exports").rglob("*") if p.is_file()}
    real = step.violations

    def one_problem(rows, *args, **kwargs):
        return real(rows, *args, **kwargs).limit(0).unionByName(rows.limit(1).select(
            "sub_id", "scenario", "channel", F.lit("planted").alias("problem")))

    monkeypatch.setattr(step, "violations", one_problem)
    with pytest.raises(ExportRefused, match="1 planted"):
        run_target(demo_ctx, DEMO_MONTH)
    # Evaluation reads the contacted from what was committed: nothing changed anywhere.
    assert {t: demo_ctx.lake.version(t) for t in tables} == versions
    assert {p: p.read_bytes() for p in (demo_run.lake / "exports").rglob("*") if p.is_file()} == files


def test_export_cells_carry_the_contact_day_and_never_start_like_a_formula(exported):
    assert all(row["contact_date"] and row["window_end"] >= row["contact_date"] for row in exported)
    cells = [value for row in exported for key, value in row.items() if key in
             ("text", "script", "talking_points", "content", "manager_id", "msisdn", "trigger_event")]
    assert cells and not [c for c in cells if c and c[0] in "=+-@\t\r"]
    sms = [row["text"] for row in exported if row["channel"] == "sms"]
    assert sms and all(text.endswith("回复TD退订") for text in sms)


def test_a_rerun_of_the_month_changes_no_table_and_rewrites_identical_exports(demo_ctx, demo_run):
    # Other tests rerun steps of the shared demo lake (segment, for one): bring the month up to date first.
    run_month(demo_ctx, demo_run.raw, DEMO_MONTH)
    tables = ("bronze/usage_events", "silver/usage_daily", "gold/subscriber_tags", "gold/flow_stages",
              "gold/scenario_targets", "ops/contact_history", "gold/campaign_results")
    versions = {t: demo_ctx.lake.version(t) for t in tables}
    exports = demo_run.lake / "exports"
    files = {p: p.read_bytes() for p in exports.rglob("*") if p.is_file()}

    result = run_month(demo_ctx, demo_run.raw, DEMO_MONTH)

    assert result.ran == [] and result.skipped == ["ingest", "evaluate", "tags", "segment", "target"]
    assert {t: demo_ctx.lake.version(t) for t in tables} == versions
    again = run_target(demo_ctx, DEMO_MONTH)   # the step itself, forced: same decisions, byte-identical files
    assert again.changed is False
    assert {p: p.read_bytes() for p in exports.rglob("*") if p.is_file()} == files
    assert Path(again.exports).is_dir()


def test_the_uplift_model_scores_the_options_when_it_wins_on_the_held_out_month(demo_ctx, conf, monkeypatch):
    import shutil
    from dataclasses import replace

    import flowops.models.uplift as uplift_model
    from flowops.runs import Run
    from flowops.scenarios.plan import plan_wave
    from flowops.steps.target import choose_scorer, read_inputs

    lake = demo_ctx.lake
    policy = conf.channels.policy
    small = replace(conf, channels=replace(conf.channels, policy=policy.model_copy(update={
        "uplift_model": policy.uplift_model.model_copy(update={"min_members": 10})})))
    scores = {}
    real = uplift_model.qini

    def rigged(df, *, score, **kwargs):   # the model wins the held-out comparison, whatever it scored
        scores[score] = real(df, score=score, **kwargs).coefficient
        return replace(real(df, score=score, **kwargs), coefficient=1.0 if score == "uplift_score" else 0.0)

    monkeypatch.setattr(uplift_model, "qini", rigged)
    fitted_on = []
    train = uplift_model.train_uplift

    def recording(df, **kwargs):   # the months each fit reads
        fitted_on.append(sorted(r.month for r in df.select("month").distinct().collect()))
        return train(df, **kwargs)

    monkeypatch.setattr(uplift_model, "train_uplift", recording)
    run = Run(job="target", params={})
    folder = Path(lake.root) / "models" / "uplift" / f"month={DEMO_MONTH}"
    try:
        inputs = read_inputs(lake, small, DEMO_MONTH, "2026-04", 1, run)
        # Trained on the first evaluated month, compared on the second, both measured, the winner saved.
        assert inputs.scorer.name == "model" and folder.is_dir() and run.params["scorer"] == "model"
        assert (run.params["uplift_model_trained_on"], run.params["uplift_model_held_out"]) == ("2026-01", "2026-02")
        assert set(scores) == {"uplift_score", "estimate_score"}
        # Having won, the same procedure is fitted again on every evaluated month, the held-out one included.
        assert fitted_on == [["2026-01"], ["2026-01", "2026-02"]]
        assert run.params["uplift_model_scoring_fit_on"] == "2026-01,2026-02"
        assert choose_scorer(lake, small, DEMO_MONTH, 2, Run(job="target", params={})).name == "model"   # wave 2
        plan = plan_wave(inputs.tagged, small, DEMO_MONTH, "2026-04", 1, opt_outs=inputs.opt_outs,
                         immunity=inputs.immunity, estimates=inputs.estimates, scorer=inputs.scorer)
        valued = plan.units[plan.units["uplift"].notna()]
        assert (valued["scorer"] == "model").all()
        # Per subscriber, not per scenario x channel: the uplift differs within a cell.
        spread = valued.groupby(["scenario", "channel"])["uplift"].nunique()
        assert (spread > 1).any(), spread
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_byte_identical_rerun_keeps_one_run_id_in_the_wave_manifest_and_the_contact_history(demo_ctx, demo_run):
    lake = demo_ctx.lake
    first = run_target(demo_ctx, DEMO_MONTH)   # the decisions as the lake now has them (other tests rerun steps)

    again = run_target(demo_ctx, DEMO_MONTH)

    assert again.changed is False and again.run.run_id != first.run.run_id
    manifest = json.loads((Path(again.exports) / "manifest.json").read_text())
    history = lake.read("ops/contact_history", partitions={"month": [DEMO_MONTH]}).where("wave = 1").collect()
    assert {r.run_id for r in history} == {manifest["run_id"]} != {again.run.run_id}   # the first run's, in both
    # Every channel of the wave's scenarios is listed, those nobody was sent to with 0 rows.
    per_channel = Counter(r.channel for r in history)
    assert {c: e["rows"] for c, e in manifest["channels"].items() if e["rows"]} == dict(per_channel)
    assert [c for c, e in manifest["channels"].items() if e["rows"] == 0]
    assert not [p for p in (demo_run.lake / "exports").rglob("*") if p.name.startswith(".")]
