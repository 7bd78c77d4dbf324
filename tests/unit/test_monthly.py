"""Monthly landing files: good rows typed and pseudonymised in silver, bad rows quarantined with reasons."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.errors import LandingError
from flowops.ingest.monthly import BILLING, CRM, ORDER_LINES
from flowops.steps.ingest import ingest_monthly
from tests.conftest import ROOT, make_settings

MONTH = "2026-01"
CRM_ROWS = [
    "13800000001,460001234567890,active,2020-05-01,,gotone,student,18-24,Shenzhen,urban,2,AM01,BP_4G38,DP_10,,0,sms;outbound,1,863456789012341",
    "+8613800000002,460001234567891,churned,2019-01-01,2026-01-20,mzone,farmer,35-44,Zhanjiang,rural,0,,BP_EASY8,,,1,,0,",
    '13800000003,460001234567892,active,2021-02-02,,easyown,"other",25-34,Foshan,urban,0,,BP_4G38,,,0,,0,86345678901234',
    "1380000000x,460001234567893,active,2021-02-02,,easyown,other,25-34,Foshan,urban,0,,BP_4G38,,,0,,0,",
    "13800000005,460001234567894,sleeping,2021-02-02,,easyown,other,25-34,Foshan,urban,0,,BP_4G38,,,0,,0,",
    "13800000006,460001234567895,active,2021-02-30,,easyown,other,25-34,Foshan,urban,0,,BP_4G38,,,0,,0,",
    "13800000007,460001234567896,active,2021-02-02,,easyown,other,25-34,Foshan,urban,7,,BP_4G38,,,0,,0,",
    "13800000008,460001234567897,active,2021-02-02,,easyown,other",
    "13800000009,460001234567898,active,2021-02-02,,easyown,other,25-34,Foshan,urban,0,,BP_4G38,,,0,,0,123",
]
CRM_REASONS = ["invalid_msisdn", "bad_value", "bad_date", "bad_value", "wrong_field_count", "invalid_imei"]
BILLING_ROWS = ["2026-01,13800000001,base_plan_fee,套餐月费,1,month,38.00",
                "2026-01,13800000001,data_payperuse,流量费,120.5,MB,34.95",
                "2025-12,13800000001,base_plan_fee,套餐月费,1,month,38.00",
                "2026-01,13800000002,voice_local,本地通话费,ten,min,1.00"]
ORDER_ROWS = ["ORD1,13800000001,2026-01-07 17:04:31,DP_50,data_plan,web,,order,50.00",
              "ORD2,13800000002,2026-01-08 25:00:00,BST_3,booster,app,,order,3.00",
              "ORD3,13800000002,2026-01-09 10:00:00,BST_3,booster,app,CAMP1,refund,3.00"]


def land(raw: Path, source, rows: list[str], header: tuple[str, ...] | None = None, month: str = MONTH) -> None:
    folder = raw / source.name / f"month={month}"
    folder.mkdir(parents=True, exist_ok=True)
    name = {"crm": "subscribers.csv", "billing": "billing.csv", "orders": "orders.csv"}[source.name]
    (folder / name).write_text("\n".join([",".join(header or source.header), *rows]) + "\n", encoding="utf-8")


@pytest.fixture
def ctx(spark, tmp_path):
    return Context(make_settings(tmp_path / "lake"))


def test_good_rows_land_typed_and_bad_rows_are_quarantined(ctx, tmp_path):
    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS)
    land(raw, BILLING, BILLING_ROWS)
    land(raw, ORDER_LINES, ORDER_ROWS)

    run = ingest_monthly(ctx, raw, MONTH)

    subs = ctx.lake.read("silver/subscribers").orderBy("activation_date").collect()
    assert len(subs) == 3
    churned = next(s for s in subs if s.status == "churned")
    assert (str(churned.churn_date), churned.opt_out_all, churned.tac) == ("2026-01-20", True, None)
    student = next(s for s in subs if s.identity == "student")
    assert (student.vip_level, student.opt_out_channels, student.complaints, student.tac) == (
        2, ["sms", "outbound"], 1, "86345678")
    quarantine = ctx.lake.read("bronze/quarantine").where(F.col("dt") == MONTH)
    crm_reasons = [r.reason for r in quarantine.where("source = 'crm'").orderBy("line_no").collect()]
    assert crm_reasons == CRM_REASONS
    assert sorted(r.reason for r in quarantine.where("source = 'billing'").collect()) == ["bad_number", "wrong_month"]
    assert sorted(r.reason for r in quarantine.where("source = 'orders'").collect()) == ["bad_timestamp", "bad_value"]
    assert [r.line_no for r in quarantine.where("source = 'billing'").orderBy("line_no").collect()] == [4, 5]
    bill = ctx.lake.read("silver/billing_monthly").where("item_code = 'data_payperuse'").first()
    assert (bill.quantity, str(bill.amount_yuan)) == (120.5, "34.95")
    assert all(f.balanced for f in run.files) and len(run.files) == 3
    keys = {r.msisdn for r in ctx.lake.read("restricted/subscriber_keys").collect()}
    assert keys == {"13800000001", "13800000002", "13800000003"}
    assert "13800000001" not in " ".join(str(r) for r in ctx.lake.read("silver/subscribers").collect())
    raws = [r.raw for r in quarantine.collect()]
    assert all(not re.search(r"1380000000\d|4600012345678\d\d", raw) for raw in raws)  # raw lines are masked
    assert any(raw.startswith("###########,###############,sleeping,") for raw in raws)  # msisdn, IMSI masked
    assert any(raw.startswith("##########x,") for raw in raws)


def test_a_file_with_the_wrong_header_is_quarantined_whole(ctx, tmp_path):
    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS[:2])
    land(raw, BILLING, BILLING_ROWS[:2], header=("month", "phone", "item", "name", "qty", "unit", "yuan"))
    land(raw, ORDER_LINES, ORDER_ROWS[:1])

    run = ingest_monthly(ctx, raw, MONTH)

    billing = next(f for f in run.files if f.source_file.startswith("billing/"))
    assert (billing.status, billing.lines_in, billing.quarantined, billing.accepted) == ("bad_header", 2, 2, 0)
    row = ctx.lake.read("bronze/quarantine").where("source = 'billing'").first()
    assert (row.reason, row.line_no, row.line_count) == ("bad_header", None, 2)   # its two data rows
    assert "order_id" not in row.detail and "msisdn,item_code" in row.detail      # the header it should have had
    assert not ctx.lake.exists("silver/billing_monthly")


def test_a_missing_monthly_file_names_what_has_landed(ctx, tmp_path):
    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS[:1])
    with pytest.raises(LandingError, match=r"missing billing file for 2026-01: .* \(nothing has landed under"):
        ingest_monthly(ctx, raw, MONTH)


FEEDBACK_ROWS = {
    "sms": ["2026-01-05,13800000003,data_no_plan,1,1,,,1,TD,",          # an unsubscribe reply
            "2026-01-06,13800000001,data_no_plan,1,1,,1,1, kt ,4",        # accepts, satisfied
            "2026-01-06,13800000009,data_no_plan,1,0,,,,,",               # not delivered
            "2025-12-30,13800000001,data_no_plan,1,1,,,,,",               # another month
            "2026-01-07,13800000001,data_no_plan,1,yes,,,,,",             # not a flag
            "2026-01-07,13800000001,Data No Plan,1,1,,,,,"],              # not a scenario id
    "app": ["2026-01-11,13800000001,idle_no_pack,2,1,1,0,,,",
            "2026-01-12,13800000003,idle_no_pack,2,1,1,1,,,9"],            # satisfaction is 1-5
}


def test_channel_receipts_land_with_the_month_reconciled_and_pseudonymised(ctx, tmp_path):
    from flowops.ingest.monthly import FEEDBACK_LINES

    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS)
    land(raw, BILLING, BILLING_ROWS)
    land(raw, ORDER_LINES, ORDER_ROWS)
    folder = raw / "feedback" / f"month={MONTH}"
    folder.mkdir(parents=True)
    for channel, rows in FEEDBACK_ROWS.items():
        (folder / f"{channel}.csv").write_text("\n".join([",".join(FEEDBACK_LINES.header), *rows]) + "\n",
                                               encoding="utf-8")
    (folder / "notes.txt").write_text("not a receipt\n")

    run = ingest_monthly(ctx, raw, MONTH)

    feedback = ctx.lake.read("silver/feedback").orderBy("channel", "contact_date").collect()
    assert [(r.channel, str(r.contact_date), r.delivered, r.clicked, r.reply, r.satisfaction) for r in feedback] == [
        ("app", "2026-01-11", True, False, None, None),
        ("sms", "2026-01-05", True, None, "unsubscribe", None),
        ("sms", "2026-01-06", True, True, "accept", 4),
        ("sms", "2026-01-06", False, None, None, None)]
    assert "13800000001" not in " ".join(str(r) for r in feedback)
    reasons = ctx.lake.read("bronze/quarantine").where("source = 'feedback'").orderBy("source_file", "line_no")
    assert [(r.source_file.rsplit("/", 1)[1], r.line_no, r.reason) for r in reasons.collect()] == [
        ("app.csv", 3, "bad_number"), ("notes.txt", None, "unexpected_file"), ("sms.csv", 5, "wrong_month"),
        ("sms.csv", 6, "bad_value"), ("sms.csv", 7, "bad_value")]
    files = {f.source_file.rsplit("/", 1)[1]: f for f in run.files}
    assert (files["sms.csv"].lines_in, files["sms.csv"].accepted, files["sms.csv"].quarantined) == (6, 3, 3)
    assert (files["app.csv"].lines_in, files["app.csv"].accepted, files["app.csv"].quarantined) == (2, 1, 1)
    assert files["notes.txt"].status == "unexpected_file"
    assert all(f.balanced for f in run.files)
    # The "TD" reply opts 13800000003 out of SMS from then on; 13800000001 keeps the CRM's own opt-outs.
    from flowops.steps.target import read_opt_outs

    ids = {r.msisdn: r.sub_id for r in ctx.lake.read("restricted/subscriber_keys").collect()}
    outs = {r.sub_id: sorted(r.opt_out_channels) for r in read_opt_outs(ctx.lake).collect()}
    assert outs[ids["13800000003"]] == ["sms"] and outs[ids["13800000001"]] == ["outbound", "sms"]


def test_monthly_files_count_their_data_rows_and_check_the_header_apart(ctx, tmp_path, caplog):
    from flowops.ingest.monthly import FEEDBACK_LINES

    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS)            # 9 rows: 3 good
    land(raw, BILLING, BILLING_ROWS)    # 4 rows: 2 good
    land(raw, ORDER_LINES, ORDER_ROWS)  # 3 rows: 1 good
    folder = raw / "feedback" / f"month={MONTH}"
    folder.mkdir(parents=True)
    (folder / "sms.csv").write_text("\n".join([",".join(FEEDBACK_LINES.header), *FEEDBACK_ROWS["sms"][:3]]) + "\n",
                                    encoding="utf-8")
    (folder / "web.csv").write_text(",".join(FEEDBACK_LINES.header) + "\n", encoding="utf-8")   # no contact

    with caplog.at_level(logging.INFO, logger="flowops.runs"):
        run = ingest_monthly(ctx, raw, MONTH)

    expected = {"crm/month=2026-01/subscribers.csv": ("ok", 9, 3, 6, 0),
                "billing/month=2026-01/billing.csv": ("ok", 4, 2, 2, 0),
                "orders/month=2026-01/orders.csv": ("ok", 3, 1, 2, 0),
                "feedback/month=2026-01/sms.csv": ("ok", 3, 3, 0, 0),
                "feedback/month=2026-01/web.csv": ("ok", 0, 0, 0, 0)}
    assert {f.source_file: (f.status, f.lines_in, f.accepted, f.quarantined, f.duplicates)
            for f in run.files} == expected
    assert (run.rows_in, run.rows_out) == (19, 9)
    recorded = ctx.lake.read("ops/runs").where(F.col("run_id") == run.run_id).first()
    assert {f.source_file: (f.status, f.lines_in, f.accepted, f.quarantined, f.duplicates)
            for f in recorded.files} == expected
    assert (recorded.rows_in, recorded.rows_out) == (19, 9)
    assert ctx.lake.count("silver/feedback") == 3 and ctx.lake.count("silver/orders") == 1
    for line in ("ingest-monthly crm: accepted=3 quarantined=6", "ingest-monthly orders: accepted=1 quarantined=2",
                 "ingest-monthly feedback: files=2 accepted=3"):
        assert line in caplog.text


def readme_orders_example() -> list[str]:
    """The lines of the example orders.csv in the README's orders section (header first)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^### Orders.*?$(.*?)(?=^#+ )", text, re.MULTILINE | re.DOTALL)
    assert section, "README has no orders section"
    block = re.search(r"```\n(order_id,.*?)```", section.group(1), re.DOTALL)
    assert block, "the orders section shows no example orders.csv"
    return block.group(1).splitlines()


def test_an_orders_file_written_from_the_readme_lands_with_nothing_quarantined(ctx, tmp_path):
    header, *rows = readme_orders_example()
    assert tuple(header.split(",")) == ORDER_LINES.header and len(rows) >= 3
    month = rows[0].split(",")[2][:7]
    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS[:1], month=month)
    land(raw, BILLING, [BILLING_ROWS[0].replace(MONTH, month)], month=month)
    land(raw, ORDER_LINES, rows, month=month)

    run = ingest_monthly(ctx, raw, month)

    orders = next(f for f in run.files if f.source_file.startswith("orders/"))
    assert (orders.status, orders.lines_in, orders.accepted, orders.quarantined) == ("ok", len(rows), len(rows), 0)
    assert ctx.lake.read("bronze/quarantine").where("source = 'orders'").count() == 0
    landed = ctx.lake.read("silver/orders").orderBy("order_id").collect()
    assert [r.order_id for r in landed] == sorted(row.split(",")[0] for row in rows)
    assert {r.action for r in landed} == {"order", "cancel"}   # the example shows both
    assert all(r.sub_id and r.order_time and r.fee_yuan is not None for r in landed)


BAD_ORDER_ROWS = [
    "ORD1,13800000001,2026-01-07 17:04:31,DP_50,data_plan,web,,order,50.00",           # 2: good
    ",13800000001,2026-01-07 17:05:00,DP_50,data_plan,web,,order,50.00",              # 3: no order id
    "ORD3,1380000000,2026-01-07 17:06:00,DP_50,data_plan,web,,order,50.00",           # 4: ten digits
    "ORD4,13800000001,2026/01/07 10:00:00,BST_3,booster,app,,order,3.00",             # 5: not the time format
    "ORD5,13800000001,2025-12-31 23:59:59,BST_3,booster,app,,order,3.00",             # 6: December's order
    "ORD6,13800000001,2026-01-08 10:00:00,,booster,app,,order,3.00",                  # 7: no product
    "ORD7,13800000001,2026-01-08 11:00:00,BST_3,booster,app,,refund,3.00",            # 8: not an action
    "ORD8,13800000001,2026-01-08 12:00:00,BST_3,booster,app,,order,3.005",            # 9: not yuan
    "ORD9,13800000001,2026-01-08 13:00:00,BST_3",                                     # 10: four fields
    "ORD1,13800000002,2026-01-09 10:00:00,BST_3,booster,app,,order,3.00",             # 11: ORD1 again
    "ORD10,13800000002,2026-01-09 11:00:00,BST_3,booster,app,CAMP1,cancel,0.00",      # 12: good cancellation
    "ORD4,13800000002,2026-01-10 09:00:00,BST_3,booster,app,,order,3.00",             # 13: first good ORD4
]


def test_a_malformed_orders_file_is_quarantined_row_by_row_with_reasons(ctx, tmp_path):
    raw = tmp_path / "raw"
    land(raw, CRM, CRM_ROWS[:1])
    land(raw, BILLING, BILLING_ROWS[:1])
    land(raw, ORDER_LINES, BAD_ORDER_ROWS)

    run = ingest_monthly(ctx, raw, MONTH)

    quarantine = ctx.lake.read("bronze/quarantine").where("source = 'orders'").orderBy("line_no").collect()
    assert [(r.line_no, r.reason, r.detail) for r in quarantine] == [
        (3, "bad_value", "order_id"), (4, "invalid_msisdn", "msisdn"), (5, "bad_timestamp", "order_time"),
        (6, "wrong_month", "order_time"), (7, "bad_value", "product_id"), (8, "bad_value", "action"),
        (9, "bad_number", "fee_yuan"), (10, "wrong_field_count", None), (11, "duplicate_order_id", "order_id")]
    assert all(not re.search(r"1380000000\d", r.raw) for r in quarantine)
    landed = ctx.lake.read("silver/orders").orderBy("order_time").collect()
    assert [(r.order_id, r.action, str(r.fee_yuan)) for r in landed] == [
        ("ORD1", "order", "50.00"), ("ORD10", "cancel", "0.00"), ("ORD4", "order", "3.00")]
    orders = next(f for f in run.files if f.source_file.startswith("orders/"))
    assert (orders.lines_in, orders.accepted, orders.quarantined) == (12, 3, 9) and orders.balanced
