"""Pseudonyms and masking: Spark's HMAC equals Python's, numbers normalise, free text is masked."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from flowops.config import PiiSettings
from flowops.errors import ConfigError
from flowops.ingest.pii import DEMO_KEY, mask_digits, mask_fields, normalise_msisdn, pii_key, sub_id, sub_id_python


def test_msisdn_normalisation(spark):
    raw = ["13812345678", "8613812345678", "+8613812345678", "008613812345678", " 13812345678 ",
           "1381234567", "23812345678", "138123456789", "1381234567a", "", None, "86138123456"]
    df = spark.createDataFrame([(r,) for r in raw], "raw string")

    out = [r[0] for r in df.select(normalise_msisdn(F.col("raw"))).collect()]

    assert out == ["13812345678"] * 5 + [None] * 7


def test_spark_hmac_equals_python_hmac(spark):
    numbers = ["13812345678", "15900000001", "19800000000"]
    for key in (b"k", b"a much longer key " * 8):
        df = spark.createDataFrame([(n,) for n in numbers] + [(None,)], "m string")

        got = [r[0] for r in df.select(sub_id(F.col("m"), key)).collect()]

        assert got == [sub_id_python(n, key) for n in numbers] + [None]
        assert len(set(got[:3])) == 3 and all(len(g) == 24 for g in got[:3])


def test_key_comes_from_the_environment_or_the_labelled_demo_key(caplog):
    assert pii_key(PiiSettings(), {"FLOWOPS_PII_KEY": "secret"}) == b"secret"
    assert pii_key(PiiSettings(), {}) == DEMO_KEY.encode()
    assert "DEMO pseudonymisation key" in caplog.text
    with pytest.raises(ConfigError, match="FLOWOPS_PII_KEY is not set and pii.allow_demo_key is false"):
        pii_key(PiiSettings(allow_demo_key=False), {})


def test_masking_hides_long_digit_runs_only(spark):
    df = spark.createDataFrame([("/bind?mobile=13812345678&n=42",), ("imei 862345678901234 ok",), (None,)], "t string")

    out = [r[0] for r in df.select(mask_digits(F.col("t"))).collect()]

    assert out == ["/bind?mobile=138******78&n=42", "imei 862******34 ok", None]


def test_personal_fields_are_masked_by_position_whatever_their_shape(spark):
    lines = ["r1|138-1234-5678|46000 123|35-209900-176148-1|2026-01-05 10:00:00",
             "r2|1381234567|x|y",                       # wrong field count: positions unknown
             "r3|138 1234 5678 and more"]
    df = spark.createDataFrame([(line,) for line in lines], "line string")

    out = [r[0] for r in df.select(mask_fields(F.col("line"), r"\|", "|", (1, 2, 3), 5)).collect()]

    assert out[0] == "r1|###-####-####|##### ###|##-######-######-#|2026-01-05 10:00:00"
    assert out[1] == "r2|###|x|y"                        # positions unknown: any 10+ digit number goes
    assert out[2] == "r3|### and more"
