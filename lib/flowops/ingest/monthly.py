"""The monthly landing files (CRM snapshot, bill lines, orders): their contracts, and their rows judged and
typed for silver.

Each file is read as numbered lines, so a bad row is quarantined with its file and line number like an
xDR line. The first line must be exactly the contract's header; a file whose first line is not is quarantined
whole. The header is checked, not counted: a file's rows are the lines after it, and those are what its
reconciliation adds up. Quarantine rows of monthly files use `dt = YYYY-MM` (the landing month), apart from the
usage days.
(The reads and writes are in `flowops.steps.ingest`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.ingest import xdr
from flowops.ingest.pii import mask_fields
from flowops.lake.tables import BILLING_MONTHLY, FEEDBACK, ORDERS, SUBSCRIBERS, TableSpec

# Commas outside double quotes separate fields (RFC 4180 quoting, no newlines inside fields).
FIELD_SPLIT = r',(?=(?:[^"]*"[^"]*")*[^"]*$)'
MONEY = T.DecimalType(12, 2)


@dataclass(frozen=True)
class Source:
    """One monthly landing file: its contract header and how its rows become a silver table."""

    name: str
    header: tuple[str, ...]
    table: TableSpec

    @property
    def personal(self) -> tuple[int, ...]:
        """Positions of the fields that identify a person (masked in quarantine)."""
        return tuple(i for i, name in enumerate(self.header) if name in ("msisdn", "imsi", "imei"))


CRM = Source("crm", ("msisdn", "imsi", "status", "activation_date", "churn_date", "brand", "identity", "age_band",
                     "city", "region_type", "vip_level", "account_manager_id", "base_plan_id", "data_plan_id",
                     "idle_pack_id", "opt_out_all", "opt_out_channels", "complaints", "imei"), SUBSCRIBERS)
BILLING = Source("billing", ("month", "msisdn", "item_code", "item_name", "quantity", "unit", "amount_yuan"),
                 BILLING_MONTHLY)
ORDER_LINES = Source("orders", ("order_id", "msisdn", "order_time", "product_id", "product_type", "channel",
                                "campaign_id", "action", "fee_yuan"), ORDERS)
SOURCES = (CRM, BILLING, ORDER_LINES)
# Channel receipts: one file per channel (RAW/feedback/month=M/<channel>.csv), all with this header; optional.
FEEDBACK_LINES = Source("feedback", ("contact_date", "msisdn", "scenario", "wave", "delivered", "opened", "clicked",
                                     "replied", "reply_text", "satisfaction"), FEEDBACK)
# What an SMS reply means: 退订/TD (and the like) unsubscribe from that channel; KT/Y/是 accept the offer.
UNSUBSCRIBE_REPLIES = ("TD", "T", "TDX", "退订", "取消", "N0")
ACCEPT_REPLIES = ("KT", "Y", "YES", "是", "1", "办理")


# The field rules are the xDR parse's own (Arrow), applied through vectorised UDFs: one definition of a valid
# msisdn and IMEI for every source.
@F.pandas_udf(T.StringType())
def normalise_msisdn(raw: pd.Series) -> pd.Series:
    """`xdr.normalise_msisdn` for a Spark column."""
    return xdr.normalise_msisdn(pa.array(raw, pa.string())).to_pandas()


@F.pandas_udf(T.BooleanType())
def is_valid_imei(imei: pd.Series) -> pd.Series:
    """`xdr.imei_valid` for a Spark column (null counts as not captured)."""
    return pd.Series(xdr.imei_valid(pa.array(imei.fillna(""), pa.string())))


def _number(text: Column) -> Column:
    return text.rlike(r"^-?[0-9]{1,12}(\.[0-9]+)?$")


def _money(text: Column) -> Column:
    """Yuan that fit DECIMAL(12,2) exactly: no silent rounding, no overflow to null."""
    return text.rlike(r"^-?[0-9]{1,10}(\.[0-9]{1,2})?$")


def _date(text: Column) -> Column:
    return F.try_to_date(text, "yyyy-MM-dd")


def _timestamp(text: Column) -> Column:
    return F.try_to_timestamp(text, F.lit("yyyy-MM-dd HH:mm:ss"))


def judge(source: Source, fields: dict[str, Column], month: str) -> tuple[Column, Column]:
    """(reason, detail) for one row of `source`; reason is null for a good row."""
    msisdn_ok = normalise_msisdn(fields["msisdn"]).isNotNull()
    checks: list[tuple[Column, str, str]] = [(~msisdn_ok, "invalid_msisdn", "msisdn")]
    if source is CRM:
        checks += [
            (~fields["status"].isin("active", "suspended", "churned"), "bad_value", "status"),
            (_date(fields["activation_date"]).isNull(), "bad_date", "activation_date"),
            ((fields["churn_date"] != "") & _date(fields["churn_date"]).isNull(), "bad_date", "churn_date"),
            (~fields["vip_level"].rlike(r"^[0-3]$"), "bad_value", "vip_level"),
            (~fields["opt_out_all"].isin("0", "1", "true", "false"), "bad_value", "opt_out_all"),
            (~fields["complaints"].rlike(r"^[0-9]{1,4}$"), "bad_number", "complaints"),
            (~is_valid_imei(fields["imei"]), "invalid_imei", "imei"),
        ]
    elif source is BILLING:
        checks += [
            (fields["month"] != month, "wrong_month", "month"),
            (fields["item_code"] == "", "bad_value", "item_code"),
            (~_number(fields["quantity"]), "bad_number", "quantity"),
            (~_money(fields["amount_yuan"]), "bad_number", "amount_yuan"),
        ]
    elif source is FEEDBACK_LINES:
        flags = [(~fields[f].isin("", "0", "1"), "bad_value", f) for f in ("opened", "clicked", "replied")]
        contact = _date(fields["contact_date"])
        checks += [
            (contact.isNull(), "bad_date", "contact_date"),
            (F.date_format(contact, "yyyy-MM") != month, "wrong_month", "contact_date"),
            (~fields["scenario"].rlike(r"^[a-z][a-z0-9_]*$"), "bad_value", "scenario"),
            (~fields["wave"].rlike(r"^[1-9][0-9]?$"), "bad_number", "wave"),
            (~fields["delivered"].isin("0", "1"), "bad_value", "delivered"),
            *flags,
            (~fields["satisfaction"].rlike(r"^[1-5]?$"), "bad_number", "satisfaction"),
        ]
    else:
        ordered = _timestamp(fields["order_time"])
        checks += [
            (fields["order_id"] == "", "bad_value", "order_id"),
            (ordered.isNull(), "bad_timestamp", "order_time"),
            # An order belongs to the file of the month it was placed in: the evaluation and the tags read a month's
            # orders from that month's file only, so one in another month's file would be silently missed.
            (F.date_format(ordered, "yyyy-MM") != month, "wrong_month", "order_time"),
            (fields["product_id"] == "", "bad_value", "product_id"),
            (~fields["action"].isin("order", "cancel"), "bad_value", "action"),
            (~_money(fields["fee_yuan"]), "bad_number", "fee_yuan"),
        ]
    reason, detail = F.lit(None).cast("string"), F.lit(None).cast("string")
    for failed, name, column in reversed(checks):  # the first failing check wins
        reason = F.when(failed, F.lit(name)).otherwise(reason)
        detail = F.when(failed, F.lit(column)).otherwise(detail)
    return reason, detail


def to_silver(source: Source, fields: dict[str, Column], month: str,
              pseudonymise: Callable[[Column], Column]) -> list[Column]:
    """The silver columns of a row, in the table's order (computed for every row, so nothing may throw)."""
    msisdn = normalise_msisdn(fields["msisdn"])
    common = [F.lit(month).alias("month"), pseudonymise(msisdn).alias("sub_id")]
    if source is CRM:
        return common + [
            fields["status"].alias("status"),
            _date(fields["activation_date"]).alias("activation_date"),
            _date(F.nullif(fields["churn_date"], F.lit(""))).alias("churn_date"),
            *[F.nullif(fields[c], F.lit("")).alias(c) for c in ("brand", "identity", "age_band", "city",
                                                               "region_type")],
            fields["vip_level"].try_cast("int").alias("vip_level"),
            *[F.nullif(fields[c], F.lit("")).alias(c) for c in ("account_manager_id", "base_plan_id",
                                                               "data_plan_id", "idle_pack_id")],
            fields["opt_out_all"].isin("1", "true").alias("opt_out_all"),
            F.filter(F.split(fields["opt_out_channels"], ";"), lambda c: c != "").alias("opt_out_channels"),
            fields["complaints"].try_cast("int").alias("complaints"),
            F.when(fields["imei"] != "", F.substring(fields["imei"], 1, 8)).alias("tac"),
        ]
    if source is BILLING:
        return common + [
            fields["item_code"].alias("item_code"), F.nullif(fields["item_name"], F.lit("")).alias("item_name"),
            fields["quantity"].try_cast("double").alias("quantity"), F.nullif(fields["unit"], F.lit("")).alias("unit"),
            fields["amount_yuan"].try_cast(MONEY).alias("amount_yuan"),
        ]
    if source is FEEDBACK_LINES:
        reply = F.upper(F.regexp_replace(fields["reply_text"], r"\s+", ""))
        return common + [
            F.regexp_extract(F.col("source_file"), r"([^/]+)\.csv$", 1).alias("channel"),
            fields["scenario"].alias("scenario"), fields["wave"].try_cast("int").alias("wave"),
            _date(fields["contact_date"]).alias("contact_date"),
            *[F.when(fields[f] != "", fields[f] == "1").alias(f) for f in ("delivered", "opened", "clicked",
                                                                             "replied")],
            F.when(reply == "", None).when(reply.isin(*UNSUBSCRIBE_REPLIES), "unsubscribe")
            .when(reply.isin(*ACCEPT_REPLIES), "accept").otherwise("other").alias("reply"),
            F.nullif(fields["satisfaction"], F.lit("")).try_cast("int").alias("satisfaction"),
        ]
    return common + [
        fields["order_id"].alias("order_id"),
        _timestamp(fields["order_time"]).alias("order_time"),
        fields["product_id"].alias("product_id"),
        *[F.nullif(fields[c], F.lit("")).alias(c) for c in ("product_type", "channel", "campaign_id")],
        fields["action"].alias("action"), fields["fee_yuan"].try_cast(MONEY).alias("fee_yuan"),
    ]


def parse_rows(lines_df: DataFrame, source: Source, month: str,
               pseudonymise: Callable[[Column], Column]) -> DataFrame:
    """Data lines (header removed; `value` as bytes or text) -> `reason`, `detail`, the raw line (`value`),
    `msisdn` and the silver columns."""
    schema = ", ".join(f"`{name}` string" for name in source.header)
    line = F.col("value")
    parsed = (
        lines_df.withColumn("value", line.cast("string"))
        .withColumn("_n", F.size(F.split(line, FIELD_SPLIT)))
        .withColumn("_row", F.from_csv(line, schema, {"sep": ",", "quote": '"', "escape": '"', "mode": "PERMISSIVE"}))
    )
    fields = {name: F.coalesce(F.trim(F.col(f"_row.`{name}`")), F.lit("")) for name in source.header}
    reason, detail = judge(source, fields, month)
    is_unreadable = ~F.is_valid_utf8("value") | (F.col("_n") != len(source.header))
    reason = (F.when(~F.is_valid_utf8("value"), "bad_encoding")
              .when(F.col("_n") != len(source.header), "wrong_field_count").otherwise(reason))
    detail = F.when(is_unreadable, F.lit(None).cast("string")).otherwise(detail)  # no field to name
    rows_df = parsed.select("source_file", "line_no", "value", reason.alias("reason"), detail.alias("detail"),
                            normalise_msisdn(fields["msisdn"]).alias("msisdn"),
                            *to_silver(source, fields, month, pseudonymise))
    return rows_df.transform(with_repeated_orders) if source is ORDER_LINES else rows_df


def with_repeated_orders(rows_df: DataFrame) -> DataFrame:
    """An order id is one order: of the rows that pass every other check, the first with an id (by file and line)
    is kept and every later one is rejected as `duplicate_order_id` (a replayed row or a clash, either way not a
    second order). A rejected row does not use up its id."""
    is_good = F.col("reason").isNull()
    first = Window.partitionBy("order_id", is_good).orderBy("source_file", "line_no")
    is_repeated = is_good & (F.row_number().over(first) > 1)
    return rows_df.withColumns({"reason": F.when(is_repeated, F.lit("duplicate_order_id")).otherwise(F.col("reason")),
                                "detail": F.when(is_repeated, F.lit("order_id")).otherwise(F.col("detail"))})


def quarantine_text(source: Source, value: Column) -> Column:
    """A rejected row as it may be kept in bronze/quarantine: valid UTF-8, personal fields masked."""
    return mask_fields(F.make_valid_utf8(value), FIELD_SPLIT, ",", source.personal, len(source.header))
