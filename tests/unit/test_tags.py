"""Tags per family on tiny hand-built silver tables, expected values written out.

Five subscribers for 2026-03 (window 2025-12 .. 2026-03):
- sub_a: six years on the network, 4G88 plan (1 GB); usage 400 MB (Jan), 200 MB (Feb), 100 MB (Mar: 60 MB video
  busy + 20 MB video idle + 20 MB social); voice 200 -> 200 -> 100 minutes; two handsets in March.
- sub_b: activated 2026-03-20, voice-only plan, no usage, no bill line yet.
- sub_c: feature phone, voice-only plan, no data ever, 50 minutes a month, 2 complaints in March.
- sub_d: nulls: no identity, city or VIP level in CRM, an unknown TAC, no bill line at all; 350 MB of
  unidentified traffic on a 300 MB plan; opted out of outbound calls in the CRM, and of SMS by a reply in February.
- sub_e: churned on 2026-03-10.
- sub_f: churned on 2026-02-15, still listed in March's CRM snapshot.
"""

from __future__ import annotations

import datetime as dt
import shutil
import textwrap
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from flowops.ingest.terminals import load_reference, reference_df
from flowops.lake.tables import BILLING_MONTHLY, DEVICE_DAILY, FEEDBACK, ORDERS, SUBSCRIBERS, USAGE_DAILY
from flowops.products import load_catalogue, products_df
from flowops.steps.tags import compute_tags
from flowops.tags.base import Sources
from flowops.tags.definitions import load_library
from tests.conftest import CONF

MB = 1048576
MONTH = "2026-03"


def frame(spark, spec, rows):
    names = spec.schema.fieldNames()
    unknown = {k for r in rows for k in r} - set(names)
    assert not unknown, unknown
    return spark.createDataFrame([tuple(r.get(n) for n in names) for r in rows], spec.schema)


def crm(sub, month, **kw):
    row = dict(month=month, sub_id=sub, status="active", activation_date=dt.date(2020, 1, 15), brand="gotone",
               identity="white_collar", age_band="30-39", city="Hangzhou", region_type="urban", vip_level=1,
               account_manager_id="AM01001", base_plan_id="BP_4G88", opt_out_all=False, opt_out_channels=[],
               complaints=0, tac="35678781")
    row.update(kw)
    return row


def use(sub, day, mb, app="wechat", category="social", idle=False, rat="4G"):
    b = int(mb * MB)
    return dict(dt=day, sub_id=sub, app_id=app, app_category=category, rat=rat, is_idle=idle, ul_bytes=b // 10,
                dl_bytes=b - b // 10, total_bytes=b, records=3, duration_s=60.0)


def bill(sub, month, item, qty, amount):
    return dict(month=month, sub_id=sub, item_code=item, item_name=item, quantity=float(qty), unit="x",
                amount_yuan=Decimal(str(amount)))


def device(sub, day, tac, brand, model, mb, source="tac"):
    return dict(dt=day, sub_id=sub, tac=tac, brand=brand, model=model, os="iOS" if brand == "Apple" else None,
                network_gen="5G" if brand == "Apple" else None, is_smart=True if brand == "Apple" else None,
                price_tier="high" if brand == "Apple" else None, terminal_source=source, records=3,
                total_bytes=int(mb * MB))


@pytest.fixture(scope="module")
def sources(spark):
    d_profile = dict(identity=None, city=None, vip_level=None, account_manager_id=None, base_plan_id="BP_4G38",
                     activation_date=dt.date(2025, 12, 1), tac="99999999")
    e_profile = dict(activation_date=dt.date(2025, 1, 1), base_plan_id="BP_4G58", vip_level=0, account_manager_id="")
    c_profile = dict(activation_date=dt.date(2024, 6, 1), base_plan_id="BP_EASY8", tac="35050700", vip_level=0,
                     identity="farmer", brand="easyown", account_manager_id="")
    subscribers = [
        crm("sub_a", "2026-01"), crm("sub_a", "2026-02"), crm("sub_a", MONTH, tac="35527206"),
        crm("sub_b", MONTH, activation_date=dt.date(2026, 3, 20), base_plan_id="BP_EASY4G18", tac="86122865",
            identity="student", vip_level=0, account_manager_id=None),
        *[crm("sub_c", m, **c_profile) for m in ("2026-01", "2026-02")],
        crm("sub_c", MONTH, complaints=2, **c_profile),
        crm("sub_d", "2026-02", **d_profile), crm("sub_d", MONTH, opt_out_channels=["outbound"], **d_profile),
        *[crm("sub_e", m, **e_profile) for m in ("2026-01", "2026-02")],
        crm("sub_e", MONTH, status="churned", churn_date=dt.date(2026, 3, 10), **e_profile),
        # Left in February but still listed in March's snapshot: not a subscriber of March.
        crm("sub_f", "2026-02", **e_profile),
        crm("sub_f", MONTH, status="churned", churn_date=dt.date(2026, 2, 15), **e_profile),
    ]
    usage = [
        use("sub_a", "2026-01-10", 400), use("sub_a", "2026-02-10", 200),
        use("sub_a", "2026-03-01", 60, "iqiyi", "video", rat="5G"),
        use("sub_a", "2026-03-02", 20, "iqiyi", "video", idle=True), use("sub_a", "2026-03-02", 20),
        # A RAT outside the landing contract (2G..5G) says nothing of the generation: it is not "above" 3G.
        use("sub_d", "2026-03-05", 350, "unknown", "unknown", rat="LTE"),
        use("sub_d", "2026-03-05", 0, "unknown", "unknown", rat="3G"),
        use("sub_e", "2026-02-03", 500, rat="5G"), use("sub_e", "2026-03-03", 100),
    ]
    devices = [device("sub_a", "2026-03-01", "35527206", "Apple", "iPhone 13", 80),
               device("sub_a", "2026-03-02", "35678781", "Apple", "iPhone 11", 20),
               device("sub_d", "2026-03-05", "99999999", None, None, 350, source="unknown"),
               device("sub_e", "2026-03-03", "35527206", "Apple", "iPhone 13", 100)]
    billing = [
        *[bill("sub_a", m, "base_plan_fee", 1, 88) for m in ("2026-01", "2026-02", MONTH)],
        bill("sub_a", "2026-01", "voice_local", 200, 0), bill("sub_a", "2026-02", "voice_local", 200, 0),
        bill("sub_a", MONTH, "voice_local", 100, 0),
        bill("sub_a", "2026-02", "vas", 1, 10), bill("sub_a", MONTH, "vas", 1, 10),
        *[bill("sub_c", m, "base_plan_fee", 1, 8) for m in ("2026-01", "2026-02", MONTH)],
        *[bill("sub_c", m, "voice_local", 50, 7.5) for m in ("2026-01", "2026-02", MONTH)],
        bill("sub_e", "2026-02", "base_plan_fee", 1, 58), bill("sub_e", "2026-02", "voice_roaming", 300, 0),
        bill("sub_e", MONTH, "base_plan_fee", 1, 18.71), bill("sub_e", MONTH, "voice_roaming", 60, 0),
        bill("sub_e", MONTH, "data_payperuse", 10.5, 3.05),
    ]
    orders = [dict(month=MONTH, sub_id="sub_a", order_id="O1", order_time=dt.datetime(2026, 3, 9, 10), action="order",
                   product_id="BST_5", product_type="booster", channel="app", fee_yuan=Decimal("5.00"))]
    def receipt(sub_id, month, channel, delivered=True, clicked=None, reply=None):
        return dict(month=month, sub_id=sub_id, channel=channel, scenario="data_no_plan", wave=1,
                    contact_date=dt.date(*map(int, month.split("-")), 5), delivered=delivered, clicked=clicked,
                    reply=reply)

    feedback = [
        # sub_a: SMS accepted once in four deliveries (0.25), the app hall clicked once in one showing (1.0): app.
        *[receipt("sub_a", "2026-02", "sms", reply="accept" if i == 0 else None) for i in range(4)],
        receipt("sub_a", MONTH, "app", clicked=True),
        # sub_c: responded on SMS, then unsubscribed from it; the web hall showing went unanswered: none.
        receipt("sub_c", "2026-02", "sms", clicked=True), receipt("sub_c", MONTH, "sms", reply="unsubscribe"),
        receipt("sub_c", MONTH, "web", clicked=False),
        # sub_e: an outbound call accepted but never connected is not a response; one connected and accepted is.
        receipt("sub_e", MONTH, "outbound", delivered=False, clicked=True),
        receipt("sub_e", "2026-01", "outbound", clicked=True),
        # sub_d: unsubscribed from SMS by reply in February (targeting never uses SMS for them again); no response.
        receipt("sub_d", "2026-02", "sms", reply="unsubscribe"),
    ]
    return Sources(
        subscribers=frame(spark, SUBSCRIBERS, subscribers),
        feedback=frame(spark, FEEDBACK, feedback), usage=frame(spark, USAGE_DAILY, usage),
        devices=frame(spark, DEVICE_DAILY, devices), billing=frame(spark, BILLING_MONTHLY, billing),
        orders=frame(spark, ORDERS, orders), products=products_df(spark, load_catalogue(CONF)),
        terminals=reference_df(spark, load_reference(CONF)),
        usage_months=frozenset({"2026-01", "2026-02", MONTH}), billing_months=frozenset({"2026-01", "2026-02", MONTH}),
    )


@pytest.fixture(scope="module")
def tags(sources):
    return compute_tags(sources, load_library(CONF), MONTH).cache()


def expect(tags_df, columns, rows):
    """Compare the named tag columns of every subscriber with rows written out as (sub_id, *values)."""
    actual = tags_df.select("sub_id", *columns)
    expected = actual.sparkSession.createDataFrame(rows, actual.schema)
    assertDataFrameEqual(actual, expected, checkRowOrder=False, rtol=1e-6)


def test_one_row_per_subscriber_of_the_month(tags):
    assert sorted(r.sub_id for r in tags.select("sub_id").collect()) == ["sub_a", "sub_b", "sub_c", "sub_d", "sub_e"]
    assert tags.where(F.col("month") != MONTH).count() == 0


def test_identity_and_region(tags):
    expect(tags, ["identity", "customer_brand", "status", "churned_this_month", "vip_level", "has_account_manager",
                  "city", "region_type"], [
        ("sub_a", "white_collar", "gotone", "active", False, 1, True, "Hangzhou", "urban"),
        ("sub_b", "student", "gotone", "active", False, 0, False, "Hangzhou", "urban"),
        ("sub_c", "farmer", "easyown", "active", False, 0, False, "Hangzhou", "urban"),
        ("sub_d", None, "gotone", "active", False, 0, False, None, "urban"),
        ("sub_e", "white_collar", "gotone", "churned", True, 0, False, "Hangzhou", "urban"),
    ])


def test_lifecycle(tags):
    expect(tags, ["tenure_months", "is_new_subscriber", "lifecycle"], [
        ("sub_a", 74, False, "leaving"),     # voice and data dropped: churn risk 0.7
        ("sub_b", 0, True, "new"),
        ("sub_c", 21, False, "mature"),      # no data history to trend
        ("sub_d", 3, False, "growth"),
        ("sub_e", 14, False, "leaving"),     # churned
    ])


def test_terminal(tags):
    expect(tags, ["terminal_brand", "terminal_model", "is_smartphone", "terminal_network_gen", "terminal_source",
                  "handset_changed"], [
        ("sub_a", "Apple", "iPhone 13", True, "5G", "tac", True),       # most bytes on the 13; the 11 was seen too
        ("sub_b", "Redmi", "Redmi 9A", True, "4G", "crm_tac", False),   # no usage: the CRM TAC in the reference
        ("sub_c", "Nokia", "Nokia 105", False, "2G", "crm_tac", False),
        ("sub_d", None, None, None, None, "unknown", False),
        ("sub_e", "Apple", "iPhone 13", True, "5G", "tac", False),
    ])


def test_consumption(tags):
    expect(tags, ["dou_mb", "dou_band", "arpu_yuan", "arpu_band", "mou", "allowance_mb", "allowance_used_pct",
                  "months_over_allowance", "payperuse_yuan", "idle_mb", "idle_share", "has_idle_pack", "orders"], [
        ("sub_a", 100.0, "100-500MB", 98.0, "60-100", 100.0, 1024.0, 100 / 1024 * 100, 0, 0.0, 20.0,
         0.2, False, 1),
        ("sub_b", 0.0, "0", 0.0, "<30", 0.0, 0.0, None, 0, 0.0, 0.0, None, False, 0),   # in CRM, no bill line
        ("sub_c", 0.0, "0", 15.5, "<30", 50.0, 0.0, None, 0, 0.0, 0.0, None, False, 0),
        ("sub_d", 350.0, "100-500MB", 0.0, "<30", 0.0, 300.0, 350 / 3, 1, 0.0, 0.0, 0.0, False, 0),
        ("sub_e", 100.0, "100-500MB", 21.76, "<30", 60.0, 500.0, 20.0, 0, 3.05, 0.0, 0.0, False, 0),
    ])


def test_behaviour(tags):
    expect(tags, ["active_days", "apps_used", "top_apps", "top_categories", "video_mb", "video_share", "social_mb",
                  "unknown_mb", "max_rat"], [
        ("sub_a", 2, 2, ["iqiyi", "wechat"], ["video", "social"], 80.0, 0.8, 20.0, 0.0, "5G"),
        ("sub_b", 0, 0, [], [], 0.0, None, 0.0, 0.0, None),
        ("sub_c", 0, 0, [], [], 0.0, None, 0.0, 0.0, None),
        ("sub_d", 1, 0, [], ["unknown"], 0.0, 0.0, 0.0, 350.0, "3G"),
        ("sub_e", 1, 1, ["wechat"], ["social"], 0.0, 0.0, 100.0, 0.0, "4G"),   # February's 5G is not this month
    ])


def test_trend(tags):
    expect(tags, ["dou_prev3_avg", "dou_change", "dou_trend", "mou_prev3_avg", "arpu_prev3_avg", "arpu_trend"], [
        ("sub_a", 300.0, 100 / 300 - 1, "falling", 200.0, 93.0, "steady"),   # Jan bill 88, Feb 98
        ("sub_b", None, None, None, None, None, None),                       # not on the network before
        ("sub_c", 0.0, None, None, 50.0, 15.5, "steady"),                    # zero baseline: no data change
        ("sub_d", 0.0, None, None, 0.0, 0.0, None),                          # billed months without lines: 0
        ("sub_e", 250.0, 100 / 250 - 1, "falling", 150.0, 29.0, "falling"),  # Jan on CRM with no usage / bill
    ])


def test_value_and_complaints(tags):
    expect(tags, ["value_tier", "complaints", "has_complaints"], [
        ("sub_a", "mid", 0, False), ("sub_b", "low", 0, False), ("sub_c", "low", 2, True),
        ("sub_d", "low", 0, False), ("sub_e", "low", 0, False),
    ])


def test_channel_preference_is_the_channel_responded_to_best_and_never_one_unsubscribed_from(tags):
    expect(tags, ["channel_preference"], [
        ("sub_a", "app"), ("sub_b", None), ("sub_c", None), ("sub_d", None), ("sub_e", "outbound"),
    ])


def test_opt_outs_say_what_targeting_respects_the_crm_flags_and_the_unsubscribe_replies(tags):
    expect(tags, ["opt_out_all", "opt_out_channels"], [
        ("sub_a", False, []),
        ("sub_b", False, []),
        ("sub_c", False, ["sms"]),               # replied TD to an SMS this month
        ("sub_d", False, ["outbound", "sms"]),   # the CRM's outbound, and a TD reply in February
        ("sub_e", False, []),
    ])


def test_churn_risk(tags):
    expect(tags, ["churn_signal_voice_drop", "churn_signal_data_drop", "churn_signal_vas_cancelled",
                  "churn_signal_complaints", "churn_signal_short_tenure", "churn_risk_score", "churn_risk_level"], [
        ("sub_a", True, True, False, False, False, 0.7, "high"),
        ("sub_b", False, False, False, False, True, 0.1, "low"),
        ("sub_c", False, False, False, True, False, 0.1, "low"),
        ("sub_d", False, False, False, False, True, 0.1, "low"),
        ("sub_e", True, True, False, False, True, 1.0, "high"),
    ])


def test_a_data_engineer_adds_a_tag_with_yaml_only(sources, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "tags" / "campaign.yml").write_text(textwrap.dedent("""
        group: campaign
        tags:
          - name: heavy_video_user
            description: More than half of the month's data on long video, and at least 50 MB of it.
            type: boolean
            expr: coalesce(video_share > 0.5 AND video_mb >= 50, false)
          - name: video_band
            description: Long-video MB as a band.
            type: string
            function: band
            args: {column: video_mb, edges: [1, 50], labels: [none, light, heavy]}
        """), encoding="utf-8")
    library = load_library(conf)
    assert library["heavy_video_user"].deps == ("video_share", "video_mb")
    expect(compute_tags(sources, library, MONTH), ["heavy_video_user", "video_band"], [
        ("sub_a", True, "heavy"), ("sub_b", False, "none"), ("sub_c", False, "none"), ("sub_d", False, "none"),
        ("sub_e", False, "none"),
    ])
