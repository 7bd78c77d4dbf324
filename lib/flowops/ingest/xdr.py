"""xDR lines -> typed records, each with a named reject reason when it is bad.

Rules run in a fixed order and the first failing one names the reason, so every rejected line has
exactly one. The parse is vectorised over Arrow arrays (pyarrow kernels and numpy, a batch of lines at a
time) and runs inside the task that reads the file (`lines.read_landed`), so each line is decompressed,
split and judged in one pass. Measured on a month of 2.9 M lines, the same rules written as Spark column
expressions cost about 4x more CPU per line (each string function allocates per row, and the plan is
too large for the JIT) plus several seconds of JIT warm-up per job; see BENCHMARKS.md.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import Broadcast
from pyspark.sql import Column
from pyspark.sql import functions as F

from flowops.ingest.apps import APP_DDL, PROTOCOLS, AppRules, Identifier
from flowops.ingest.pii import mask_fields, pseudonyms
from flowops.landing import GENERATIONS, landing_day

XDR_FIELDS = (
    "record_id", "msisdn", "imsi", "imei", "start_time", "end_time", "rat", "apn", "cell_id", "protocol",
    "server_ip", "server_port", "host", "sni", "uri", "user_agent", "ul_bytes", "dl_bytes",
)
PERSONAL_FIELDS = (1, 2, 3, 8)  # msisdn, imsi, imei, cell_id (masked in quarantined lines)

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
INVALID_RAT = "invalid_rat"
INVALID_PROTOCOL = "invalid_protocol"
LINE_REASONS = (BAD_ENCODING, WRONG_FIELD_COUNT, MISSING_RECORD_ID, INVALID_MSISDN, INVALID_IMEI, BAD_NUMBER,
                NEGATIVE_BYTES, BAD_TIMESTAMP, END_BEFORE_START, OUT_OF_WINDOW, INVALID_RAT, INVALID_PROTOCOL)

MSISDN_PREFIX = r"^(?:\+86|0086|86)(1[0-9]{10})$"
MSISDN = r"^1[3-9][0-9]{9}$"
WHOLE_NUMBER = r"^[0-9]{1,18}$"
NEGATIVE_NUMBER = r"^-[0-9]{1,18}$"
TIMESTAMP_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?$"
EPOCH_STAMP = "1970-01-01 00:00:00"
FIRST_SEGMENT = r"^(?P<segment>/[^/?#]+)"
US_PER_DAY = 86_400_000_000
EPOCH = dt.date(1970, 1, 1)

# The typed columns a parse adds to each line (Spark DDL); see `parse_lines`.
# record_id is bytes here (the staged files keep it as text): Spark's cache keeps a clone of every new largest string
# per column for its statistics, i.e. of every record id when they ascend (as probes number them), should a
# caller hand the accepted records to Spark and cache them.
PARSED_COLUMNS = (
    "value binary, reason string, landing_day string, dt string, record_id binary, msisdn string, tac string, "
    "start_time timestamp, end_time timestamp, duration_ms long, is_idle boolean, rat string, apn string, "
    "cell_id string, protocol string, server_ip string, server_port int, host string, sni string, uri string, "
    "user_agent string, ul_bytes long, dl_bytes long"
)
RECORD_COLUMNS = f"{PARSED_COLUMNS}, {APP_DDL}, sub_id string"
# What `RecordParser.finish` tells about a file read through: lines rejected per reason, days it has records of,
# and each subscriber it has records of (msisdn, pseudonym, first day): the subscriber keys come from these, a few
# rows per file, not from every record.
RECORD_SUMMARY = ("file_reasons map<string, long>, file_days array<string>, "
                  "file_keys array<struct<msisdn: string, sub_id: string, first_seen: string>>")


@dataclass(frozen=True)
class ParseRules:
    """What judging a line depends on besides the line (from conf/pipeline.yml).

    Args:
        late_days: records up to this many days before their file's landing day are late arrivals, accepted
            into their own day; anything else outside the landing day is out of the accepted window.
        idle_hours: `(start, end)` local hours of idle time, e.g. `(23, 7)`.
        timezone: the zone the probes write local times in.
    """

    late_days: int
    idle_hours: tuple[int, int]
    timezone: str


def parse_lines(values: pa.BinaryArray, landing_day: dt.date | np.ndarray, rules: ParseRules) -> dict[str, pa.Array]:
    """Judge and type a batch of xDR lines landed on `landing_day` (a date, or per line its days since 1970-01-01:
    a batch may hold lines of files of several landing days).

    Returns the PARSED_COLUMNS as Arrow arrays, one value per line: `value` (the raw line, for rejected
    lines only), `reason` (null when accepted), `landing_day`, `dt` (the local day the record started) and
    the typed fields. `host`, `sni`, `uri` and `user_agent` are as landed (trimmed): `RecordParser` turns
    them into what bronze keeps, once per distinct value.
    """
    count = len(values)
    if not count:
        return {}
    is_utf8 = utf8_valid(values)
    text = pc.if_else(pa.array(is_utf8), values, pa.scalar(b"", pa.binary())).cast(pa.string())
    parts = pc.split_pattern(text, "|")
    field_count = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    field = table_fields(parts, field_count)

    msisdn = normalise_msisdn(field["msisdn"])
    start, start_ok = local_micros(field["start_time"])
    end, end_ok = local_micros(field["end_time"])
    start_utc, end_utc = _instants(start, start_ok, rules.timezone), _instants(end, end_ok, rules.timezone)
    ul, dl = field["ul_bytes"], field["dl_bytes"]
    ul_negative, dl_negative = _matches(ul, NEGATIVE_NUMBER), _matches(dl, NEGATIVE_NUMBER)
    ul_whole, dl_whole = _matches(ul, WHOLE_NUMBER), _matches(dl, WHOLE_NUMBER)
    port = field["server_port"]
    port_digits = _matches(port, WHOLE_NUMBER)
    port_number = _as_int(port, port_digits)
    is_port = port_digits & (port_number <= 65535)
    port_ok = _is(pc.equal(port, "")) | is_port
    start_utc_us = _micros(start_utc)
    landing = np.full(count, (landing_day - EPOCH).days) if isinstance(landing_day, dt.date) else landing_day
    start_days = np.floor_divide(start, US_PER_DAY)
    rat, protocol = pc.utf8_upper(field["rat"]), pc.utf8_upper(field["protocol"])
    checks = [
        ~is_utf8,
        field_count != len(XDR_FIELDS),
        _is(pc.equal(field["record_id"], "")),
        _is(pc.is_null(msisdn)),
        ~imei_valid(field["imei"]),
        ~(ul_whole | ul_negative) | ~(dl_whole | dl_negative) | ~port_ok,
        ul_negative | dl_negative,
        ~(start_ok & end_ok),
        _micros(end_utc) < start_utc_us,
        (start_days < landing - rules.late_days) | (start_days > landing),
        # The landing contract's values, in any case: anything else ("LTE", a 3GPP RAT-type number, an empty
        # field) is quarantined rather than counted under a generation no tag knows.
        ~_is(pc.is_in(rat, value_set=pa.array(GENERATIONS))),
        ~_is(pc.is_in(protocol, value_set=pa.array(PROTOCOLS))),
    ]
    reason_code = np.full(count, -1, np.int8)
    for code in range(len(checks) - 1, -1, -1):  # the first failing check wins
        reason_code[checks[code]] = code
    rejected = reason_code >= 0
    reason = pa.DictionaryArray.from_arrays(pa.array(reason_code, mask=~rejected), pa.array(LINE_REASONS)).cast(
        pa.string())
    hour = (np.floor_divide(start, 3_600_000_000) % 24) if count else start
    idle_start, idle_end = rules.idle_hours
    is_idle = ((hour >= idle_start) | (hour < idle_end)) if idle_start > idle_end else \
        ((hour >= idle_start) & (hour < idle_end))
    imei = field["imei"]
    return {
        "value": pc.if_else(pa.array(rejected), values, pa.scalar(None, pa.binary())),
        "reason": reason,
        "landing_day": _day_text(landing),
        "dt": pc.if_else(pa.array(start_ok), pc.utf8_slice_codeunits(field["start_time"], 0, 10),
                         pa.scalar(None, pa.string())),
        "record_id": field["record_id"].cast(pa.binary()),
        "msisdn": msisdn,
        "tac": pc.if_else(pc.equal(imei, ""), pa.scalar(None, pa.string()), pc.utf8_slice_codeunits(imei, 0, 8)),
        "start_time": start_utc,
        "end_time": end_utc,
        "duration_ms": pa.array(np.floor_divide(_micros(end_utc), 1000) - np.floor_divide(start_utc_us, 1000),
                                mask=~(start_ok & end_ok)),
        "is_idle": pa.array(is_idle, mask=~start_ok),
        "rat": rat,
        "apn": pc.utf8_lower(field["apn"]),
        "cell_id": field["cell_id"],
        "protocol": protocol,
        "server_ip": field["server_ip"],
        "server_port": pa.array(np.where(is_port, port_number, 0).astype(np.int32), mask=~is_port),
        "host": field["host"],
        "sni": field["sni"],
        "uri": field["uri"],
        "user_agent": field["user_agent"],
        "ul_bytes": pa.array(_as_int(ul, ul_whole), mask=~ul_whole),
        "dl_bytes": pa.array(_as_int(dl, dl_whole), mask=~dl_whole),
    }


class RecordParser:
    """What a reading task does to each batch of usage files' lines: parse and judge them (`parse_lines`),
    identify the app (`apps.Identifier`) and pseudonymise the msisdn, each once per distinct value. Its output
    is RECORD_COLUMNS. The pseudonymisation key comes from a broadcast variable, never from the plan.

    Args:
        rules: the parse rules.
        apps: the fingerprint rules.
        key: a Spark broadcast of the pseudonymisation key (`pii.Pseudonymiser.shared`).
    """

    def __init__(self, rules: ParseRules, apps: AppRules, key: Broadcast) -> None:
        self.rules, self.apps, self.key = rules, apps, key
        self._identifier: Identifier | None = None
        self._pseudonyms: dict[str, str] = {}
        self._files: dict[str, tuple[Counter, set[str], list[pa.Table]]] = {}

    def __getstate__(self) -> dict:
        return {"rules": self.rules, "apps": self.apps, "key": self.key, "_identifier": None, "_pseudonyms": {},
                "_files": {}}

    def finish(self, source_file: str) -> dict:
        """RECORD_SUMMARY of a file read through (its rejected lines per reason, its accepted records' days and
        subscribers)."""
        reasons, days, keys = self._files.pop(source_file, (Counter(), set(), []))
        subscribers = []
        if keys:
            firsts = pa.concat_tables(keys).group_by(["msisdn", "sub_id"]).aggregate([("first_seen", "min")])
            subscribers = firsts.rename_columns(["msisdn", "sub_id", "first_seen"]).to_pylist()
        return {"file_reasons": dict(reasons), "file_days": sorted(days), "file_keys": subscribers}

    def __call__(self, values: pa.BinaryArray, segments: list[tuple[str, int]]) -> dict[str, pa.Array]:
        """Parse a batch of lines of files `usage/dt=YYYY-MM-DD/hour=HH/<name>`: `segments` says which, as
        `(source_file, lines)` in order."""
        self._identifier = self._identifier or Identifier(self.apps)
        file_index = np.repeat(np.arange(len(segments)), [n for _, n in segments])
        days = np.array([(dt.date.fromisoformat(landing_day(name)) - EPOCH).days for name, _ in segments])
        columns = parse_lines(values, days[file_index], self.rules)
        # Only the first path segment is ever read or kept: the rest of a URI (queries with phone numbers and
        # tokens) never leaves this function, and distinct segments are few.
        segment = pc.struct_field(pc.extract_regex(columns["uri"], FIRST_SEGMENT), [0])
        port = pc.fill_null(pc.cast(columns["server_port"], pa.string()), "")
        columns.update(self._identifier.identify(columns["host"], columns["sni"], segment, columns["user_agent"],
                                                 port, columns["protocol"]))
        columns["sub_id"] = pseudonyms(columns["msisdn"], self.key.value, self._pseudonyms)
        self._tally([name for name, _ in segments], file_index, columns)
        return columns

    def _tally(self, names: list[str], file_index: np.ndarray, columns: dict[str, pa.Array]) -> None:
        """Add each file's rejected lines per reason, and its accepted records' days and subscribers, to what `finish`
        reports."""
        for name in names:
            self._files.setdefault(name, (Counter(), set(), []))
        reason, day = columns["reason"], columns["dt"]
        lines = pa.table({"file": file_index, "reason": reason, "dt": day})
        rejected = lines.filter(pc.is_valid(reason)).group_by(["file", "reason"]).aggregate([([], "count_all")])
        for file, why, n in zip(*(rejected[c].to_pylist() for c in ("file", "reason", "count_all")), strict=True):
            self._files[names[file]][0][why] += n
        days = lines.filter(pc.and_(pc.is_null(reason), pc.is_valid(day))).group_by(["file", "dt"]).aggregate([])
        for file, seen in zip(days["file"].to_pylist(), days["dt"].to_pylist(), strict=True):
            self._files[names[file]][1].add(seen)
        accepted = pa.table({"file": file_index, "msisdn": columns["msisdn"], "sub_id": columns["sub_id"],
                             "first_seen": day}).filter(pc.is_null(reason))
        keys = accepted.group_by(["file", "msisdn", "sub_id"]).aggregate([("first_seen", "min")])
        for file in pc.unique(keys["file"]).to_pylist():
            mine = keys.filter(pc.equal(keys["file"], file))
            self._files[names[file]][2].append(pa.table({"msisdn": mine["msisdn"], "sub_id": mine["sub_id"],
                                                         "first_seen": mine["first_seen_min"]}))


def _day_text(days: np.ndarray) -> pa.StringArray:
    """Days since 1970-01-01 as ISO dates, each distinct day formatted once."""
    distinct, index = np.unique(days, return_inverse=True)
    text = pa.array([(EPOCH + dt.timedelta(days=int(day))).isoformat() for day in distinct], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), text).cast(pa.string())


def quarantine_text(value: Column) -> Column:
    """A rejected line (bytes) as it may be kept in bronze/quarantine: valid UTF-8, personal fields masked."""
    return mask_fields(F.make_valid_utf8(value.cast("string")), r"\|", "|", PERSONAL_FIELDS, len(XDR_FIELDS))


def utf8_valid(values: pa.BinaryArray) -> np.ndarray:
    """Per value: is it valid UTF-8? Only values holding a byte >= 0x80 can fail; only those are decoded."""
    valid = np.ones(len(values), bool)
    data = values.buffers()[2]
    if data is None or not len(values):
        return valid
    offsets = _offsets(values)
    body = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]]
    high = np.flatnonzero(body >= 0x80) + offsets[0]
    for index in np.unique(np.searchsorted(offsets, high, side="right") - 1):
        try:
            values[int(index)].as_py().decode("utf-8")
        except UnicodeDecodeError:
            valid[index] = False
    return valid


def normalise_msisdn(raw: pa.StringArray) -> pa.StringArray:
    """Canonical 11-digit mainland mobile number, or null: 86 / +86 / 0086 prefixes and surrounding spaces go."""
    digits = pc.replace_substring_regex(pc.utf8_trim(raw, " "), MSISDN_PREFIX, r"\1")
    return pc.if_else(pc.match_substring_regex(digits, MSISDN), digits, pa.scalar(None, pa.string()))


def imei_valid(imei: pa.StringArray) -> np.ndarray:
    """Empty (not captured) is fine; so are 14 digits (no check digit) and 16 (IMEISV). 15 digits must pass the
    Luhn check. A single repeated digit (000000000000000) is a placeholder, not an IMEI."""
    digits = _matches(imei, r"^[0-9]{14,16}$")
    length = pc.utf8_length(imei).to_numpy(zero_copy_only=False)
    repeated = _is(pc.equal(pc.binary_repeat(pc.utf8_slice_codeunits(imei, 0, 1), pc.utf8_length(imei)), imei))
    number = _as_int(imei, digits & (length == 15))
    place = 10 ** np.arange(14, -1, -1, dtype=np.int64)
    numerals = (number[:, None] // place) % 10
    doubled = numerals[:, 1::2] * 2
    luhn = (numerals[:, 0::2].sum(axis=1) + (doubled - 9 * (doubled > 9)).sum(axis=1)) % 10 == 0
    return _is(pc.equal(imei, "")) | (digits & ~repeated & ((length != 15) | luhn))


def local_micros(text: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """`YYYY-MM-DD HH:MM:SS[.f..ffffff]` as microseconds of local wall-clock time since 1970-01-01 00:00, and
    whether each value is such a time (the shape, and a real date and time of day: no 30 February, no 25:00)."""
    shape = _matches(text, TIMESTAMP_SHAPE)
    head = pc.utf8_slice_codeunits(pc.if_else(pa.array(shape), text, EPOCH_STAMP), 0, len(EPOCH_STAMP))
    width = len(EPOCH_STAMP)
    start = _offsets(head)[0]
    chars = (np.frombuffer(head.buffers()[2], np.uint8)[start:start + width * len(head)].reshape(-1, width)
             .astype(np.int64) - ord("0"))

    def number(first: int, last: int) -> np.ndarray:
        out = np.zeros(len(head), np.int64)
        for position in range(first, last):
            out = out * 10 + chars[:, position]
        return out

    year, month, day = number(0, 4), number(5, 7), number(8, 10)
    hour, minute, second = number(11, 13), number(14, 16), number(17, 19)
    fraction = pc.utf8_rpad(pc.if_else(pa.array(shape), pc.utf8_slice_codeunits(text, 20, 26), ""), 6, "0")
    micros_part = pc.cast(fraction, pa.int64()).to_numpy(zero_copy_only=False)
    valid = (shape & (month >= 1) & (month <= 12) & (day >= 1) & (day <= _days_in_month(year, month))
             & (hour <= 23) & (minute <= 59) & (second <= 59))
    days = _days_from_civil(year, month, day)
    micros = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000 + micros_part
    return np.where(valid, micros, 0), valid


def _offsets(values: pa.Array) -> np.ndarray:
    """The value offsets of a (non-large) binary or string array, into its data buffer."""
    return np.frombuffer(values.buffers()[1], np.int32)[values.offset:values.offset + len(values) + 1]


def table_fields(parts: pa.ListArray, field_count: np.ndarray) -> dict[str, pa.StringArray]:
    """The XDR_FIELDS of each line, trimmed of spaces; lines with fewer fields get garbage (they are rejected
    as wrong_field_count before anything reads it)."""
    flat = parts.flatten()
    starts = parts.offsets.to_numpy()[:-1]
    out = {}
    for position, name in enumerate(XDR_FIELDS):
        index = np.where(field_count > position, starts + position, 0)
        out[name] = pc.utf8_trim(flat.take(pa.array(index)), " ") if len(flat) else pa.array([""] * len(starts))
    return out


def _instants(local: np.ndarray, valid: np.ndarray, timezone: str) -> pa.TimestampArray:
    naive = pa.array(local, pa.timestamp("us"), mask=~valid)
    return pc.assume_timezone(naive, timezone, ambiguous="earliest", nonexistent="latest")


def _micros(stamps: pa.TimestampArray) -> np.ndarray:
    return stamps.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)


def _matches(text: pa.StringArray, pattern: str) -> np.ndarray:
    return _is(pc.match_substring_regex(text, pattern))


def _is(flags: pa.BooleanArray) -> np.ndarray:
    return flags.fill_null(False).to_numpy(zero_copy_only=False)


def _as_int(text: pa.StringArray, ok: np.ndarray) -> np.ndarray:
    """The digits of `text` as int64 where `ok`, else 0."""
    return pc.cast(pc.if_else(pa.array(ok), text, "0"), pa.int64()).to_numpy(zero_copy_only=False)


def _days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 1, 12) - 1]
    return days + ((month == 2) & leap)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm, vectorised)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    year_of_era = y - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
