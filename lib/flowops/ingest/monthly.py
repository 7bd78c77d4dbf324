"""The monthly landing files (CRM snapshot, bill lines, orders) into silver, typed and pseudonymised.

Each file is read as numbered lines, so a bad row is quarantined with its file and line number like an
xDR line. The header must be exactly the contract's; a file whose header is not is quarantined whole.
Quarantine rows of monthly files use `dt = YYYY-MM` (the landing month), apart from the usage days.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.context import Context
from flowops.errors import FlowopsError
from flowops.ingest import lines as landed
from flowops.ingest.keys import append_new_keys
from flowops.ingest.pii import mask_fields, normalise_msisdn, pii_key, sub_id
from flowops.ingest.xdr import is_valid_imei
from flowops.landing import monthly_file, parse_month, require_raw
from flowops.runs import FileReconciliation, Run, recorded_run
from flowops.tables import BILLING_MONTHLY, ORDERS, QUARANTINE, SUBSCRIBERS, TableSpec

log = logging.getLogger(__name__)
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


def _number(text: Column) -> Column:
    return text.rlike(r"^-?[0-9]{1,12}(\.[0-9]+)?$")


def _money(text: Column) -> Column:
    """Yuan that fit DECIMAL(12,2) exactly: no silent rounding, no overflow to null."""
    return text.rlike(r"^-?[0-9]{1,10}(\.[0-9]{1,2})?$")


def _date(text: Column) -> Column:
    return F.try_to_date(text, "yyyy-MM-dd")


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
    else:
        checks += [
            (fields["order_id"] == "", "bad_value", "order_id"),
            (F.try_to_timestamp(fields["order_time"], F.lit("yyyy-MM-dd HH:mm:ss")).isNull(), "bad_timestamp",
             "order_time"),
            (fields["product_id"] == "", "bad_value", "product_id"),
            (~fields["action"].isin("order", "cancel"), "bad_value", "action"),
            (~_money(fields["fee_yuan"]), "bad_number", "fee_yuan"),
        ]
    reason, detail = F.lit(None).cast("string"), F.lit(None).cast("string")
    for failed, name, column in reversed(checks):  # the first failing check wins
        reason = F.when(failed, F.lit(name)).otherwise(reason)
        detail = F.when(failed, F.lit(column)).otherwise(detail)
    return reason, detail


def to_silver(source: Source, fields: dict[str, Column], month: str, key: bytes) -> list[Column]:
    """The silver columns of a row, in the table's order (computed for every row, so nothing may throw)."""
    msisdn = normalise_msisdn(fields["msisdn"])
    common = [F.lit(month).alias("month"), sub_id(msisdn, key).alias("sub_id")]
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
    return common + [
        fields["order_id"].alias("order_id"),
        F.try_to_timestamp(fields["order_time"], F.lit("yyyy-MM-dd HH:mm:ss")).alias("order_time"),
        fields["product_id"].alias("product_id"),
        *[F.nullif(fields[c], F.lit("")).alias(c) for c in ("product_type", "channel", "campaign_id")],
        fields["action"].alias("action"), fields["fee_yuan"].try_cast(MONEY).alias("fee_yuan"),
    ]


def parse_rows(lines_df: DataFrame, source: Source, month: str, key: bytes) -> DataFrame:
    """Data lines (header removed) -> `reason`, `detail`, the raw line, `msisdn` and the silver columns."""
    schema = ", ".join(f"`{name}` string" for name in source.header)
    line = F.regexp_replace("value", r"\r$", "")
    parsed = (
        lines_df.withColumn("_n", F.size(F.split(line, FIELD_SPLIT)))
        .withColumn("_row", F.from_csv(line, schema, {"sep": ",", "quote": '"', "escape": '"', "mode": "PERMISSIVE"}))
    )
    fields = {name: F.coalesce(F.trim(F.col(f"_row.`{name}`")), F.lit("")) for name in source.header}
    reason, detail = judge(source, fields, month)
    reason = (F.when(~F.is_valid_utf8("value"), "bad_encoding")
              .when(F.col("_n") != len(source.header), "wrong_field_count").otherwise(reason))
    return parsed.select("source_file", "line_no", "value", reason.alias("reason"), detail.alias("detail"),
                         normalise_msisdn(fields["msisdn"]).alias("msisdn"), *to_silver(source, fields, month, key))


@dataclass
class Landed:
    """What one monthly file became."""

    reconciliation: FileReconciliation
    quarantine: DataFrame | None = None


def ingest_monthly(ctx: Context, raw: str | Path, month: str) -> Run:
    """Land the month's CRM, billing and order files in silver; one run record for the three."""
    parse_month(month)
    raw_root = require_raw(raw).resolve()
    paths = [monthly_file(raw_root, source.name, month) for source in SOURCES]
    key = pii_key(ctx.settings.pii)
    with recorded_run(ctx.lake, "ingest-monthly", {"raw": raw_root, "month": month}) as run:
        checks = landed.check_files(ctx.spark, paths, raw_root)
        quarantine = []
        for source, check in zip(SOURCES, checks, strict=True):
            with run.step(source.name) as step:
                result = _land_source(ctx, run, source, check, month, key)
                run.files.append(result.reconciliation)
                step["accepted"] = result.reconciliation.accepted
                step["quarantined"] = result.reconciliation.quarantined
                quarantine.append(result.quarantine if result.quarantine is not None
                                  else _file_row(ctx, check, month, run.run_id, result.reconciliation.status))
        merged = quarantine[0]
        for frame in quarantine[1:]:
            merged = merged.unionByName(frame)
        run.wrote(QUARANTINE.name, ctx.lake.write(merged, QUARANTINE, mode="overwrite", partitions={"dt": [month]},
                                                  metadata={"flowops.runId": run.run_id}))
        for frame in quarantine:
            frame.unpersist()
        run.rows_in = sum(f.lines_in for f in run.files)
        run.rows_out = sum(f.accepted for f in run.files)
        unbalanced = [f for f in run.files if not f.balanced]
        if unbalanced:
            raise FlowopsError(f"reconciliation failed: {unbalanced}")
    return run


def _land_source(ctx: Context, run: Run, source: Source, check: landed.FileCheck, month: str,
                 key: bytes) -> Landed:
    """Write one source's silver month and return its reconciliation and quarantine rows."""
    if not check.ok:
        log.warning("%s: %s; silver %s keeps its previous %s rows, if any", check.source_file, check.status,
                    source.table.name, month)
        run.count(f"{source.name}.not_landed", 1)
        return Landed(FileReconciliation(check.source_file, check.status, check.lines, 0, check.lines, 0))
    lines = landed.read_lines(ctx.spark, [check]).persist(StorageLevel.MEMORY_AND_DISK)
    header = lines.where("line_no = 1").first()
    found = tuple(header.value.strip().lstrip("\ufeff").split(",")) if header else ()
    if found != source.header:
        # The found "header" may be a data row with phone numbers: log its shape, not its content.
        log.error("%s: the first line (%d fields) is not the header %s; the file is quarantined", check.source_file,
                  len(found), list(source.header))
        lines.unpersist()
        run.count(f"{source.name}.not_landed", 1)
        return Landed(FileReconciliation(check.source_file, "bad_header", check.lines, 0, check.lines, 0))
    rows = parse_rows(lines.where("line_no > 1"), source, month, key).persist(StorageLevel.MEMORY_AND_DISK)
    version = ctx.lake.write(rows.where("reason is null").select(*source.table.schema.fieldNames()), source.table,
                             mode="overwrite", partitions={"month": [month]}, metadata={"flowops.runId": run.run_id})
    run.wrote(source.table.name, version)
    written = ctx.lake.read(source.table.name, partitions={"month": [month]}).count()
    if source is CRM:
        _write_keys(ctx, run, rows.where("reason is null"), month)
    bad = rows.where("reason is not null").select(
        F.lit(month).alias("dt"), F.lit(source.name).alias("source"), "source_file", "line_no", "reason", "detail",
        F.substring(mask_fields(F.make_valid_utf8("value"), FIELD_SPLIT, ",", source.personal,
                                len(source.header)),
                    1, 2000).alias("raw"),
        F.lit(1).cast("long").alias("line_count"), F.lit(run.run_id).alias("run_id")).cache()
    quarantined = bad.count()
    run.count(f"{source.name}.rows", written)
    run.count(f"{source.name}.quarantined", quarantined)
    rows.unpersist()
    lines.unpersist()
    # The header line is accepted: it is the contract, not data.
    return Landed(FileReconciliation(check.source_file, check.status, check.lines, written + 1, quarantined, 0), bad)


def _file_row(ctx: Context, check: landed.FileCheck, month: str, run_id: str, status: str) -> DataFrame:
    detail = check.detail or "header differs from the landing contract"
    return ctx.spark.createDataFrame([(month, check.source_file.split("/", 1)[0], check.source_file, None, status,
                                       detail, None, check.lines, run_id)], QUARANTINE.schema)


def _write_keys(ctx: Context, run: Run, good: DataFrame, month: str) -> None:
    append_new_keys(ctx, run, good.select("sub_id", "msisdn").distinct().select(
        "sub_id", "msisdn", F.lit(f"{month}-01").alias("first_seen"), F.lit("crm").alias("source")))
