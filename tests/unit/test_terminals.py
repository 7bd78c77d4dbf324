"""Terminal identification: TAC table first, real user agents as the fallback, Spark equal to the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowops.errors import ConfigError
from flowops.ingest.terminals import identify_terminals, load_reference, lookup, reference_df

ROOT = Path(__file__).resolve().parents[2]

# Real user agents of handsets, with what a person reading them would say (model: the marketing name when the
# device data knows the model code).
AGENTS = [
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.0 Mobile/15E148 Safari/604.1", ("Apple", "iPhone", "iOS", True)),
    ("Mozilla/5.0 (Linux; Android 14; SM-S9180 Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36", ("Samsung", "Galaxy S23 Ultra", "Android", True)),
    ("Mozilla/5.0 (Linux; Android 12; HarmonyOS; NOH-AN00; HMSCore 6.13.0.302) AppleWebKit/537.36 (KHTML, like "
     "Gecko) Chrome/99.0.4844.88 HuaweiBrowser/14.0.5.302 Mobile Safari/537.36",
     ("Huawei", "Mate 40 Pro", "HarmonyOS", True)),
    ("Mozilla/5.0 (Linux; Android 13; 22081212C Build/TKQ1.220829.002; wv) AppleWebKit/537.36 (KHTML, like "
     "Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36", ("Xiaomi", "12T Pro", "Android", True)),
    ("Mozilla/5.0 (Mobile; Nokia 8110 4G; rv:48.0) Gecko/48.0 Firefox/48.0 KAIOS/2.5",
     ("Nokia", "8110", "KaiOS", False)),
    ("Nokia105/2.0 (14.0.1) Profile/MIDP-2.1 Configuration/CLDC-1.1", ("Nokia", "105", None, False)),
]


@pytest.fixture(scope="module")
def reference():
    return load_reference(ROOT / "conf")


def test_tac_table_answers_first(reference):
    tac, known = next(iter(reference.items()))

    found = lookup(reference, tac, AGENTS[0][0])

    assert found == known and found.source == "tac"


@pytest.mark.parametrize(("agent", "expected"), AGENTS)
def test_user_agent_fallback_on_real_agents(reference, agent, expected):
    found = lookup(reference, "99999999", agent)

    assert (found.brand, found.model, found.os, found.is_smart) == expected
    assert found.source == "user_agent" and found.network_gen is None


@pytest.mark.parametrize("agent", [
    "com.ss.android.ugc.aweme/290101 (Linux; U; Android 4.4.4; zh_CN; 2014501; Build/KTU84P; Cronet/TTNetVersion:5e)",
    "AMAP_Location_SDK_Android 9.8.2 AMap/13.05.1.2198 (Android 4.4.4; 2014501)",
    "android/7.6.1 (android 4.4.4; ; 2014501) DYZB/1",
    "HYSDK(Android, 11.7.1) adr_huya&11.7.1&official (2014501; Android 4.4.4)",
])
def test_an_app_agent_is_identified_by_the_model_code_in_its_own_parenthesis(reference, agent):
    # The code a browser agent carries before " Build/" names the same handset in each app's spelling (the whole
    # app agent means nothing to the device data).
    browser = lookup(reference, "99999999", "Mozilla/5.0 (Linux; Android 4.4.4; 2014501 Build/KTU84P) AppleWebKit/"
                                            "537.36 (KHTML, like Gecko) Chrome/33.0.0.0 Mobile Safari/537.36")
    found = lookup(reference, "99999999", agent)

    assert (found.brand, found.model, found.os, found.is_smart) == (browser.brand, browser.model, "Android", True)
    assert found.brand == "Xiaomi"


def test_a_model_code_the_device_data_does_not_know_is_kept_with_the_os_the_agent_names(reference):
    found = lookup(reference, "99999999", "android/7.6.1 (android 13; ; M181Q) DYZB/1")

    assert (found.brand, found.model, found.os, found.is_smart) == (None, "M181Q", "Android", True)


def test_nothing_to_go_on_is_unknown(reference):
    assert lookup(reference, "99999999", "okhttp/4.9.3").source == "unknown"
    assert lookup(reference, None, None).source == "unknown"


def test_spark_agrees_with_the_python_lookup(spark, reference):
    tacs = list(reference)[:5] + ["99999999", None]
    rows = [(tac, agent) for tac in tacs for agent, _ in AGENTS] + [("99999999", None), ("12345678", "curl/8.0")]
    df = spark.createDataFrame(rows, "tac string, user_agent string")

    out = identify_terminals(df, reference_df(spark, reference)).collect()

    got = sorted((r.tac or "", r.user_agent or "", r.brand, r.model, r.os, r.network_gen, r.is_smart,
                  r.price_tier, r.terminal_source) for r in out)
    want = []
    for tac, agent in rows:
        t = lookup(reference, tac, agent)
        want.append((tac or "", agent or "", t.brand, t.model, t.os, t.network_gen, t.is_smart, t.price_tier,
                     t.source))
    assert got == sorted(want)


@pytest.mark.parametrize(("line", "message"), [
    ("1234567,A,B,Android,4G,true,mid", "tac must be 8 digits, got '1234567'"),
    ("12345678,A,B,Android,6G,true,mid", "network_gen must be one of 2G, 3G, 4G, 5G, got '6G'"),
    ("12345678,A,B,Android,4G,yes,mid", "is_smart must be true or false, got 'yes'"),
])
def test_reference_mistakes_name_file_and_line(tmp_path, line, message):
    folder = tmp_path / "terminals"
    folder.mkdir()
    (folder / "tacs.csv").write_text("tac,brand,model,os,network_gen,is_smart,price_tier\n" + line + "\n")

    with pytest.raises(ConfigError, match=f"tacs.csv:2: {message}"):
        load_reference(tmp_path)


def test_handsets_known_only_by_agent_get_a_network_generation_and_price_tier_from_the_documented_rules(
        reference, spark):
    from flowops.ingest.terminals import HandsetClasses

    classes = HandsetClasses.load(ROOT / "conf")
    found = {agent: lookup(reference, "99999999", agent, classes) for agent, _ in AGENTS}
    assert [(t.network_gen, t.price_tier) for t in found.values()] == [
        ("4G", "high"), ("4G", "flagship"), ("4G", "flagship"), ("4G", "high"), ("4G", "low"), ("2G", "low")]
    # A TAC the table knows keeps the table's values, whatever the rules say.
    tac, known = next(iter(reference.items()))
    assert lookup(reference, tac, AGENTS[0][0], classes) == known
    rows = [("99999999", agent) for agent, _ in AGENTS]
    out = identify_terminals(spark.createDataFrame(rows, "tac string, user_agent string"),
                             reference_df(spark, reference), classes).collect()
    assert {(r.user_agent, r.network_gen, r.price_tier) for r in out} == {
        (agent, t.network_gen, t.price_tier) for agent, t in found.items()}


@pytest.mark.parametrize(("text", "message"), [
    ("price_tier:\n  - {tier: cheap}\n", "price_tier rule 1: tier must be one of low, mid, high, flagship"),
    ("network_gen:\n  - {model: '5G(', gen: 5G}\n", "network_gen rule 1: model is not a regular expression"),
    ("network_gen:\n  - {gen: 4G, colour: red}\n", "network_gen rule 1: expected gen with optional"),
    ("prices: []\n", "unknown key(s) ['prices']"),
])
def test_handset_class_mistakes_name_the_file_and_rule(tmp_path, text, message):
    from flowops.ingest.terminals import HandsetClasses

    (tmp_path / "terminals").mkdir()
    (tmp_path / "terminals" / "classes.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        HandsetClasses.load(tmp_path)


@pytest.mark.parametrize("agent", [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "CtripWireless_8.64.2 iPhone_16.1",
    "BaiduMap/18.8.0 (Linux; Android 4.4.4; 2014501)",
    "com.ss.android.ugc.aweme/290101 (Linux; U; Android 13; zh_CN; V2309A; Build/TP1A.220624.014; Cronet/TTNetVersion)",
    "Mozilla/5.0 (Linux; Android 12; BLK-AL00 Build/HUAWEIBLK-AL00; wv) IqiyiApp/iqiyi IqiyiVersion/15.1.0",
    "Mozilla/5.0 (Linux; Andr0id 9; BRAVIA 4K UR2 Build/PTT1.190515.001.S52) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/108.0.0.0 Safari/537.36 OPR/46.0.2207.0 OMI/4.24.3.105.Pinot.80 Model/Sony-BRAVIA-4K-UR2",
    "Mozilla/5.0 (Linux; Coolita OS QJY/2.0.1; 8H86) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/88.0 Safari/537.36",
    "okhttp/4.9.3", "Dalvik/2.1.0 (Linux; U; Android 13; 22081212C Build/TKQ1.220829.002)", "", "-",
])
def test_the_device_data_is_read_without_its_client_parse_and_answers_as_its_full_parse(agent):
    from device_detector import DeviceDetector

    from flowops.ingest.terminals import _by_agent, normal_brand

    full = DeviceDetector(agent, skip_bot_detection=True).parse()
    brand = normal_brand(full.device_brand())
    expected = (brand, full.device_model() or None, full.os_name() or None) if brand else (None, None, None)

    assert _by_agent(agent) == expected


def test_the_most_sent_agent_is_looked_for_only_where_the_tac_table_lacks_the_tac_and_ties_go_to_the_greatest(spark):
    from flowops.ingest.rollup import handsets_daily

    reference = spark.createDataFrame([("86000001", "Xiaomi", "14", "Android", "5G", True, "high")],
                                      "tac string, brand string, model string, os string, network_gen string, "
                                      "is_smart boolean, price_tier string")
    sent = {("a", "86000001"): {"X": 2, "Y": 1}, ("b", None): {"Z": 2, "W": 1, None: 3},
            ("c", "35000000"): {"Alpha": 2, "Beta": 2}, ("d", "35000000"): {None: 1}}
    rows = [("2026-01-05", sub, tac, agent, 10, 5) for (sub, tac), agents in sent.items()
            for agent, n in agents.items() for _ in range(n)]
    # Both orders of the rows: the tie must not depend on it.
    for ordered in (rows, rows[::-1]):
        bronze = spark.createDataFrame(ordered, "dt string, sub_id string, tac string, user_agent string, "
                                                "ul_bytes long, dl_bytes long").repartition(3)
        out = {(r.sub_id, r.tac): (r.user_agent, r.records, r.total_bytes)
               for r in handsets_daily(bronze, reference).collect()}
        assert out == {("a", "86000001"): (None, 3, 45), ("b", None): ("Z", 6, 90),
                       ("c", "35000000"): ("Beta", 4, 60), ("d", "35000000"): (None, 1, 15)}
        # Without the table, every TAC's agent is looked for; the others' answers are the same.
        whole = {(r.sub_id, r.tac): (r.user_agent, r.records) for r in handsets_daily(bronze).collect()}
        assert whole[("a", "86000001")] == ("X", 3) and all(whole[k][0] == out[k][0] for k in out if k[0] != "a")
