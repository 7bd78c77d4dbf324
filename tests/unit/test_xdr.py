"""xDR parsing: every rule names its reason; good lines come out typed; late records keep their own day."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from flowops.ingest.xdr import parse_xdr

DAY = dt.date(2026, 1, 5)
GOOD = ["r1", "13812345678", "460001234567890", "863456789012341", "2026-01-05 10:00:00",
        "2026-01-05 10:00:05.250", "4G", "CMNET", "4601-1234", "HTTPS", "10.1.2.3", "443", "",
        "API.Weixin.QQ.com.", "", "", "100", "2000"]


def line(**changes: str) -> str:
    fields = dict(zip(range(18), GOOD, strict=True))
    names = ["record_id", "msisdn", "imsi", "imei", "start_time", "end_time", "rat", "apn", "cell_id",
             "protocol", "server_ip", "server_port", "host", "sni", "uri", "user_agent", "ul_bytes", "dl_bytes"]
    for key, value in changes.items():
        fields[names.index(key)] = value
    return "|".join(fields[i] for i in range(18))


def parse(spark, values):
    rows = [(f"usage/dt={DAY.isoformat()}/hour=10/f.txt.gz", i + 1, v) for i, v in enumerate(values)]
    df = spark.createDataFrame(rows, "source_file string, line_no long, value string")
    return parse_xdr(df, late_days=3, idle_hours=(23, 7)).orderBy("line_no")


def test_each_bad_line_gets_its_reason(spark):
    cases = {
        "wrong_field_count": line() + "|extra",
        "missing_record_id": line(record_id=""),
        "invalid_msisdn": line(msisdn="1381234567"),
        "invalid_imei": line(imei="863456789012345"),          # Luhn fails
        "bad_number": line(ul_bytes="12a3"),
        "negative_bytes": line(dl_bytes="-5"),
        "bad_timestamp": line(start_time="2026-01-05 25:00:00"),
        "end_before_start": line(end_time="2026-01-05 09:59:59"),
        "timestamp_out_of_window": line(start_time="1970-01-01 00:00:00", end_time="1970-01-01 00:00:01"),
    }
    cases["bad_port"] = line(server_port="70000")
    cases["blank"] = ""
    out = parse(spark, list(cases.values())).select("reason").collect()

    expected = list(cases)[:-2] + ["bad_number", "wrong_field_count"]
    assert [r.reason for r in out] == expected


def test_bad_encoding_is_detected_on_the_raw_bytes(spark):
    df = spark.createDataFrame([("usage/dt=2026-01-05/hour=10/f.txt.gz", 1, line())],
                               "source_file string, line_no long, value string")
    broken = df.withColumn("value", F.concat(F.col("value"), F.unhex(F.lit("FF")).cast("string")))

    out = parse_xdr(broken, 3, (23, 7)).select("reason").first()

    assert out.reason == "bad_encoding"


def test_a_good_line_is_typed_and_normalised(spark):
    parsed = parse(spark, [line(msisdn="+8613812345678")])
    out = parsed.withColumn("local_start", F.date_format("start_time", "yyyy-MM-dd HH:mm:ss.SSS")).first()

    assert out.reason is None
    assert (out.dt, out.record_id, out.msisdn, out.tac) == ("2026-01-05", "r1", "13812345678", "86345678")
    assert out.local_start == "2026-01-05 10:00:00.000"   # local (session) time, as the probe wrote it
    assert out.duration_ms == 5250
    assert (out.host, out.sni, out.server_port, out.ul_bytes, out.dl_bytes) == (None, "api.weixin.qq.com", 443,
                                                                               100, 2000)
    assert (out.rat, out.apn, out.protocol, out.is_idle) == ("4G", "cmnet", "HTTPS", False)


def test_legitimate_variants_are_accepted(spark):
    values = [
        line(imei=""),                                   # probe did not capture it
        line(imei="86345678901234"),                     # 14 digits, no check digit
        line(imei="8634567890123401"),                   # IMEISV
        line(msisdn="8613812345678"),
        line(start_time="2026-01-03 23:30:00", end_time="2026-01-03 23:31:00"),   # late arrival, idle
        line(host="m.taobao.com:8080", protocol="HTTP", sni=""),
        line() + "\r",                                   # CRLF file
    ]
    out = parse(spark, values).collect()

    assert [r.reason for r in out] == [None] * len(values)
    assert out[0].tac is None and out[1].tac == "86345678"
    assert (out[4].dt, out[4].is_idle) == ("2026-01-03", True)
    assert out[5].host == "m.taobao.com"
    assert out[6].dl_bytes == 2000


def test_placeholder_imei_and_too_late_records_are_rejected(spark):
    out = parse(spark, [line(imei="000000000000000"),
                        line(start_time="2026-01-01 10:00:00", end_time="2026-01-01 10:00:01"),
                        line(start_time="2026-01-06 00:00:00", end_time="2026-01-06 00:00:01")]).collect()

    assert [r.reason for r in out] == ["invalid_imei", "timestamp_out_of_window", "timestamp_out_of_window"]


def test_personal_numbers_in_free_text_are_masked(spark):
    out = parse(spark, [line(protocol="HTTP", host="api.example.com", uri="/bind?m=13812345678")]).first()

    assert out.uri == "/bind?m=138******78"
