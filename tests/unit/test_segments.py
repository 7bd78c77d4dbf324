"""Stage assignment on a tiny tag frame: first matching rule wins, nulls fall through, the default takes the rest."""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from flowops.errors import ConfigError
from flowops.segments import Rule, Segments, assign_stages


def segments(*rules: Rule, flow: tuple[Rule, ...] = ()) -> Segments:
    return Segments(rules=rules, default=Rule("steady_usage", "retain", "", ("dou_mb",)), flow_rules=flow,
                    flow_default="steady", stage_text={}, source="segments.yml")


def tags_df(spark):
    return spark.createDataFrame(
        [("2026-03", "s1", 0.9, 500.0), ("2026-03", "s2", 0.1, 40.0), ("2026-03", "s3", None, 0.0),
         ("2026-03", "s4", 0.2, None)],
        "month string, sub_id string, churn_risk_score double, dou_mb double")


RISK = Rule("high_churn_risk", "retain", "churn_risk_score >= 0.5", ("churn_risk_score",))
LOW = Rule("low_usage", "lift", "dou_mb > 0 AND dou_mb < 100", ("dou_mb",))
ZERO = Rule("zero_usage", "wake", "dou_mb = 0", ("dou_mb",))
ANY_USE = Rule("any_usage", "order", "dou_mb >= 0", ("dou_mb",))


def test_the_first_matching_rule_wins_and_keeps_what_it_read(spark):
    out = assign_stages(tags_df(spark), segments(RISK, LOW, ZERO, ANY_USE,
                                                 flow=(Rule("plan_low_usage", "plan_low_usage", "dou_mb < 100", ()),)))
    expected = spark.createDataFrame([
        ("2026-03", "s1", "retain", "high_churn_risk", {"churn_risk_score": "0.9"}, "steady"),
        ("2026-03", "s2", "lift", "low_usage", {"dou_mb": "40.0"}, "plan_low_usage"),
        # A null score is not >= 0.5: the row falls through to the next rules.
        ("2026-03", "s3", "wake", "zero_usage", {"dou_mb": "0.0"}, "plan_low_usage"),
        # Null usage matches no usage rule: the default, with its evidence.
        ("2026-03", "s4", "retain", "steady_usage", {"dou_mb": None}, "steady"),
    ], out.schema)
    assertDataFrameEqual(out, expected, checkRowOrder=False)


def test_rule_order_decides_between_rules_that_both_hold(spark):
    out = assign_stages(tags_df(spark), segments(ANY_USE, LOW, ZERO))
    assert {r.sub_id: r.reason for r in out.collect()} == {
        "s1": "any_usage", "s2": "any_usage", "s3": "any_usage", "s4": "steady_usage"}


@pytest.mark.parametrize(("when", "message"), [
    ("dou_mb + 1", r"segments\.yml: rule bad: the condition gives double, not a boolean"),
    ("dou_mb >", r"segments\.yml: rule bad: "),
])
def test_a_condition_that_is_not_a_boolean_is_a_clear_error(spark, when, message):
    with pytest.raises(ConfigError, match=message):
        assign_stages(tags_df(spark), segments(Rule("bad", "lift", when, ("dou_mb",))))
