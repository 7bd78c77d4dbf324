"""What `flowops target` reads from the lake's history: immunity per offer family and the experiments the estimates
learn from, on hand-written ops/contact_history and gold/campaign_members tables."""

from __future__ import annotations

import datetime as dt

from flowops.definitions import Definitions
from flowops.lake.tables import CAMPAIGN_MEMBERS, CONTACT_HISTORY
from flowops.scenarios.estimates import Chosen
from flowops.steps.target import read_cells, read_immunity
from tests.conftest import CONF


def contact(sub: str, month: str, wave: int, product: str, family: str, outcome: str | None) -> tuple:
    day = dt.date(int(month[:4]), int(month[5:]), 5)
    return (month, sub, "some_scenario", wave, "active", "sms", product, [product], family, day, day, day, 1,
            False, 1.0, 0.05, 0.0, False, "run", outcome)


def test_immunity_counts_delivered_unconverted_cycles_of_an_offer_family_since_the_last_conversion(lake):
    rows = [
        # Three months with a delivered data-plan offer and no order, tiers changing: immune to data plans.
        contact("a", "2026-01", 1, "DP_10", "data_plan", "not_converted"),
        contact("a", "2026-02", 1, "DP_20", "data_plan", "not_converted"),
        contact("a", "2026-02", 2, "DP_20", "data_plan", "not_converted"),   # the same cycle as wave 1
        contact("a", "2026-03", 1, "DP_30", "data_plan", "not_converted"),
        # An undelivered month and one without a receipt do not count: two cycles.
        contact("b", "2026-01", 1, "DP_10", "data_plan", "undelivered"),
        contact("b", "2026-02", 1, "DP_10", "data_plan", "not_converted"),
        contact("b", "2026-03", 1, "DP_10", "data_plan", "no_receipt"),
        contact("b", "2026-03", 2, "DP_10", "data_plan", "not_converted"),
        # A conversion starts the count again.
        contact("c", "2026-01", 1, "DP_10", "data_plan", "not_converted"),
        contact("c", "2026-02", 1, "DP_10", "data_plan", "converted"),
        contact("c", "2026-03", 1, "DP_10", "data_plan", "not_converted"),
        # Another family is counted on its own; this month's contacts (and unevaluated ones) not at all.
        contact("a", "2026-03", 1, "BST_5", "booster", "not_converted"),
        contact("a", "2026-04", 1, "DP_5", "data_plan", "not_converted"),
        contact("d", "2026-03", 1, "DP_5", "data_plan", None),
    ]
    lake.write(lake.spark.createDataFrame(rows, CONTACT_HISTORY.schema), CONTACT_HISTORY, mode="overwrite")

    got = {(r.sub_id, r.family): r.rounds for r in read_immunity(lake, "2026-04", Definitions.load(CONF)).collect()}

    assert got == {("a", "data_plan"): 3, ("b", "data_plan"): 2, ("c", "data_plan"): 1, ("a", "booster"): 1}


def test_the_estimates_learn_from_randomised_comparisons_only(lake):
    def member(sub, wave, arm, contacted, channel, converted, month="2026-02", on=None, would=None):
        would = contacted if would is None else would
        return (month, "2026-03", sub, "data_no_plan", wave, arm, contacted, would, channel,
                on if contacted else None, True, converted, "run")

    rows = [member("a", 1, "treated", True, "sms", True), member("b", 1, "treated", True, "sms", False),
            member("c", 1, "treated", False, "sms", True),      # crowded out: still the treated arm, not contacted
            member("d", 1, "treated", True, "sms", False, on="app"),   # intended for SMS, fell back: SMS's cell
            member("x", 1, "control", False, "sms", True, would=True),   # would have been contacted
            member("y", 1, "control", False, "sms", False),              # would not
            member("b", 2, "treated", True, "web", False), member("h", 2, "holdout", False, "web", True, would=True),
            member("x", 2, "control", False, "web", False),     # wave 1's control group: not wave 2's comparison
            member("z", 1, "treated", True, "sms", True, month="2026-03")]   # this month: not yet
    lake.write(lake.spark.createDataFrame(rows, CAMPAIGN_MEMBERS.schema), CAMPAIGN_MEMBERS, mode="overwrite")

    cells = {(c.scenario, c.channel): (c.treated, c.treated_converted, c.control, c.control_converted, c.contacted,
                                       c.chosen) for c in read_cells(lake, "2026-03")}

    # Whole arms by the channel intended before the allocation, with how many of the treated arm were contacted, and
    # the members the allocation chose (or would have, in the held arm).
    assert cells == {("data_no_plan", "sms"): (4, 2, 2, 1, 3, Chosen(3, 1, 1, 1)),
                     ("data_no_plan", "web"): (1, 0, 1, 1, 1, Chosen(1, 0, 1, 1))}
