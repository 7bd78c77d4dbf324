"""The lake's table contract: every table's name, explicit schema and partitioning.

Schemas are declared, never inferred: a `dt` string stays a string, and a writer whose DataFrame does not
match the declared schema fails before anything is written. Bump a table's `version` when its schema
changes; a lake written by a newer version is refused instead of being misread.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

from flowops.errors import LakeError

# Commit metadata: the fingerprint of the key a commit's sub_ids come from (see `ingest.pii.key_fingerprint`).
KEY_FINGERPRINT = "flowops.keyFingerprint"


@dataclass(frozen=True)
class TableSpec:
    """One lake table: `LAKE/<layer>/<table>`."""

    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    version: int = 1
    description: str = ""
    # Columns written without dictionary encoding: values unique per row, or so varied that hashing every value
    # into a dictionary costs more write time than it saves space (zstd still compresses their repeats).
    plain: tuple[str, ...] = ()
    # Row order within each written file: like values next to each other compress and skip better.
    cluster_by: tuple[str, ...] = ()
    # Compact storage for a table read far more than it is written: Parquet v2 data pages, whose integers are
    # delta-encoded (measured: 5% smaller silver; a higher zstd level gained under 1% more).
    compact: bool = False

    def writer_options(self) -> dict[str, str]:
        """Parquet writer options for this table's files."""
        options = {f"parquet.enable.dictionary#{column}": "false" for column in self.plain}
        if self.compact:
            options["parquet.writer.version"] = "PARQUET_2_0"
        return options

    def __post_init__(self) -> None:
        missing = [col for col in self.partition_by if col not in self.schema.fieldNames()]
        if missing:
            raise ValueError(f"table {self.name}: partition columns {missing} are not in its schema")
        unknown = [col for col in (*self.plain, *self.cluster_by) if col not in self.schema.fieldNames()]
        if unknown:
            raise ValueError(f"table {self.name}: columns {unknown} are not in its schema")
        if self.name.count("/") != 1:
            raise ValueError(f"table name must be '<layer>/<table>', got {self.name!r}")


def table_fields(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype, True) for name, dtype in fields])


STRING, LONG, DOUBLE, TIMESTAMP = T.StringType(), T.LongType(), T.DoubleType(), T.TimestampType()

RUNS = TableSpec(
    name="ops/runs",
    schema=table_fields(
        ("run_id", STRING),
        ("job", STRING),
        ("params", T.MapType(STRING, STRING)),
        ("started_at", TIMESTAMP),
        ("ended_at", TIMESTAMP),
        ("seconds", DOUBLE),
        ("status", STRING),
        ("error", STRING),
        ("rows_in", LONG),
        ("rows_out", LONG),
        ("counts", T.MapType(STRING, LONG)),
        ("table_versions", T.MapType(STRING, LONG)),
        ("files", T.ArrayType(T.StructType([
            T.StructField("source_file", STRING),
            T.StructField("status", STRING),
            T.StructField("lines_in", LONG),
            T.StructField("accepted", LONG),
            T.StructField("quarantined", LONG),
            T.StructField("duplicates", LONG),
        ]))),
        ("engine", STRING),
        ("flowops_version", STRING),
        ("spark_master", STRING),
    ),
    description="One row per job run: params, status, counts, table versions written, timings.",
)

BOOL, INT = T.BooleanType(), T.IntegerType()

QUALITY_RESULTS = TableSpec(
    name="ops/quality_results",
    schema=table_fields(
        ("run_id", STRING), ("job", STRING), ("table", STRING), ("partition", STRING), ("expectation", STRING),
        ("gx_type", STRING), ("column", STRING), ("arguments", STRING), ("severity", STRING), ("success", BOOL),
        ("element_count", LONG), ("unexpected_count", LONG), ("observed_value", STRING),
        ("examples", T.ArrayType(STRING)), ("checked_at", TIMESTAMP),
    ),
    description="One row per expectation and job run (conf/expectations): the table and partition checked, the "
                "expectation as declared and the GX type it ran as, its arguments (json, bounds resolved), severity, "
                "success, rows checked and failed or the observed value, a few failing examples (masked).",
)

USAGE_EVENTS = TableSpec(
    name="bronze/usage_events",
    schema=table_fields(
        ("dt", STRING), ("record_id", STRING), ("sub_id", STRING), ("tac", STRING),
        ("start_time", TIMESTAMP), ("end_time", TIMESTAMP), ("duration_ms", LONG), ("is_idle", BOOL),
        ("rat", STRING), ("apn", STRING), ("protocol", STRING), ("server_ip", STRING),
        ("server_port", INT), ("host", STRING), ("sni", STRING), ("uri", STRING), ("user_agent", STRING),
        ("ul_bytes", LONG), ("dl_bytes", LONG),
        ("app_id", STRING), ("app_category", STRING), ("app_confidence", DOUBLE), ("app_rule", STRING),
        ("source_file", STRING), ("line_no", LONG), ("landing_day", STRING), ("run_id", STRING),
    ),
    partition_by=("dt",),
    version=2,  # v2: no cell_id (restricted/usage_cells), uri is the first path segment only
    description="One clean xDR record, pseudonymised (sub_id, TAC only, no cell: see restricted/usage_cells), app "
                "identified, URI cut to its first path segment; dt = local start date.",
    # Measured on a 2.9 M-record month: dictionaries on only the low-cardinality columns write 15% faster than
    # on every column but the unique ones, for 16% larger files (bronze is the audit layer; silver is compact).
    plain=("record_id", "start_time", "end_time", "duration_ms", "server_ip", "host", "sni", "uri",
           "user_agent", "ul_bytes", "dl_bytes", "app_rule", "line_no"),
)

QUARANTINE = TableSpec(
    name="bronze/quarantine",
    schema=table_fields(
        ("dt", STRING), ("source", STRING), ("source_file", STRING), ("line_no", LONG), ("reason", STRING),
        ("detail", STRING), ("raw", STRING), ("line_count", LONG), ("run_id", STRING),
    ),
    partition_by=("dt",),
    description="One rejected line (line_count 1) or file (line_count = its readable lines), with the reason; "
                "dt = landing day; raw is masked.",
)

USAGE_DAILY = TableSpec(
    name="silver/usage_daily",
    schema=table_fields(
        ("dt", STRING), ("sub_id", STRING), ("app_id", STRING), ("app_category", STRING), ("rat", STRING),
        ("is_idle", BOOL), ("ul_bytes", LONG), ("dl_bytes", LONG), ("total_bytes", LONG), ("records", LONG),
        ("duration_s", DOUBLE),
    ),
    partition_by=("dt",),
    description="subscriber x day x app x RAT x idle/busy: bytes, records, duration - the compressed usage.",
    # Measured on a month at 300 records per subscriber-day: sorting rows by subscriber and app saved 4% of
    # silver and cost 10% more rollup time; the numbers (ul, dl, total, duration) are most of the bytes.
    plain=("ul_bytes", "dl_bytes", "total_bytes", "records", "duration_s"),
    compact=True,
)

DEVICE_DAILY = TableSpec(
    name="silver/device_daily",
    schema=table_fields(
        ("dt", STRING), ("sub_id", STRING), ("tac", STRING), ("brand", STRING), ("model", STRING), ("os", STRING),
        ("network_gen", STRING), ("is_smart", BOOL), ("price_tier", STRING), ("terminal_source", STRING),
        ("records", LONG), ("total_bytes", LONG),
    ),
    partition_by=("dt",),
    description="subscriber x day x handset (TAC): the terminal and which source identified it.",
    plain=("records", "total_bytes"),
    compact=True,
)

USER_AGENTS = TableSpec(
    name="silver/user_agents",
    schema=table_fields(
        ("user_agent", STRING), ("brand", STRING), ("model", STRING), ("os", STRING), ("is_smart", BOOL),
        ("network_gen", STRING), ("price_tier", STRING), ("resolver", STRING), ("run_id", STRING),
    ),
    description="Each user agent of a handset the TAC table lacks, as the device data read it (all null: it says "
                "nothing of the handset), with the resolver that read it: an ingest reads only the agents no "
                "earlier run of the same resolver read (the device data costs milliseconds per agent).",
)

DATE, MONEY = T.DateType(), T.DecimalType(12, 2)

SUBSCRIBERS = TableSpec(
    name="silver/subscribers",
    schema=table_fields(
        ("month", STRING), ("sub_id", STRING), ("status", STRING), ("activation_date", DATE), ("churn_date", DATE),
        ("brand", STRING), ("identity", STRING), ("age_band", STRING), ("city", STRING), ("region_type", STRING),
        ("vip_level", INT), ("account_manager_id", STRING), ("base_plan_id", STRING), ("data_plan_id", STRING),
        ("idle_pack_id", STRING), ("opt_out_all", BOOL), ("opt_out_channels", T.ArrayType(STRING)),
        ("complaints", INT), ("tac", STRING),
    ),
    partition_by=("month",),
    description="CRM snapshot at month end, typed and pseudonymised (no msisdn, IMSI or IMEI; the TAC stays).",
)

BILLING_MONTHLY = TableSpec(
    name="silver/billing_monthly",
    schema=table_fields(("month", STRING), ("sub_id", STRING), ("item_code", STRING), ("item_name", STRING),
                   ("quantity", DOUBLE), ("unit", STRING), ("amount_yuan", MONEY)),
    partition_by=("month",),
    description="Monthly bill lines per subscriber, as landed, typed and pseudonymised.",
)

ORDERS = TableSpec(
    name="silver/orders",
    schema=table_fields(("month", STRING), ("sub_id", STRING), ("order_id", STRING), ("order_time", TIMESTAMP),
                   ("product_id", STRING), ("product_type", STRING), ("channel", STRING), ("campaign_id", STRING),
                   ("action", STRING), ("fee_yuan", MONEY)),
    partition_by=("month",),
    description="Product orders (organic and campaign-driven), as landed, typed and pseudonymised.",
)

FEEDBACK = TableSpec(
    name="silver/feedback",
    schema=table_fields(("month", STRING), ("sub_id", STRING), ("channel", STRING), ("scenario", STRING),
                        ("wave", T.IntegerType()), ("contact_date", T.DateType()), ("delivered", T.BooleanType()),
                        ("opened", T.BooleanType()), ("clicked", T.BooleanType()), ("replied", T.BooleanType()),
                        ("reply", STRING), ("satisfaction", T.IntegerType())),
    partition_by=("month",),
    description="Channel receipts per contact, as landed under RAW/feedback/month=M/<channel>.csv, typed and "
                "pseudonymised; a reply's text is kept only as its meaning (unsubscribe, accept, other).",
)

USAGE_CELLS = TableSpec(
    name="restricted/usage_cells",
    schema=table_fields(("dt", STRING), ("record_id", STRING), ("cell_id", STRING)),
    partition_by=("dt",),
    description="The radio cell of each bronze record (join on dt, record_id): with a record's time and "
                "subscriber it is a location trail, so it is kept apart, with the phone numbers.",
    plain=("record_id",),
)

SUBSCRIBER_KEYS = TableSpec(
    name="restricted/subscriber_keys",
    schema=table_fields(("sub_id", STRING), ("msisdn", STRING), ("first_seen", STRING), ("source", STRING)),
    description="sub_id <-> msisdn: the only table holding phone numbers.",
)

FLOW_STAGES = TableSpec(
    name="gold/flow_stages",
    schema=table_fields(("month", STRING), ("sub_id", STRING), ("stage", STRING), ("reason", STRING),
                   ("evidence", T.MapType(STRING, STRING)), ("flow_type", STRING)),
    partition_by=("month",),
    description="subscriber x month: flow stage, the rule that gave it (reason) with the tag values it read "
                "(evidence), and the flow customer type.",
)

SCENARIO_TARGETS = TableSpec(
    name="gold/scenario_targets",
    schema=table_fields(
        ("month", STRING), ("sub_id", STRING), ("scenario", STRING), ("stage", STRING), ("wave", T.IntegerType()),
        ("mode", STRING), ("decision", STRING), ("reason", STRING), ("arm", STRING), ("explore", T.BooleanType()),
        ("control", T.BooleanType()), ("would_contact", T.BooleanType()), ("product_id", STRING),
        ("offers", T.ArrayType(STRING)), ("family", STRING),
        ("saving_yuan", DOUBLE), ("incentive", STRING), ("incentive_yuan", DOUBLE), ("incentive_cost", DOUBLE),
        ("incentive_on_order", T.BooleanType()), ("channel", STRING), ("intended_channel", STRING),
        ("window_start", T.DateType()),
        ("window_end", T.DateType()), ("contact_date", T.DateType()), ("organic", DOUBLE), ("uplift", DOUBLE),
        ("expected_value", DOUBLE), ("weight", DOUBLE), ("cost_yuan", DOUBLE), ("scorer", STRING),
        ("message", STRING),
        ("sms_segments", T.IntegerType()),
    ),
    partition_by=("month",),
    version=3,
    description="subscriber x scenario x wave x mode of a month: every candidate a scenario's target rule found, "
                "with its offer, decision (targeted, control, or suppressed with the reason), its arm of the "
                "experiment (treated, control, holdout: drawn once, stored), whether the allocation contacts it "
                "(would_contact; for the compared held arm, whether the same optimisation would have, each member "
                "judged against the treated arm's market), channel, intended channel (the first "
                "its route offered, before the allocation: the same rule in both arms), day, window, message, and the "
                "estimates it was valued by (organic conversion, uplift, expected incremental value, the weight the "
                "allocation maximised under the policy's objective, expected cost). The month is the data month "
                "the tags come from; the contact windows fall in the month after.",
)

CONTACT_HISTORY = TableSpec(
    name="ops/contact_history",
    schema=table_fields(
        ("month", STRING), ("sub_id", STRING), ("scenario", STRING), ("wave", T.IntegerType()), ("mode", STRING),
        ("channel", STRING), ("product_id", STRING), ("offers", T.ArrayType(STRING)), ("family", STRING),
        ("window_start", T.DateType()), ("window_end", T.DateType()), ("contact_date", T.DateType()),
        ("round", T.IntegerType()), ("explore", T.BooleanType()), ("expected_value", DOUBLE),
        ("channel_cost_yuan", DOUBLE), ("incentive_cost_yuan", DOUBLE), ("incentive_on_order", T.BooleanType()),
        ("run_id", STRING), ("outcome", STRING),
    ),
    partition_by=("month",),
    version=2,
    description="Every contact exported to a channel (written only once the export files are): who, which "
                "scenario, wave, channel and offers (product_id is the first; family its product type), its window "
                "and day, which cycle of that offer family it is for the subscriber, what it was expected to be "
                "worth and cost, and its outcome once evaluated.",
)

CAMPAIGN_MEMBERS = TableSpec(
    name="gold/campaign_members",
    schema=table_fields(
        ("month", STRING), ("campaign_month", STRING), ("sub_id", STRING), ("scenario", STRING),
        ("wave", T.IntegerType()), ("arm", STRING), ("contacted", T.BooleanType()),
        ("would_contact", T.BooleanType()), ("channel", STRING), ("contacted_channel", STRING),
        ("delivered", T.BooleanType()), ("converted", T.BooleanType()), ("run_id", STRING),
    ),
    partition_by=("month",),
    version=2,
    description="Every member of a month's experiments, per scenario and wave: arm (treated, control, holdout), "
                "channel (the one intended before the allocation, the same rule in both arms), whether contacted "
                "and on which channel, whether the allocation chose them (would_contact: in the held arm, that it "
                "would have; the same rule in both arms), delivery per the channel's receipt, and whether they "
                "ordered an offered product in the window. What the next months' estimates and the uplift model "
                "learn from.",
)

CAMPAIGN_RESULTS = TableSpec(
    name="gold/campaign_results",
    schema=table_fields(
        ("month", STRING), ("campaign_month", STRING), ("scenario", STRING), ("wave", INT), ("channel", STRING),
        ("addressable", LONG), ("assigned", LONG), ("assigned_converted", LONG), ("pushed", LONG),
        ("delivered", LONG), ("reached", LONG), ("converted", LONG),
        ("orders", LONG), ("satisfaction", DOUBLE), ("satisfaction_n", LONG), ("control", LONG),
        ("control_converted", LONG), ("treated_rate", DOUBLE), ("control_rate", DOUBLE), ("uplift", DOUBLE),
        ("uplift_low", DOUBLE), ("uplift_high", DOUBLE), ("incremental_orders", DOUBLE), ("comparison", STRING),
        ("chosen", LONG), ("chosen_converted", LONG), ("control_chosen", LONG), ("control_chosen_converted", LONG),
        ("uplift_arms", DOUBLE), ("uplift_arms_low", DOUBLE), ("uplift_arms_high", DOUBLE), ("revenue_yuan", DOUBLE),
        ("incremental_revenue_yuan", DOUBLE), ("incentive_cost_yuan", DOUBLE), ("channel_cost_yuan", DOUBLE),
        ("roi", DOUBLE), ("run_id", STRING),
    ),
    partition_by=("month",),
    version=3,  # v3: the chosen against the would-be chosen (comparison, chosen..., uplift_arms...)
    description="scenario x wave x channel of a month's campaign (channel 'all': the scenario's wave, counted in "
                "subscribers): the funnel (addressable, pushed, delivered, reached, converted, satisfaction), the "
                "treated arm (assigned) and the control group's conversion, uplift per contact with its 95% interval "
                "(a wave's: the chosen against the held arm's would-be chosen; the whole campaign's and, as a "
                "check, every wave's: the arms whole), "
                "incremental orders and revenue, incentive and channel cost, ROI. month = the data month of the "
                "targets; the contacts and orders fall in campaign_month.",
)

SUBSCRIBER_TAGS = "gold/subscriber_tags"


def subscriber_tags_spec(tags: list[tuple[str, T.DataType]], existing: T.StructType | None = None) -> TableSpec:
    """gold/subscriber_tags: month, sub_id and one column per tag (its schema follows the tag library).

    Columns of tags since removed from the conf stay in the table (null in months computed without them), so
    older months keep their values; a tag whose type changed is refused.
    """
    fields = [("month", STRING), ("sub_id", STRING), *tags]
    declared = dict(fields)
    for field in existing.fields if existing else []:
        if field.name not in declared:
            fields.append((field.name, field.dataType))
        elif field.dataType.simpleString() != declared[field.name].simpleString():
            raise LakeError(
                f"tag {field.name} is {declared[field.name].simpleString()} in the conf but "
                f"{field.dataType.simpleString()} in {SUBSCRIBER_TAGS}: give the new definition a new name, "
                "or rebuild the table")
    return TableSpec(name=SUBSCRIBER_TAGS, schema=table_fields(*fields), partition_by=("month",),
                     description="subscriber x month, one column per tag (conf/tags).")


REGISTRY: dict[str, TableSpec] = {}


def register(*specs: TableSpec) -> None:
    """Add table specs to the registry (each module owning tables registers its own)."""
    for spec in specs:
        REGISTRY[spec.name] = spec


def spec_for(name: str) -> TableSpec:
    """The declared spec of table `name`, with a clear error listing the known tables."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise LakeError(f"unknown table {name!r}; known tables: {known}") from None


register(RUNS, QUALITY_RESULTS)
register(USAGE_EVENTS, QUARANTINE, USAGE_DAILY, DEVICE_DAILY, USER_AGENTS, SUBSCRIBERS, BILLING_MONTHLY, ORDERS,
         USAGE_CELLS, SUBSCRIBER_KEYS, FLOW_STAGES, SCENARIO_TARGETS, CONTACT_HISTORY, FEEDBACK, CAMPAIGN_MEMBERS,
         CAMPAIGN_RESULTS)
