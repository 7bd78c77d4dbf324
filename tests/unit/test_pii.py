"""Pseudonyms and masking: Spark's HMAC equals Python's, numbers normalise, free text is masked."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from flowops.config import PiiSettings
from flowops.errors import ConfigError
from flowops.ingest.pii import DEMO_KEY, Pseudonymiser, mask_digits, mask_fields, pii_key, sub_id_python
from flowops.ingest.xdr import normalise_msisdn


def test_msisdn_normalisation(spark):
    raw = ["13812345678", "8613812345678", "+8613812345678", "008613812345678", " 13812345678 ",
           "1381234567", "23812345678", "138123456789", "1381234567a", "", None, "86138123456"]
    out = normalise_msisdn(pa.array(raw, pa.string())).to_pylist()

    assert out == ["13812345678"] * 5 + [None] * 7


def test_spark_pseudonyms_are_the_standard_hmac(spark):
    import hashlib
    import hmac

    numbers = ["13812345678", "15900000001", "19800000000"]
    for key in (b"k", b"a much longer key " * 8):
        df = spark.createDataFrame([(n,) for n in numbers] + [(None,)], "m string")
        pseudonymiser = Pseudonymiser(spark, key)

        got = [r[0] for r in df.select(pseudonymiser.sub_id(F.col("m"))).collect()]

        pseudonymiser.close()
        assert got == [hmac.new(key, n.encode(), hashlib.sha256).hexdigest()[:24] for n in numbers] + [None]
        assert got[:3] == [sub_id_python(n, key) for n in numbers]
        assert len(set(got[:3])) == 3 and all(len(g) == 24 for g in got[:3])


def test_key_comes_from_the_environment_or_the_labelled_demo_key(caplog):
    assert pii_key(PiiSettings(), {"FLOWOPS_PII_KEY": "secret"}) == b"secret"
    assert pii_key(PiiSettings(), {"FLOWOPS_PII_KEY": "secret"}, demo=True) == b"secret"
    assert pii_key(PiiSettings(), {}, demo=True) == DEMO_KEY.encode()
    assert "DEMO pseudonymisation key" in caplog.text
    with pytest.raises(ConfigError, match=r"FLOWOPS_PII_KEY is not set: .*\(only `flowops demo` runs on the public"):
        pii_key(PiiSettings(), {})


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
