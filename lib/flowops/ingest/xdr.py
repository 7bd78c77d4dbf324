"""xDR lines -> typed records, each with a named reject reason when it is bad.

Rules run in a fixed order and the first failing one names the reason, so every rejected line has
exactly one. All of it is Spark built-ins: no Python runs per line.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from flowops.ingest.hosts import normalise_host_column
from flowops.ingest.pii import mask_digits, mask_fields, normalise_msisdn

XDR_FIELDS = (
    "record_id", "msisdn", "imsi", "imei", "start_time", "end_time", "rat", "apn", "cell_id", "protocol",
    "server_ip", "server_port", "host", "sni", "uri", "user_agent", "ul_bytes", "dl_bytes",
)
TIME_FORMAT = "yyyy-MM-dd HH:mm:ss[.SSSSSS]"
PERSONAL_FIELDS = (1, 2, 3)  # msisdn, imsi, imei
MAX_TEXT = 512

# Reject reasons, in the order they are checked.
BAD_ENCODING = "bad_encoding"
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_RECORD_ID = "missing_record_id"
INVALID_MSISDN = "invalid_msisdn"
INVALID_IMEI = "invalid_imei"
BAD_NUMBER = "bad_number"
NEGATIVE_BYTES = "negative_bytes"
BAD_TIMESTAMP = "bad_timestamp"
END_BEFORE_START = "end_before_start"
OUT_OF_WINDOW = "timestamp_out_of_window"
LINE_REASONS = (BAD_ENCODING, WRONG_FIELD_COUNT, MISSING_RECORD_ID, INVALID_MSISDN, INVALID_IMEI, BAD_NUMBER,
                NEGATIVE_BYTES, BAD_TIMESTAMP, END_BEFORE_START, OUT_OF_WINDOW)


def is_valid_imei(imei: Column) -> Column:
    """Empty (not captured) is fine; so are 14 digits (no check digit) and 16 (IMEISV). 15 digits must pass
    the Luhn check. A single repeated digit (000000000000000) is a placeholder, not an IMEI."""
    number = imei.try_cast("long")

    def digit(position: int) -> Column:
        scale = 10 ** (14 - position)
        return ((number - number % scale) / scale).cast("long") % 10

    # Luhn over 15 digits in long arithmetic, unrolled (a lambda or 15 substrings per row cost far more):
    # double every second digit from the right, excluding the check digit; 2d > 9 counts as 2d - 9.
    terms = [digit(i) if i % 2 == 0 else (digit(i) * 2) - F.when(digit(i) >= 5, 9).otherwise(0) for i in range(15)]
    luhn_ok = sum(terms[1:], terms[0]) % 10 == 0
    digits_only = imei.rlike(r"^[0-9]{14,16}$") & ~imei.rlike(r"^([0-9])\1*$")
    return (imei == "") | (digits_only & ((F.length(imei) != 15) | luhn_ok))


def _whole_number(text: Column) -> Column:
    return text.rlike(r"^[0-9]{1,18}$")


def _negative_number(text: Column) -> Column:
    return text.rlike(r"^-[0-9]{1,18}$")


def landing_day_of(source_file: Column) -> Column:
    """The landing day of a file at `usage/dt=YYYY-MM-DD/hour=HH/name`."""
    return F.to_date(F.regexp_extract(source_file, r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/", 1))


def parse_xdr(lines_df: DataFrame, late_days: int, idle_hours: tuple[int, int]) -> DataFrame:
    """Split, type and judge every line.

    Args:
        lines_df: `source_file` (`usage/dt=YYYY-MM-DD/hour=HH/name`), `line_no`, `value`.
        late_days: records up to this many days before their file's landing day are late arrivals, accepted
            into their own day; anything else outside the landing day is out of the accepted window.
        idle_hours: `(start, end)` local hours of idle time, e.g. `(23, 7)`.

    Returns:
        One row per line: `source_file`, `line_no`, `value` (the raw line, for rejected lines only), `reason`
        (null when accepted) and the typed fields (null for lines rejected before typing).
    """
    # lineSep is '\n', so a CRLF file leaves '\r' at the end of each line: not part of the last field.
    parts = F.split(F.regexp_replace("value", r"\r$", ""), r"\|", -1)
    field = {name: F.col(f"_f_{name}") for name in XDR_FIELDS}
    start = F.try_to_timestamp(field["start_time"], F.lit(TIME_FORMAT))
    end = F.try_to_timestamp(field["end_time"], F.lit(TIME_FORMAT))
    start_day = F.to_date("_start")
    landing_day = F.col("landing_day")
    bytes_fields = (field["ul_bytes"], field["dl_bytes"])
    port = field["server_port"]
    reason = (
        F.when(~F.is_valid_utf8("value"), BAD_ENCODING)
        .when(F.col("_n") != len(XDR_FIELDS), WRONG_FIELD_COUNT)
        .when(field["record_id"] == "", MISSING_RECORD_ID)
        .when(F.col("_msisdn").isNull(), INVALID_MSISDN)
        .when(~is_valid_imei(field["imei"]), INVALID_IMEI)
        .when(~(_whole_number(bytes_fields[0]) | _negative_number(bytes_fields[0]))
              | ~(_whole_number(bytes_fields[1]) | _negative_number(bytes_fields[1]))
              | ((port != "") & ~(_whole_number(port) & (port.try_cast("long") <= 65535))), BAD_NUMBER)
        .when(_negative_number(bytes_fields[0]) | _negative_number(bytes_fields[1]), NEGATIVE_BYTES)
        .when(F.col("_start").isNull() | F.col("_end").isNull(), BAD_TIMESTAMP)
        .when(F.col("_end") < F.col("_start"), END_BEFORE_START)
        .when((start_day < F.date_sub(landing_day, late_days)) | (start_day > landing_day), OUT_OF_WINDOW)
    )
    idle_start, idle_end = idle_hours
    hour = F.hour("start_time")
    in_idle = (hour >= idle_start) | (hour < idle_end) if idle_start > idle_end else \
        (hour >= idle_start) & (hour < idle_end)
    return (
        lines_df
        .withColumn("landing_day", landing_day_of(F.col("source_file")))
        .withColumn("_parts", parts)
        .withColumn("_n", F.size("_parts"))
        .withColumns({f"_f_{name}": F.trim(F.get(F.col("_parts"), i)) for i, name in enumerate(XDR_FIELDS)})
        .withColumn("_msisdn", normalise_msisdn(field["msisdn"]))
        .withColumn("_start", start)
        .withColumn("_end", end)
        .withColumn("reason", reason)
        .select(
            "source_file", "line_no",
            F.when(F.col("reason").isNotNull(), F.col("value")).alias("value"),  # kept for quarantine only
            F.when(F.col("reason").isNotNull(), mask_fields(F.make_valid_utf8("value"), r"\|", "|", PERSONAL_FIELDS,
                                                             len(XDR_FIELDS))).alias("raw_masked"),
            "reason",
            F.date_format("landing_day", "yyyy-MM-dd").alias("landing_day"),
            F.date_format("_start", "yyyy-MM-dd").alias("dt"),
            field["record_id"].alias("record_id"),
            F.col("_msisdn").alias("msisdn"),
            F.when(field["imei"] != "", F.substring(field["imei"], 1, 8)).alias("tac"),
            F.col("_start").alias("start_time"),
            F.col("_end").alias("end_time"),
            F.upper(field["rat"]).alias("rat"),
            F.lower(field["apn"]).alias("apn"),
            field["cell_id"].alias("cell_id"),
            F.upper(field["protocol"]).alias("protocol"),
            field["server_ip"].alias("server_ip"),
            port.try_cast("int").alias("server_port"),
            normalise_host_column(field["host"]).alias("host"),
            normalise_host_column(field["sni"]).alias("sni"),
            F.nullif(F.substring(mask_digits(field["uri"]), 1, MAX_TEXT), F.lit("")).alias("uri"),
            F.nullif(F.substring(mask_digits(field["user_agent"]), 1, MAX_TEXT), F.lit("")).alias("user_agent"),
            bytes_fields[0].try_cast("long").alias("ul_bytes"),
            bytes_fields[1].try_cast("long").alias("dl_bytes"),
        )
        .withColumn("duration_ms", F.unix_millis("end_time") - F.unix_millis("start_time"))
        .withColumn("is_idle", in_idle)
    )
