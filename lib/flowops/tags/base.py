"""Base aggregates: every silver source reduced to one row per subscriber, in one pass each.

Tags are computed over these columns (and over each other), never over silver directly, so adding a tag
adds a column expression, not a scan. Each source is read once for the whole window (the tag month and the
three before it, for trends against the previous 3-month average) and aggregated with conditional sums per
month offset: suffix `_m0` is the tag month, `_m1` the month before, and so on to `_m3`. A history column is
null, not zero, when the subscriber was not in that month's CRM snapshot or the month's usage or bills never
landed, so rules can tell "no history" from "no usage".
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.landing import month_days, previous_months

MB = 1048576.0
HISTORY = 3  # months before the tag month that trends compare with
AGO = {1: "a month earlier", 2: "two months earlier", 3: "three months earlier"}
TOP_APPS = 5
UNKNOWN_APP = "unknown"


@dataclass(frozen=True)
class BaseColumn:
    name: str
    type: str
    source: str
    description: str


def _cols(source: str, *rows: tuple[str, str, str]) -> list[BaseColumn]:
    return [BaseColumn(name, dtype, source, text) for name, dtype, text in rows]


BASE_COLUMNS: tuple[BaseColumn, ...] = (
    *_cols("silver/subscribers",
          ("crm_status", "string", "CRM status at month end: active or churned"),
          ("is_churned", "boolean", "left the network during the tag month (status churned, churn date in it)"),
          ("activation_date", "date", "activation date"),
          ("churn_date", "date", "churn date, null unless churned"),
          ("tenure_days", "int", "days from activation to the end of the tag month"),
          ("activated_this_month", "boolean", "activation date falls in the tag month"),
          ("crm_brand", "string", "customer brand: gotone / mzone / easyown"),
          ("crm_identity", "string", "identity segment from CRM (student, white_collar, ...)"),
          ("crm_age_band", "string", "age band from CRM"),
          ("crm_city", "string", "home city"),
          ("crm_region_type", "string", "urban or rural"),
          ("crm_vip_level", "int", "VIP level 0-3"),
          ("crm_has_account_manager", "boolean", "an account manager is assigned"),
          ("base_plan_id", "string", "base plan held at month end"),
          ("data_plan_id", "string", "data plan held at month end, null if none"),
          ("idle_pack_id", "string", "idle-time pack held at month end, null if none"),
          ("base_plan_generation", "string", "network generation the base plan is for"),
          ("base_allowance_mb", "double", "data allowance bundled in the base plan (MB)"),
          ("data_plan_allowance_mb", "double", "data allowance of the data plan (MB), 0 without one"),
          ("plan_allowance_mb", "double", "base plan + data plan allowance (MB); boosters and idle packs excluded"),
          ("plan_fee_yuan", "double", "monthly fee of base plan + data plan + idle pack"),
          ("crm_complaints", "int", "complaints logged in the month"),
          ("crm_opt_out_all", "boolean", "opted out of all marketing"),
          ("crm_opt_out_channels", "array<string>", "channels the subscriber opted out of"),
          ("crm_tac", "string", "TAC of the IMEI on record at month end"),
          ("crm_tac_m1", "string", "TAC on record a month earlier"),
          *[(f"in_crm_m{i}", "boolean", f"in the CRM snapshot {AGO[i]}") for i in AGO],
          *[(f"plan_allowance_mb_m{i}", "double", f"plan allowance {AGO[i]}") for i in AGO]),
    *_cols("silver/usage_daily",
           ("data_mb_m0", "double", "mobile data used in the tag month (MB = 2^20 bytes)"),
           *[(f"data_mb_m{i}", "double", f"mobile data used {AGO[i]}; null without history") for i in AGO],
           ("idle_mb_m0", "double", "mobile data used in idle time (pipeline.idle_hours) in the tag month"),
           ("records_m0", "long", "usage sessions (xDR records) in the tag month"),
           ("active_days_m0", "int", "days with any mobile data in the tag month"),
           ("apps_used_m0", "int", "distinct identified apps used in the tag month"),
           ("category_mb_m0", "map<string,double>", "MB per app category in the tag month"),
           ("top_apps_m0", "array<string>", f"up to {TOP_APPS} identified apps with the most MB, most first"),
           ("max_rat_m0", "string", "highest radio generation used (2G..5G; other RAT names do not count)")),
    *_cols("silver/device_daily",
           ("handset_tac", "string", "TAC of the handset carrying most bytes in the month (else the CRM TAC)"),
           ("handset_brand", "string", "brand of that handset"),
           ("handset_model", "string", "model of that handset"),
           ("handset_os", "string", "operating system of that handset"),
           ("handset_network_gen", "string", "highest network generation the handset supports"),
           ("handset_is_smart", "boolean", "smartphone (vs feature phone)"),
           ("handset_price_tier", "string", "price tier: low / mid / high / flagship"),
           ("handset_source", "string", "how the handset was identified: tac / user_agent / crm_tac / unknown"),
           ("handsets_seen_m0", "int", "distinct handsets (TACs) seen in usage in the tag month")),
    *_cols("silver/billing_monthly",
           ("arpu_yuan_m0", "double", "bill total of the tag month (yuan); 0 without bill lines"),
           *[(f"arpu_yuan_m{i}", "double", f"bill total {AGO[i]}; null without history") for i in AGO],
           ("mou_local_m0", "double", "local voice minutes"),
           ("mou_longdistance_m0", "double", "domestic long-distance voice minutes"),
           ("mou_roaming_m0", "double", "domestic roaming voice minutes"),
           *[(f"mou_m{i}", "double", f"all voice minutes {AGO[i]}; null without history") for i in AGO],
           ("payperuse_yuan_m0", "double", "pay-per-use data charges (data outside every allowance)"),
           ("payperuse_mb_m0", "double", "MB billed pay-per-use"),
           ("payperuse_months", "int", "months of the window with pay-per-use data charges"),
           ("boosters_m0", "double", "booster packs (加油包) billed in the tag month"),
           ("vas_yuan_m0", "double", "value-added service fees in the tag month"),
           ("vas_yuan_m1", "double", "value-added service fees a month earlier; null without history")),
    *_cols("silver/orders",
           ("orders_m0", "int", "product orders placed in the tag month"),
           ("cancellations_m0", "int", "product cancellations in the tag month"),
           ("data_product_ordered_m0", "boolean", "ordered a data plan, booster or idle pack in the tag month")),
    *_cols("silver/feedback",
           ("contact_preferred_channel", "string",
            "channel the subscriber responds to best (clicks, accepting replies and accepted calls per delivered "
            "contact, over every receipt up to the tag month; channels they unsubscribed from left out); empty "
            "until they have responded to a campaign"),
           ("contact_responses", "int", "campaign contacts the subscriber responded to, up to the tag month"),
           ("reply_opt_out_channels", "array<string>",
            "channels the subscriber unsubscribed from by a reply (TD, 退订, ...), in any month up to the tag month; "
            "targeting never uses them again")),
)
BASE_TYPES: dict[str, str] = {c.name: c.type for c in BASE_COLUMNS}


@dataclass(frozen=True)
class Window:
    """The tag month and the HISTORY months before it."""

    month: str

    @property
    def months(self) -> tuple[str, ...]:
        """The tag month first, then each month before it."""
        return (self.month, *reversed(previous_months(self.month, HISTORY)))

    def offset(self, month: Column) -> Column:
        """0 for the tag month, 1.. for the months before, null outside the window."""
        out = F.when(month == self.months[0], 0)
        for i, name in enumerate(self.months[1:], start=1):
            out = out.when(month == name, i)
        return out

    @property
    def last_day(self) -> str:
        return month_days(self.month)[-1]


@dataclass(frozen=True)
class Sources:
    """Silver rows of the window, as read by the job (each partition once), plus reference tables."""

    subscribers: DataFrame   # silver/subscribers, window months
    usage: DataFrame         # silver/usage_daily, window days
    devices: DataFrame       # silver/device_daily, tag-month days
    billing: DataFrame       # silver/billing_monthly, window months
    orders: DataFrame        # silver/orders, tag month
    feedback: DataFrame      # silver/feedback, every month up to the tag month
    products: DataFrame      # conf/products.yml
    terminals: DataFrame     # the TAC reference
    usage_months: frozenset[str]    # window months whose usage has landed
    billing_months: frozenset[str]  # window months whose bills have landed


def _at(offset: Column, k: int, value: Column) -> Column:
    return F.when(offset == k, value)


def crm_base(subscribers_df: DataFrame, products_df: DataFrame, window: Window) -> DataFrame:
    """One row per subscriber in the tag month's snapshot: profile, plan, allowance, and the months before."""
    plans = F.broadcast(products_df.select("product_id", "allowance_mb", "fee_yuan", "generation"))

    def plan_join(df: DataFrame, key: str, prefix: str) -> DataFrame:
        p = plans.select(F.col("product_id").alias(key), F.col("allowance_mb").alias(f"{prefix}_mb"),
                         F.col("fee_yuan").alias(f"{prefix}_fee"), F.col("generation").alias(f"{prefix}_gen"))
        return df.join(p, on=key, how="left")

    k = window.offset(F.col("month"))
    df = subscribers_df.withColumn("k", k).where(F.col("k").isNotNull())
    for key, prefix in (("base_plan_id", "base"), ("data_plan_id", "data"), ("idle_pack_id", "idle")):
        df = plan_join(df, key, prefix)
    allowance = F.coalesce(F.col("base_mb"), F.lit(0.0)) + F.coalesce(F.col("data_mb"), F.lit(0.0))
    fee = sum((F.coalesce(F.col(f"{p}_fee"), F.lit(0.0)) for p in ("base", "data", "idle")), F.lit(0.0))
    month_end = F.to_date(F.lit(window.last_day))
    current = F.struct(
        F.col("status").alias("crm_status"),
        ((F.col("status") == "churned") & (F.date_format("churn_date", "yyyy-MM") == window.month)).alias("is_churned"),
        F.col("activation_date"),
        F.col("churn_date"), F.datediff(month_end, F.col("activation_date")).alias("tenure_days"),
        (F.date_format("activation_date", "yyyy-MM") == window.month).alias("activated_this_month"),
        F.col("brand").alias("crm_brand"), F.col("identity").alias("crm_identity"),
        F.col("age_band").alias("crm_age_band"), F.col("city").alias("crm_city"),
        F.col("region_type").alias("crm_region_type"), F.col("vip_level").alias("crm_vip_level"),
        (F.coalesce(F.length("account_manager_id"), F.lit(0)) > 0).alias("crm_has_account_manager"),
        F.col("base_plan_id"), F.col("data_plan_id"), F.col("idle_pack_id"),
        F.col("base_gen").alias("base_plan_generation"),
        F.coalesce(F.col("base_mb"), F.lit(0.0)).alias("base_allowance_mb"),
        F.coalesce(F.col("data_mb"), F.lit(0.0)).alias("data_plan_allowance_mb"),
        allowance.alias("plan_allowance_mb"), fee.alias("plan_fee_yuan"),
        F.col("complaints").alias("crm_complaints"), F.col("opt_out_all").alias("crm_opt_out_all"),
        F.col("opt_out_channels").alias("crm_opt_out_channels"), F.col("tac").alias("crm_tac"),
    )
    grouped = df.groupBy("sub_id").agg(
        F.max_by(current, F.col("k") == 0).alias("cur"),
        F.max((F.col("k") == 0).cast("int")).alias("in_m0"),
        F.max(_at(F.col("k"), 1, F.col("tac"))).alias("crm_tac_m1"),
        *[F.max(_at(F.col("k"), i, F.lit(True))).alias(f"in_crm_m{i}") for i in AGO],
        *[F.max(_at(F.col("k"), i, allowance)).alias(f"plan_allowance_mb_m{i}") for i in AGO],
    )
    # A snapshot that still lists subscribers who left before the month does not bring them back.
    month_start = F.to_date(F.lit(f"{window.month}-01"))
    left_before = (F.col("cur.crm_status") == "churned") & (F.col("cur.churn_date") < month_start)
    return (
        grouped.where((F.col("in_m0") == 1) & ~F.coalesce(left_before, F.lit(False)))
        .select("sub_id", "cur.*", "crm_tac_m1",
                *[F.coalesce(f"in_crm_m{i}", F.lit(False)).alias(f"in_crm_m{i}") for i in AGO],
                *[f"plan_allowance_mb_m{i}" for i in AGO])
    )


def usage_base(usage_df: DataFrame, window: Window) -> DataFrame:
    """Data per month, idle data, active days, MB per category and top apps: one scan of usage_daily.

    Two aggregations over the same scan: first per subscriber x month x app (days as a bitmask, so active
    days survive the second level), then per subscriber.
    """
    k = window.offset(F.substring("dt", 1, 7))
    day_bit = F.expr("shiftleft(1L, dayofmonth(to_date(dt)) - 1)")
    # The radio generation as a number ("4G" -> 4): the greatest is the highest generation, which the greatest text is
    # not once a RAT is outside the landing contract (2G..5G; "LTE" > "5G"), and a number's max is a hash
    # aggregation where a string's needs a sort.
    generation = F.when(F.col("rat").rlike("^[1-9]G$"), F.substring("rat", 1, 1).cast("int"))
    per_app = (
        usage_df.withColumn("k", k).where(F.col("k").isNotNull())
        .groupBy("sub_id", "k", "app_id", "app_category")
        .agg(F.sum("total_bytes").alias("bytes"),
             F.sum(F.when(F.col("is_idle"), F.col("total_bytes"))).alias("idle_bytes"),
             F.sum("records").alias("records"), F.bit_or(day_bit).alias("days"), F.max(generation).alias("generation"))
    )
    now = F.col("k") == 0
    is_known = now & (F.col("app_id") != UNKNOWN_APP)
    aggregated = per_app.groupBy("sub_id").agg(
        *[F.sum(_at(F.col("k"), i, F.col("bytes"))).alias(f"bytes_m{i}") for i in range(HISTORY + 1)],
        F.sum(F.when(now, F.col("idle_bytes"))).alias("idle_bytes_m0"),
        F.sum(F.when(now, F.col("records"))).alias("records_m0"),
        F.bit_or(F.when(now, F.col("days"))).alias("days_m0"),
        F.count(F.when(is_known, F.col("app_id"))).alias("apps_used_m0"),
        F.collect_list(F.when(now, F.struct(F.col("app_category").alias("key"), F.col("bytes").alias("bytes"))))
        .alias("categories"),
        F.collect_list(F.when(is_known, F.struct(F.col("bytes").alias("bytes"), F.col("app_id").alias("app"))))
        .alias("apps"),
        F.max(F.when(now, F.col("generation"))).alias("generation_m0"),
    )
    return aggregated.select(
        "sub_id",
        *[(F.col(f"bytes_m{i}") / MB).alias(f"usage_mb_m{i}") for i in range(HISTORY + 1)],
        (F.coalesce(F.col("idle_bytes_m0"), F.lit(0)) / MB).alias("idle_mb_m0"),
        F.col("records_m0"),
        F.coalesce(F.bit_count("days_m0"), F.lit(0)).cast("int").alias("active_days_m0"),
        F.col("apps_used_m0").cast("int").alias("apps_used_m0"),
        _sum_by_key(F.col("categories")).alias("category_mb_m0"),
        F.transform(F.slice(F.sort_array(F.col("apps"), asc=False), 1, TOP_APPS), lambda a: a["app"])
        .alias("top_apps_m0"),
        F.concat(F.col("generation_m0").cast("string"), F.lit("G")).alias("max_rat_m0"),
    )


def _sum_by_key(entries: Column) -> Column:
    """array<struct<key, bytes>> -> map<key, MB>, summing entries that share a key."""
    keys = F.array_sort(F.array_distinct(F.transform(entries, lambda e: e["key"])))
    return F.map_from_arrays(keys, F.transform(keys, lambda key: F.aggregate(
        F.filter(entries, lambda e: e["key"] == key), F.lit(0.0), lambda acc, e: acc + e["bytes"] / MB)))


def device_base(devices_df: DataFrame) -> DataFrame:
    """The month's main handset (most bytes, then most records) and how many handsets were seen."""
    handset = F.struct(*[F.col(c).alias(c) for c in ("tac", "brand", "model", "os", "network_gen", "is_smart",
                                                      "price_tier", "terminal_source")])
    return (
        devices_df.groupBy("sub_id", "tac")
        .agg(F.max_by(handset, F.col("dt")).alias("h"), F.sum("total_bytes").alias("bytes"),
             F.sum("records").alias("records"))
        .groupBy("sub_id")
        .agg(F.max_by(F.col("h"), F.struct("bytes", "records", "tac")).alias("h"),
             F.count("tac").cast("int").alias("handsets_seen_m0"))
        .select("sub_id", "h.*", "handsets_seen_m0")
    )


def billing_base(billing_df: DataFrame, window: Window) -> DataFrame:
    """ARPU, minutes by kind, pay-per-use data, boosters and VAS fees per month: one scan of the bills."""
    k = F.col("k")
    item, amount, qty = F.col("item_code"), F.col("amount_yuan").cast("double"), F.col("quantity")
    is_voice = item.isin("voice_local", "voice_longdistance", "voice_roaming")

    def at(i: int, code: str | None, value: Column) -> Column:
        cond = k == i if code is None else (k == i) & (item == code)
        return F.sum(F.when(cond, value))

    return (
        billing_df.withColumn("k", window.offset(F.col("month"))).where(k.isNotNull())
        .groupBy("sub_id")
        .agg(*[at(i, None, amount).alias(f"bill_m{i}") for i in range(HISTORY + 1)],
             at(0, "voice_local", qty).alias("mou_local_m0"),
             at(0, "voice_longdistance", qty).alias("mou_longdistance_m0"),
             at(0, "voice_roaming", qty).alias("mou_roaming_m0"),
             *[F.sum(F.when((k == i) & is_voice, qty)).alias(f"voice_m{i}") for i in AGO],
             at(0, "data_payperuse", amount).alias("payperuse_yuan_m0"),
             at(0, "data_payperuse", qty).alias("payperuse_mb_m0"),
             F.countDistinct(F.when((item == "data_payperuse") & (amount > 0), k)).cast("int")
             .alias("payperuse_months"),
             at(0, "booster_fee", qty).alias("boosters_m0"),
             at(0, "vas", amount).alias("vas_yuan_m0"),
             at(1, "vas", amount).alias("vas_m1"))
    )


def orders_base(orders_df: DataFrame) -> DataFrame:
    """Orders and cancellations of the tag month."""
    is_order = F.col("action") == "order"
    is_data = is_order & F.col("product_type").isin("data_plan", "booster", "idle_pack")
    return orders_df.groupBy("sub_id").agg(
        F.count(F.when(is_order, 1)).cast("int").alias("orders_m0"),
        F.count(F.when(~is_order, 1)).cast("int").alias("cancellations_m0"),
        F.max(is_data).alias("data_product_ordered_m0"),
    )


def feedback_base(feedback: DataFrame) -> DataFrame:
    """The channel each subscriber responds to best: most responses per delivered contact, then most responses,
    then the latest response; a channel they unsubscribed from never counts. And the channels they unsubscribed
    from by a reply (any receipt, delivered or not, as targeting's opt-outs read them)."""
    is_delivered = F.coalesce(F.col("delivered"), F.lit(False))
    responded = is_delivered & (F.coalesce(F.col("clicked"), F.lit(False))
                                | F.coalesce(F.col("reply") == "accept", F.lit(False)))
    per_channel = feedback.groupBy("sub_id", "channel").agg(
        F.count(F.when(is_delivered, 1)).alias("delivered"), F.count(F.when(responded, 1)).alias("responses"),
        F.max(F.when(responded, F.col("contact_date"))).alias("last_response"),
        F.bool_or(F.coalesce(F.col("reply") == "unsubscribe", F.lit(False))).alias("unsubscribed"))
    is_usable = (F.col("responses") > 0) & ~F.col("unsubscribed")
    ranked = F.struct((F.col("responses") / F.col("delivered")).alias("rate"), "responses", "last_response",
                      F.col("channel"))
    return (per_channel.groupBy("sub_id")
            .agg(F.max(F.when(is_usable, ranked)).alias("best"),
                 F.sum(F.when(is_usable, F.col("responses"))).alias("responses"),
                 F.array_sort(F.collect_set(F.when(F.col("unsubscribed"), F.col("channel"))))
                 .alias("reply_opt_out_channels"))
            .select("sub_id", F.col("best.channel").alias("contact_preferred_channel"),
                    F.col("responses").cast("int").alias("contact_responses"), "reply_opt_out_channels"))


def base_aggregates(sources: Sources, window: Window) -> DataFrame:
    """Every base column (BASE_COLUMNS) for each subscriber in the tag month's CRM snapshot."""
    usage_has = [m in sources.usage_months for m in window.months]
    bills_has = [m in sources.billing_months for m in window.months]
    in_crm = [F.lit(True), *[F.col(f"in_crm_m{i}") for i in AGO]]
    reference = F.broadcast(sources.terminals.select(
        F.col("tac").alias("crm_tac"), *[F.col(c).alias(f"ref_{c}") for c in
                                         ("brand", "model", "os", "network_gen", "is_smart", "price_tier")]))
    df = (
        crm_base(sources.subscribers, sources.products, window)
        .join(usage_base(sources.usage, window), on="sub_id", how="left")
        .join(device_base(sources.devices), on="sub_id", how="left")
        .join(billing_base(sources.billing, window), on="sub_id", how="left")
        .join(orders_base(sources.orders), on="sub_id", how="left")
        .join(feedback_base(sources.feedback), on="sub_id", how="left")
        .join(reference, on="crm_tac", how="left")
    )

    def history(value: str, i: int, present: list[bool], known: Column, zero: Column | None = None) -> Column:
        # Known history: the month landed and the subscriber was there; then no rows means zero.
        fill = F.lit(0.0) if zero is None else zero
        return F.when(known, F.coalesce(F.col(value), fill)) if present[i] else F.lit(None)

    from_usage = F.col("tac").isNotNull()
    handset = {c: F.when(from_usage, F.col(c)).otherwise(F.col(f"ref_{c}"))
               for c in ("brand", "model", "os", "network_gen", "is_smart", "price_tier")}
    source = (F.when(from_usage, F.col("terminal_source"))
              .when(F.col("ref_brand").isNotNull(), F.lit("crm_tac")).otherwise(F.lit("unknown")))
    columns = {
        **{f"data_mb_m{i}": history(f"usage_mb_m{i}", i, usage_has, in_crm[i]) for i in range(HISTORY + 1)},
        "idle_mb_m0": history("idle_mb_m0", 0, usage_has, in_crm[0]),
        "records_m0": history("records_m0", 0, usage_has, in_crm[0], F.lit(0).cast("long")),
        "active_days_m0": history("active_days_m0", 0, usage_has, in_crm[0], F.lit(0)),
        "apps_used_m0": history("apps_used_m0", 0, usage_has, in_crm[0], F.lit(0)),
        "category_mb_m0": F.coalesce(F.col("category_mb_m0"), F.create_map().cast("map<string,double>")),
        "top_apps_m0": F.coalesce(F.col("top_apps_m0"), F.array().cast("array<string>")),
        "handset_tac": F.coalesce(F.col("tac"), F.col("crm_tac")),
        **{f"handset_{c}": v for c, v in handset.items()},
        "handset_source": source,
        "handsets_seen_m0": F.coalesce(F.col("handsets_seen_m0"), F.lit(0)),
        **{f"arpu_yuan_m{i}": history(f"bill_m{i}", i, bills_has, in_crm[i]) for i in range(HISTORY + 1)},
        **{c: history(c, 0, bills_has, in_crm[0]) for c in
           ("mou_local_m0", "mou_longdistance_m0", "mou_roaming_m0", "payperuse_yuan_m0", "payperuse_mb_m0",
            "boosters_m0", "vas_yuan_m0")},
        **{f"mou_m{i}": history(f"voice_m{i}", i, bills_has, in_crm[i]) for i in AGO},
        "payperuse_months": F.coalesce(F.col("payperuse_months"), F.lit(0)),
        "vas_yuan_m1": history("vas_m1", 1, bills_has, in_crm[1]),
        "orders_m0": F.coalesce(F.col("orders_m0"), F.lit(0)),
        "cancellations_m0": F.coalesce(F.col("cancellations_m0"), F.lit(0)),
        "data_product_ordered_m0": F.coalesce(F.col("data_product_ordered_m0"), F.lit(False)),
        "contact_responses": F.coalesce(F.col("contact_responses"), F.lit(0)),
        "reply_opt_out_channels": F.coalesce(F.col("reply_opt_out_channels"), F.array().cast("array<string>")),
    }
    out = df.withColumns(columns)
    return out.select("sub_id", *[F.col(c.name).cast(spark_type(c.type)).alias(c.name) for c in BASE_COLUMNS])


SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(), "boolean": T.BooleanType(), "int": T.IntegerType(), "long": T.LongType(),
    "double": T.DoubleType(), "date": T.DateType(), "array<string>": T.ArrayType(T.StringType()),
    "map<string,double>": T.MapType(T.StringType(), T.DoubleType()),
}


def spark_type(name: str) -> T.DataType:
    """The Spark type of a tag type name (see SPARK_TYPES)."""
    return SPARK_TYPES[name]
