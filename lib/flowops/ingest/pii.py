"""Personal data handling: canonical msisdn, keyed pseudonyms, masking of free text.

`sub_id` is HMAC-SHA256(key, canonical msisdn), built from Spark's own sha2/unhex so no Python UDF runs
per row, and identical to Python's `hmac` (tests prove it). The key comes from `FLOWOPS_PII_KEY`; without
it, a labelled demo key is used only when the conf allows it, and the log says so.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from pyspark.sql import Column
from pyspark.sql import functions as F

from flowops.config import PiiSettings
from flowops.errors import ConfigError

log = logging.getLogger(__name__)

DEMO_KEY = "flowops-DEMO-key-not-secret"
SUB_ID_HEX = 24  # 96 bits: collision-free in practice for an operator's whole base
_BLOCK = 64
MSISDN_PATTERN = r"^1[3-9][0-9]{9}$"


def pii_key(settings: PiiSettings, environ: dict[str, str] | None = None) -> bytes:
    """The pseudonymisation key, from the environment or (if allowed) the labelled demo key."""
    environ = os.environ if environ is None else environ
    key = environ.get(settings.key_env, "")
    if key:
        return key.encode("utf-8")
    if not settings.allow_demo_key:
        raise ConfigError(f"{settings.key_env} is not set and pii.allow_demo_key is false: set the "
                          "pseudonymisation key in the environment")
    log.warning("%s not set: using the labelled DEMO pseudonymisation key (fine for demos, never for "
                "production data)", settings.key_env)
    return DEMO_KEY.encode("utf-8")


def normalise_msisdn(raw: Column) -> Column:
    """Canonical 11-digit mobile number, or null when it is not one.

    Accepts the 86 / +86 / 0086 country prefixes and surrounding spaces; returns null for anything that is
    not a mainland mobile number afterwards.
    """
    digits = F.regexp_replace(F.trim(raw), r"^(\+86|0086|86)(?=1[0-9]{10}$)", "")
    return F.when(digits.rlike(MSISDN_PATTERN), digits)


def sub_id(msisdn: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, msisdn) as the first 24 hex characters; null msisdn gives null."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner_pad = bytes(b ^ 0x36 for b in key)
    outer_pad = bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), F.encode(msisdn, "UTF-8")), 256))
    outer = F.sha2(F.concat(F.lit(outer_pad), inner), 256)
    return F.substring(outer, 1, SUB_ID_HEX)


def sub_id_python(msisdn: str, key: bytes) -> str:
    """The same pseudonym computed in Python (for tools and tests)."""
    return hmac.new(key, msisdn.encode("utf-8"), hashlib.sha256).hexdigest()[:SUB_ID_HEX]


PERSONAL_FIELD_MASK = "#"


def mask_fields(line: Column, split_pattern: str, joiner: str, personal: tuple[int, ...],
                field_count: int) -> Column:
    """A raw line safe to keep outside restricted/: when it has `field_count` fields, every digit of the
    personal fields (msisdn, IMSI, IMEI by position) becomes '#', whatever their shape; otherwise (the
    positions are unknown) digit runs that look like numbers, with spaces or dashes inside, are masked."""
    parts = F.split(line, split_pattern, -1)
    by_position = F.array_join(F.transform(parts, lambda value, i: F.when(
        i.isin(*personal), F.regexp_replace(value, r"\d", PERSONAL_FIELD_MASK)).otherwise(value)), joiner)
    loose = F.regexp_replace(mask_digits(line), r"\+?\d[\d \-]{8,}\d", "###")
    return F.when(F.size(parts) == field_count, mask_digits(by_position)).otherwise(loose)


def mask_digits(text: Column) -> Column:
    """Mask long digit runs (phone numbers, IMEIs, IMSIs) in free text: 13812345678 -> 138******78."""
    return F.regexp_replace(text, r"(\d{3})\d{6,}(\d{2})", "$1******$2")
