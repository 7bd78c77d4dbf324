"""Personal data handling: canonical msisdn, keyed pseudonyms, masking of free text.

`sub_id` is HMAC-SHA256(key, canonical msisdn), truncated. It is computed by a vectorised (pandas) UDF
that reads the key from a Spark broadcast variable on the executors, so the key never appears in a query
plan, the UI, an event log or an error message, as a literal would. Callers apply it to distinct msisdns
(a few per thousand records), not per record. The key comes from `FLOWOPS_PII_KEY`; without it, a
labelled demo key is used only when the conf allows it, and the log says so.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from flowops.config import PiiSettings
from flowops.errors import ConfigError
from flowops.ingest.vector import per_distinct

log = logging.getLogger(__name__)

DEMO_KEY = "flowops-DEMO-key-not-secret"
SUB_ID_HEX = 24  # 96 bits: collision-free in practice for an operator's whole base


def pii_key(settings: PiiSettings, environ: dict[str, str] | None = None, *, demo: bool = False) -> bytes:
    """The pseudonymisation key, from the environment. Only `flowops demo` (and tests), passing `demo=True`,
    fall back to the public, labelled demo key when it is not set; every other job refuses to run."""
    environ = os.environ if environ is None else environ
    key = environ.get(settings.key_env, "")
    if key:
        return key.encode("utf-8")
    if not demo:
        raise ConfigError(f"{settings.key_env} is not set: the pseudonymisation key must come from the environment "
                          "(only `flowops demo` runs on the public demo key)")
    log.warning("%s not set: using the labelled DEMO pseudonymisation key (fine for demos, never for "
                "production data)", settings.key_env)
    return DEMO_KEY.encode("utf-8")


def key_fingerprint(key: bytes) -> str:
    """A short, one-way tag of the key, kept in commit metadata: two keys have different tags, and the tag does
    not help to find the key (an HMAC of a fixed text, truncated)."""
    return hmac.new(key, b"flowops key fingerprint", hashlib.sha256).hexdigest()[:16]


class Pseudonymiser:
    """`sub_id` for Spark columns and Arrow arrays, keyed through a broadcast variable: the key reaches the
    executors without ever being a literal in a query plan.

    Args:
        spark: the session whose executors compute the pseudonyms.
        key: the pseudonymisation key (from `pii_key`).
    """

    def __init__(self, spark: SparkSession, key: bytes) -> None:
        self.shared = spark.sparkContext.broadcast(key)
        shared = self.shared

        @F.pandas_udf(T.StringType())
        def sub_id(msisdn: pd.Series) -> pd.Series:
            return pseudonyms(pa.array(msisdn, pa.string()), shared.value).to_pandas()

        self._udf = sub_id

    def sub_id(self, msisdn: Column) -> Column:
        """HMAC-SHA256(key, msisdn) as the first 24 hex characters; null msisdn gives null."""
        return self._udf(msisdn)

    def close(self) -> None:
        """Remove the key from the executors and the driver's block manager."""
        self.shared.destroy()


def pseudonyms(msisdn: pa.StringArray, key: bytes, memo: dict[str, str] | None = None) -> pa.StringArray:
    """`sub_id_python` of every value (null stays null), computed once per distinct number (and once per
    number across calls sharing `memo`)."""
    memo = {} if memo is None else memo

    def pseudonym(number: tuple[str, ...]) -> tuple[str | None]:
        if not number[0]:
            return (None,)
        if number[0] not in memo:
            memo[number[0]] = sub_id_python(number[0], key)
        return (memo[number[0]],)

    index, answers = per_distinct([msisdn], pseudonym)
    return pa.array([a[0] for a in answers], pa.string()).take(pa.array(index))


def sub_id_python(msisdn: str, key: bytes) -> str:
    """The pseudonym of one msisdn (what the Spark UDF computes)."""
    return hmac.new(key, msisdn.encode("utf-8"), hashlib.sha256).hexdigest()[:SUB_ID_HEX]


PERSONAL_FIELD_MASK = "#"


def mask_fields(line: Column, split_pattern: str, joiner: str, personal: tuple[int, ...],
                field_count: int) -> Column:
    """A raw line safe to keep outside restricted/: when it has `field_count` fields, every digit of the
    personal fields (msisdn, IMSI, IMEI by position) becomes '#', whatever their shape; otherwise (the
    positions are unknown) digit runs that look like numbers, with spaces or dashes inside, are masked."""
    parts = F.split(line, split_pattern, -1)
    last = max(personal)
    head = [F.regexp_replace(F.get(parts, i), r"\d", PERSONAL_FIELD_MASK) if i in personal else F.get(parts, i)
            for i in range(last + 1)]
    # Built without a lambda (F.transform): higher-order functions would take the whole projection out of
    # whole-stage code generation.
    by_position = F.array_join(F.concat(F.array(*head), F.slice(parts, last + 2, field_count)), joiner)
    loose = F.regexp_replace(mask_digits(line), r"\+?\d[\d \-]{8,}\d", "###")
    return F.when(F.size(parts) == field_count, mask_digits(by_position)).otherwise(loose)


LONG_DIGIT_RUN = r"([0-9]{3})[0-9]{6,}([0-9]{2})"


def mask_digits(text: Column) -> Column:
    """Mask long digit runs (phone numbers, IMEIs, IMSIs) in free text: 13812345678 -> 138******78."""
    return F.regexp_replace(text, LONG_DIGIT_RUN, "$1******$2")


def mask_digits_text(text: str | None) -> str:
    """`mask_digits` for one string in Python ('' for None)."""
    return re.sub(LONG_DIGIT_RUN, r"\1******\2", text or "")
