"""xDR parsing: every rule names its reason; good lines come out typed; late records keep their own day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa

from flowops.ingest.xdr import ParseRules, RecordParser, imei_valid, parse_lines

ROOT = Path(__file__).resolve().parents[2]
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


RULES = ParseRules(late_days=3, idle_hours=(23, 7), timezone="Asia/Shanghai")


class Parsed(list):
    """Rows of a parse, each a dict, so tests read `out[0]["reason"]`; `.collect()` as for a DataFrame."""

    def collect(self) -> list:
        return [Row(r) for r in self]

    def first(self):  # noqa: ANN201
        return Row(self[0])

    def select(self, *columns: str) -> Parsed:
        return Parsed({c: r[c] for c in columns} for r in self)


class Row(dict):
    __getattr__ = dict.__getitem__


def parse(_spark, values):
    raw = pa.array([v if isinstance(v, bytes) else v.encode() for v in values], pa.binary())
    return Parsed(pa.table(parse_lines(raw, DAY, RULES)).to_pylist())


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
        "invalid_rat": line(rat="LTE"),
        "invalid_protocol": line(protocol="FTP"),
    }
    cases["empty_rat"] = line(rat="")
    cases["rat_code"] = line(rat="6")               # a 3GPP RAT-type number (E-UTRAN), not the contract's text
    cases["bad_port"] = line(server_port="70000")
    cases["blank"] = ""
    out = parse(spark, list(cases.values())).select("reason").collect()

    expected = list(cases)[:-4] + ["invalid_rat", "invalid_rat", "bad_number", "wrong_field_count"]
    assert [r.reason for r in out] == expected


def test_bad_encoding_is_detected_on_the_raw_bytes(spark):
    chinese = line(user_agent="华为浏览器/1.0")
    out = parse(spark, [line().encode() + b"\xff", chinese.encode("gbk"), chinese.encode()]).collect()

    assert [r.reason for r in out] == ["bad_encoding", "bad_encoding", None]
    assert out[0].value == line().encode() + b"\xff" and out[2].value is None   # raw bytes kept for rejects only


def test_a_good_line_is_typed_and_normalised(spark):
    out = parse(spark, [line(msisdn="+8613812345678")]).first()

    assert out.reason is None
    assert (out.dt, out.record_id, out.msisdn, out.tac) == ("2026-01-05", b"r1", "13812345678", "86345678")
    local = out.start_time.astimezone(ZoneInfo("Asia/Shanghai"))   # an instant, written in local time
    assert local.replace(tzinfo=None) == dt.datetime(2026, 1, 5, 10, 0, 0)
    assert out.duration_ms == 5250
    # Names stay as landed here; identification normalises them once per distinct value (test_apps).
    assert (out.host, out.sni, out.server_port, out.ul_bytes, out.dl_bytes) == ("", "API.Weixin.QQ.com.", 443,
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
        line(start_time="2026-01-05 10:00:00.123456", end_time="2026-01-05 10:00:01.5"),
        line(rat="5g", protocol="quic"),                 # the contract's values in any case
    ]
    out = parse(spark, values).collect()

    assert [r.reason for r in out] == [None] * len(values)
    assert out[0].tac is None and out[1].tac == "86345678"
    assert (out[4].dt, out[4].is_idle) == ("2026-01-03", True)
    assert out[5].host == "m.taobao.com:8080"   # the port goes in identification (test_apps)
    assert out[6].duration_ms == 1377   # whole milliseconds of each end
    assert (out[7].rat, out[7].protocol) == ("5G", "QUIC")


def test_placeholder_imei_and_too_late_records_are_rejected(spark):
    out = parse(spark, [line(imei="000000000000000"),
                        line(start_time="2026-01-01 10:00:00", end_time="2026-01-01 10:00:01"),
                        line(start_time="2026-01-06 00:00:00", end_time="2026-01-06 00:00:01")]).collect()

    assert [r.reason for r in out] == ["invalid_imei", "timestamp_out_of_window", "timestamp_out_of_window"]


def test_records_leave_the_reader_identified_pseudonymised_and_minimised():
    from types import SimpleNamespace

    from flowops.ingest.apps import AppRules
    from flowops.ingest.pii import sub_id_python

    apps = AppRules.load(ROOT / "conf")
    parser = RecordParser(RULES, apps, SimpleNamespace(value=b"k"))   # a broadcast has .value
    uris = ("/bind?m=13812345678", "/13812345678/x", "/", "", "x/y", "//a")
    values = [line(protocol="HTTP", host="API.Weixin.QQ.com.", uri=u, user_agent="MicroMessenger/8.0 13812345678")
              for u in uris]

    out = pa.table(parser(pa.array([v.encode() for v in values], pa.binary()),
                          [(f"usage/dt={DAY.isoformat()}/hour=10/f.txt.gz", len(values))])).to_pylist()

    assert [r["uri"] for r in out] == ["/bind", "/138******78", None, None, None, None]
    assert {(r["host"], r["sni"], r["user_agent"], r["app_id"]) for r in out} == {
        ("api.weixin.qq.com", "api.weixin.qq.com", "MicroMessenger/8.0 138******78", "wechat")}
    assert {r["sub_id"] for r in out} == {sub_id_python("13812345678", b"k")}


def test_only_the_contract_timestamp_shape_is_accepted(spark):
    shapes = ["2026-01-05T10:00:00", "2026-01-05", "2026-01-05 10:00:00Z", "2026-01-05 10:00:00.1+08:00",
              "2026-01-05 10:00", "2026-1-5 10:00:00", " 2026-01-05 10:00:00x", "2026-01-05 10:00:00.",
              "2026-01-05 10:00:00.1234567", "2026-02-30 10:00:00", "2026-01-05 10:61:00", "N/A"]
    out = parse(spark, [line(start_time=s) for s in shapes]).select("reason").collect()

    assert [r.reason for r in out] == ["bad_timestamp"] * len(shapes)


def test_numbers_are_plain_digits(spark):
    out = parse(spark, [line(ul_bytes=v) for v in ("+5", " 5x", "5.0", "1e3", "0x1F", "-", "--5", "١٢")]
                + [line(ul_bytes="-5", dl_bytes="abc"), line(server_port="-443"), line(ul_bytes="0", dl_bytes="00")]
                ).select("reason").collect()

    assert [r.reason for r in out] == ["bad_number"] * 10 + [None]


def test_imei_rules():
    imeis = ["", "863456789012341", "863456789012345", "86345678901234", "8634567890123401", "000000000000000",
             "11111111111111", "8634567890123", "86345678901234567", "86345678901234a", " 863456789012341"]

    assert list(imei_valid(pa.array(imeis))) == [True, True, False, True, True, False, False, False, False,
                                                 False, False]


def test_a_batch_of_several_files_is_judged_and_tallied_per_file():
    from types import SimpleNamespace

    from flowops.ingest.apps import AppRules

    def make() -> RecordParser:
        return RecordParser(RULES, AppRules.load(ROOT / "conf"), SimpleNamespace(value=b"k"))

    # The same late line is accepted from the file of 2026-01-05 and out of the window of 2026-01-09's file.
    late = line(start_time="2026-01-03 10:00:00", end_time="2026-01-03 10:00:01")
    files = {"usage/dt=2026-01-05/hour=10/a.txt.gz": [line(), late, line(msisdn="1")],
             "usage/dt=2026-01-09/hour=00/b.txt.gz": [late, late.replace("r1", "r2"), line(imei="1")],
             "usage/dt=2026-01-09/hour=01/c.txt.gz": [line(record_id="")]}
    alone, each = make(), {}
    for name, values in files.items():
        each[name] = pa.table(alone(pa.array([v.encode() for v in values], pa.binary()), [(name, len(values))]))
    together = make()
    batch = pa.array([v.encode() for values in files.values() for v in values], pa.binary())

    out = pa.table(together(batch, [(name, len(values)) for name, values in files.items()]))

    assert out.to_pylist() == pa.concat_tables(each.values()).to_pylist()
    assert out["landing_day"].to_pylist() == ["2026-01-05"] * 3 + ["2026-01-09"] * 4
    assert out["reason"].to_pylist() == [None, None, "invalid_msisdn"] + ["timestamp_out_of_window"] * 2 + [
        "invalid_imei", "missing_record_id"]
    summaries = {name: together.finish(name) for name in files}
    assert summaries == {name: alone.finish(name) for name in files}
    # The subscriber of a's two accepted records, first seen on the late one's day; b and c accepted nothing.
    subscriber = {"msisdn": out["msisdn"][0].as_py(), "sub_id": out["sub_id"][0].as_py(), "first_seen": "2026-01-03"}
    assert subscriber["msisdn"] and subscriber["sub_id"]
    assert summaries == {
        "usage/dt=2026-01-05/hour=10/a.txt.gz": {"file_reasons": {"invalid_msisdn": 1},
                                                 "file_days": ["2026-01-03", "2026-01-05"], "file_keys": [subscriber]},
        "usage/dt=2026-01-09/hour=00/b.txt.gz": {"file_reasons": {"timestamp_out_of_window": 2, "invalid_imei": 1},
                                                 "file_days": [], "file_keys": []},
        "usage/dt=2026-01-09/hour=01/c.txt.gz": {"file_reasons": {"missing_record_id": 1}, "file_days": [],
                                                 "file_keys": []}}
