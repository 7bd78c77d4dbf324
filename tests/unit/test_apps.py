"""App identification: the shipped rules against hand-written tables, and Spark agreeing with the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from flowops.errors import ConfigError
from flowops.ingest.apps import AppRules, identify_apps

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def rules() -> AppRules:
    return AppRules.load(ROOT / "conf")


def read_table(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_shipped_rules_cover_at_least_150_apps(rules):
    assert rules.app_count >= 150
    assert {"social", "video", "games", "shopping", "operator"} <= {r.category for r in rules.rules}


def test_hosts_resolve_to_the_hand_written_expectations(rules):
    rows = read_table("app_hosts_expected.csv")
    wrong = [(r["host"], r["expected_app"], rules.match(r["host"]).app_id) for r in rows
             if rules.match(r["host"]).app_id != r["expected_app"]]
    assert len(rows) >= 250
    assert wrong == []


def test_user_agents_resolve_to_the_hand_written_expectations(rules):
    rows = read_table("app_ua_expected.csv")
    wrong = [(r["user_agent"][:60], r["expected_app"], rules.match(None, user_agent=r["user_agent"]).app_id)
             for r in rows if rules.match(None, user_agent=r["user_agent"]).app_id != r["expected_app"]]
    assert wrong == []


def test_a_strong_app_token_beats_a_vendor_cdn_host(rules):
    douyin_on_cdn = rules.match("p3.pstatp.com", user_agent="aweme/29.1.0 (Linux; Android 13)")
    assert (douyin_on_cdn.app_id, rules.match("p3.pstatp.com").app_id) == ("douyin", "bytedance_other")


def test_spark_and_the_python_matcher_agree(spark, rules):
    hosts = read_table("app_hosts_expected.csv")
    agents = read_table("app_ua_expected.csv")
    records = [(f"h{i}", r["host"], None, "/mmtls/x" if i % 7 == 0 else None, None, 443, "HTTP")
               for i, r in enumerate(hosts)]
    records += [(f"s{i}", None, r["host"], None, agents[i % len(agents)]["user_agent"], 443, "HTTPS")
                for i, r in enumerate(hosts)]
    records += [(f"u{i}", None, None, None, r["user_agent"], 8080, "HTTP") for i, r in enumerate(agents)]
    records += [("szshort", "szshort.weixin.qq.com", None, "/mmtls/abc", None, 80, "HTTP"),
                ("nohost", None, None, None, None, 5000, "QUIC"), ("nulls", None, None, None, None, None, None)]
    df = spark.createDataFrame(records, "record_id string, host string, sni string, uri string, "
                                        "user_agent string, server_port int, protocol string")

    out = {r.record_id: (r.app_id, r.app_rule) for r in identify_apps(df, rules).collect()}

    expected = {}
    for record_id, host, sni, uri, agent, port, protocol in records:
        match = rules.match(host, sni, uri, agent, port, protocol)
        expected[record_id] = (match.app_id, match.rule_id or None)
    disagreements = {k: (out[k], expected[k]) for k in expected if out[k] != expected[k]}
    assert len(out) == len(records)
    assert disagreements == {}
    assert out["szshort"][1].endswith(":wechat:5")  # the uri_prefix rule, not the host rule


def test_rule_mistakes_name_the_file_and_the_app(tmp_path):
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "a.yml").write_text("category: social\napps:\n  - id: one\n    name: One\n    rules:\n"
                                "      - host: [one.com]\n        confidence: 0.9\n")
    (apps / "b.yml").write_text("category: social\napps:\n  - id: two\n    name: Two\n    rules:\n"
                                "      - host: [one.com]\n        confidence: 0.9\n")
    with pytest.raises(ConfigError, match=r"b.yml: app 'two' claims host 'one.com', which app 'one' \(a.yml\)"):
        AppRules.load(tmp_path)

    (apps / "b.yml").write_text("category: social\napps:\n  - id: two\n    name: Two\n    rules:\n"
                                "      - ua: [Mozilla]\n        confidence: 2\n")
    with pytest.raises(ConfigError) as err:
        AppRules.load(tmp_path)
    assert "apps.0.rules.0.ua: ua tokens ['Mozilla'] appear in most user agents" in str(err.value)
    assert "apps.0.rules.0.confidence: Input should be less than or equal to 1" in str(err.value)


def test_names_are_normalised_and_free_text_masked_once_per_distinct_value(spark, rules):
    df = spark.createDataFrame(
        [("r1", "API.Weixin.QQ.com.", "", "/13812345678/x", "MicroMessenger/8.0 13812345678", 443, "HTTP"),
         ("r2", "", "[2001:db8::1]:443", "", "", 443, "QUIC"),
         ("r3", "m.taobao.com:8080", "", "", "", 8080, "HTTP")],
        "record_id string, host string, sni string, uri string, user_agent string, server_port int, protocol string")

    out = {r.record_id: r for r in identify_apps(df, rules).collect()}

    assert (out["r1"].host, out["r1"].sni, out["r1"].uri) == ("api.weixin.qq.com", None, "/138******78")
    assert out["r1"].user_agent == "MicroMessenger/8.0 138******78" and out["r1"].app_id == "wechat"
    assert (out["r2"].host, out["r2"].sni) == (None, "2001:db8::1")
    assert (out["r3"].host, out["r3"].app_id) == ("m.taobao.com", "taobao")
