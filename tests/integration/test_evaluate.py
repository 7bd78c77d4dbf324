"""The evaluation loop on the demo's three months (2026-01 .. 2026-03, the simulator answering two waves of each
campaign in between): results agree with what was exported and held out, every contact gets an outcome, and the
next months learn from them — unsubscribes, immunity, channel preference, wave 2."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
from pyspark.sql import functions as F

from tests.integration.conftest import DEMO_MONTH

pytestmark = pytest.mark.slow
EVALUATED = ("2026-01", "2026-02")


def rows(ctx, table, **where):
    df = ctx.lake.read(table)
    for column, value in where.items():
        df = df.where(F.col(column) == value)
    return df.collect()


def test_campaign_results_count_what_was_exported_and_held_out(demo_ctx, demo_run):
    compared = []
    for month in EVALUATED:
        results = rows(demo_ctx, "gold/campaign_results", month=month)
        targets = rows(demo_ctx, "gold/scenario_targets", month=month)
        assert results and {r.campaign_month for r in results} == {f"2026-{int(month[-2:]) + 1:02d}"}
        for r in results:
            if r.channel == "all" and r.wave > 0:   # a wave: the chosen against the would-be chosen, where any
                assert r.chosen <= r.assigned and r.control_chosen <= r.control and r.pushed <= r.chosen
                assert r.comparison == ("chosen" if r.chosen and r.control_chosen else "arms"), (month, r.scenario)
                compared.append(r.comparison)
            if r.channel in ("all", "unassigned"):
                continue
            path = demo_run.lake / "exports" / f"month={month}" / f"wave={r.wave}" / f"channel={r.channel}" / \
                f"{r.scenario}.csv"
            if r.pushed:
                with path.open(encoding="utf-8") as handle:
                    assert r.pushed == sum(1 for _ in csv.DictReader(handle)), (month, r.scenario, r.channel)
            else:   # only held out (or crowded out) on that channel: nothing was exported to it
                assert not path.exists() and r.control + r.addressable > 0
            # The comparison group: wave 1's control group, a later wave's own holdout.
            held = [t for t in targets if (t.scenario, t.wave, t.channel, t.decision) ==
                    (r.scenario, r.wave, r.channel, "control") and t.arm == ("control" if t.wave == 1 else "holdout")]
            assert r.control == len(held)
            assert r.delivered <= r.pushed and r.reached <= r.delivered and r.converted <= r.pushed
            assert r.control_converted <= r.control
            if r.uplift is not None:
                assert r.uplift_low <= r.uplift <= r.uplift_high
        assert sum(r.converted for r in results if r.channel == "all" and r.wave == 1) > 0
        history = rows(demo_ctx, "ops/contact_history", month=month)
        assert history and all(h.outcome in ("converted", "not_converted", "undelivered", "no_receipt")
                               for h in history)
    assert all(h.outcome is None for h in rows(demo_ctx, "ops/contact_history", month=DEMO_MONTH))
    assert compared.count("chosen") > compared.count("arms")


def test_nobody_who_replied_td_is_contacted_on_that_channel_again(demo_ctx):
    replies = rows(demo_ctx, "silver/feedback", reply="unsubscribe")
    assert replies, "the simulator planted no unsubscribe reply"
    contacts = rows(demo_ctx, "ops/contact_history")
    for reply in replies:
        # The reply lands with the campaign month M+1; every wave targeted after that ingest leaves the channel out:
        # wave 2 of the reply's own campaign and everything of later months.
        later = [c for c in contacts if c.sub_id == reply.sub_id and c.channel == reply.channel
                 and (c.month >= reply.month or (c.month < reply.month and c.wave > reply.wave
                                                 and c.contact_date >= reply.contact_date))]
        assert later == [], (reply.sub_id, reply.channel, reply.month)


def test_nobody_is_immune_before_three_delivered_unconverted_cycles(demo_ctx):
    # The demo runs three campaign months: a subscriber can have had at most two cycles before the third, so
    # nobody may be immune yet (counting every wave as a round made 41 immune here); rounds count cycles.
    targets = rows(demo_ctx, "gold/scenario_targets")
    assert [t for t in targets if t.reason == "immune"] == []
    contacts = rows(demo_ctx, "ops/contact_history")
    assert {c.round for c in contacts} <= {1, 2, 3}
    for c in contacts:
        before = {h.month for h in contacts if (h.sub_id, h.family) == (c.sub_id, c.family) and h.month < c.month
                  and h.outcome == "not_converted"}
        assert c.round <= len(before) + 1, (c.sub_id, c.family, c.month)
    assert max(c.round for c in contacts) >= 2


def test_channel_preference_is_learnt_from_responses_and_routes_the_next_contacts(demo_ctx):
    tags = {r.sub_id: r.channel_preference for r in demo_ctx.lake.read("gold/subscriber_tags")
            .where(F.col("month") == DEMO_MONTH).select("sub_id", "channel_preference").collect()}
    learnt = {s: c for s, c in tags.items() if c}
    assert learnt, "no subscriber has a learnt channel preference after two campaigns"
    responded = {(r.sub_id, r.channel) for r in rows(demo_ctx, "silver/feedback")
                 if r.delivered and (r.clicked or r.reply == "accept")}
    assert all((s, c) in responded for s, c in learnt.items())
    # The policy routes by the preference first: contacts of subscribers with one use it when it is of the wave's mode.
    modes = {"sms": "active", "outbound": "active", "manager": "active"}
    routed = [t for t in rows(demo_ctx, "gold/scenario_targets", month=DEMO_MONTH)
              if t.decision == "targeted" and t.sub_id in learnt and modes.get(learnt[t.sub_id], "passive") == t.mode]
    assert routed
    share = Counter(t.channel == learnt[t.sub_id] for t in routed)
    assert share[True] >= 0.8 * len(routed), share


def test_wave_two_goes_only_to_wave_one_non_converters_and_keeps_the_control_group(demo_ctx):
    for month in EVALUATED:
        targets = rows(demo_ctx, "gold/scenario_targets", month=month)
        contacts = rows(demo_ctx, "ops/contact_history", month=month)
        converted = {(c.sub_id, c.scenario) for c in contacts if c.wave == 1 and c.outcome == "converted"}
        first = {(t.sub_id, t.scenario): t.arm for t in targets if t.wave == 1}
        second = [t for t in targets if t.wave == 2]
        assert second
        assert all((t.sub_id, t.scenario) not in converted for t in second)
        # Wave 2 goes to wave 1's arms (the contacted, the crowded out and the control group): the control group
        # stays it, and the treated arm's non-converters draw a holdout of their own.
        assert all(first.get((t.sub_id, t.scenario)) in ("treated", "control") for t in second)
        assert all(t.arm in ("control", None) for t in second if first[(t.sub_id, t.scenario)] == "control")
        assert all(t.decision != "targeted" for t in second if first[(t.sub_id, t.scenario)] == "control")
        assert all(first[(t.sub_id, t.scenario)] == "treated" for t in second if t.arm == "holdout")
        assert [c for c in contacts if c.wave == 2]


def test_an_earlier_wave_is_not_targeted_again_once_a_later_one_went_out(demo_ctx):
    from flowops.errors import FlowopsError
    from flowops.steps.target import run_target

    with pytest.raises(FlowopsError, match="wave 2 of 2026-02 has been targeted already"):
        run_target(demo_ctx, "2026-02", 1)
