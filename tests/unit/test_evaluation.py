"""Attribution edge cases on hand-built contacts and orders; the uplift interval's coverage by simulation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F

from flowops.evaluation.attribution import attribute
from flowops.evaluation.uplift import Uplift

D = dt.date
CONTACTS = "sub_id string, scenario string, wave int, channel string, offers array<string>, contact_date date, " \
           "window_end date"
CONTROL = "sub_id string, scenario string, wave int, offers array<string>, window_start date, window_end date"
ORDERS = "sub_id string, order_id string, product_id string, order_time string"


def owed(spark, orders, contacts, control=()):
    # Order times as the order system writes them: local time, read in the pipeline's zone like silver/orders.
    placed = spark.createDataFrame(orders, ORDERS).withColumn("order_time", F.to_timestamp("order_time"))
    out = attribute(placed, spark.createDataFrame(list(contacts), CONTACTS),
                    spark.createDataFrame(list(control), CONTROL))
    return {r.order_id: (r.kind, r.scenario, r.channel) for r in out.collect()}


def at(day: int, hour: int = 12) -> str:
    return f"2026-04-{day:02d} {hour:02d}:00:00"


def test_an_order_inside_the_window_is_the_contacts_and_one_day_after_is_organic(spark):
    contacts = [("a", "data_no_plan", 1, "sms", ["DP_20"], D(2026, 4, 5), D(2026, 4, 9)),
                ("b", "data_no_plan", 1, "sms", ["DP_20"], D(2026, 4, 5), D(2026, 4, 9))]
    orders = [("a", "o1", "DP_20", at(9, 23)),    # the last day of the window, late evening
              ("b", "o2", "DP_20", at(10, 0)),    # one day after the window
              ("a", "o3", "DP_20", at(4))]        # before the contact
    assert owed(spark, orders, contacts) == {"o1": ("campaign", "data_no_plan", "sms"),
                                             "o2": ("organic", None, None), "o3": ("organic", None, None)}


def test_any_product_of_a_contacts_offers_counts(spark):
    contacts = [("a", "low_usage_app_lift", 1, "sms", ["APP_MIGU_VIDEO", "APP_MIGU_READ"], D(2026, 4, 5),
                 D(2026, 4, 12))]
    orders = [("a", "o1", "APP_MIGU_READ", at(7)), ("a", "o2", "APP_MIGU_MUSIC", at(7))]
    assert owed(spark, orders, contacts) == {"o1": ("campaign", "low_usage_app_lift", "sms"),
                                             "o2": ("organic", None, None)}


def test_a_product_not_offered_is_organic_and_a_control_member_converts_for_the_control_group(spark):
    contacts = [("a", "data_no_plan", 1, "sms", ["DP_20"], D(2026, 4, 5), D(2026, 4, 9))]
    control = [("c", "data_no_plan", 1, ["DP_20"], D(2026, 4, 5), D(2026, 4, 9))]
    orders = [("a", "o1", "BST_5", at(6)),        # something else than the offer
              ("c", "o2", "DP_20", at(6)),        # a control member buys the product
              ("z", "o3", "DP_20", at(6))]        # never contacted
    assert owed(spark, orders, contacts, control) == {"o1": ("organic", None, None),
                                                      "o2": ("control", "data_no_plan", None),
                                                      "o3": ("organic", None, None)}


def test_two_contacts_for_the_same_product_count_the_order_once_for_the_latest(spark):
    contacts = [("a", "new_subscriber", 1, "crm_popup", ["DP_20"], D(2026, 4, 1), D(2026, 4, 5)),
                ("a", "new_subscriber", 1, "sms", ["DP_20"], D(2026, 4, 3), D(2026, 4, 5)),
                ("a", "falling_usage_retention", 1, "sms", ["DP_20"], D(2026, 4, 4), D(2026, 4, 10))]
    orders = [("a", "o1", "DP_20", at(2)), ("a", "o2", "DP_20", at(5))]
    out = owed(spark, orders, contacts)
    assert out == {"o1": ("campaign", "new_subscriber", "crm_popup"),
                   "o2": ("campaign", "falling_usage_retention", "sms")}


def test_the_uplift_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    p_treated, p_control, n_treated, n_control = 0.08, 0.05, 400, 100
    covered = 0
    for _ in range(400):
        treated, control = int(rng.binomial(n_treated, p_treated)), int(rng.binomial(n_control, p_control))
        u = Uplift(n_treated, treated, n_control, control)
        low, high = u.interval()
        covered += low <= p_treated - p_control <= high
    assert 0.92 <= covered / 400 <= 0.99


def test_a_zero_effect_interval_covers_zero_and_no_control_gives_no_interval():
    u = Uplift(500, 25, 100, 5)
    assert u.uplift == pytest.approx(0.0) and u.interval()[0] < 0 < u.interval()[1]
    assert Uplift(500, 25, 0, 0).interval() is None
    assert Uplift(400, 40, 100, 5).incremental == pytest.approx(20.0)
