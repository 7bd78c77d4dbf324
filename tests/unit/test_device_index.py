"""flowops' device-detector (RE2 sets choosing which expressions to try) answers as device-detector does: on the
labelled handsets, the app agents, the agents the generator writes and a sample of device-detector's own test agents;
and the look-around removal it relies on only ever widens an expression."""

from __future__ import annotations

import csv
from pathlib import Path

import device_detector
import pytest
import regex
import yaml
from device_detector import DeviceDetector as Stock

from flowops.ingest.device_index import Candidates, DeviceDetector, without_lookarounds

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURES = Path(device_detector.__file__).parent / "tests" / "fixtures" / "upstream"


def answer(detector: type, user_agent: str) -> tuple:
    found = detector(user_agent, skip_bot_detection=True, check_cache=False)
    if not found.is_worthless():
        found.parse_os()
        found.parse_device()
    return found.device_brand(), found.device_model(), found.os_name(), str(found.device_type())


def labelled_agents() -> list[str]:
    agents = []
    for name in ("handsets.csv", "app_ua_expected.csv"):
        with (DATA / name).open(encoding="utf-8", newline="") as handle:
            agents += [row["user_agent"] for row in csv.DictReader(handle)]
    return agents


def fixture_agents(every: int, files: int = 5) -> list[str]:
    """Every `every`-th agent of every `files`-th file of device-detector's own test data (phones, tablets, TVs, feature
    phones, ...). All of them answer alike too: `python -m tests.validation.device_index`, about 6 minutes."""
    agents = []
    for path in sorted(FIXTURES.glob("*.yml"))[::files]:
        entries = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if isinstance(entries, list):
            agents += [str(e["user_agent"]) for e in entries if e.get("user_agent")]
    return list(dict.fromkeys(agents))[::every]


def generated_agents(every: int) -> list[str]:
    """Every `every`-th of the distinct agents the generator writes (its handsets x apps)."""
    from flowops.synth.context import WorkerContext, load_apps, load_devices

    tables = object.__new__(WorkerContext)   # only the string tables, without a generated population
    tables.apps, tables.devices = load_apps(), load_devices()
    return sorted(set(tables._user_agents().to_pylist()) - {""})[::every]


def test_answers_as_device_detector_on_labelled_generated_and_its_own_test_agents():
    agents = list(dict.fromkeys(labelled_agents() + fixture_agents(every=40) + generated_agents(every=30)))
    assert len(agents) > 800
    stock = [answer(Stock, a) for a in agents]
    ours = [answer(DeviceDetector, a) for a in agents]
    assert [(a, s, o) for a, s, o in zip(agents, stock, ours, strict=True) if s != o] == []
    # Not a vacuous comparison: most of these agents name a brand and a model.
    assert sum(bool(brand and model) for brand, model, _, _ in ours) > 0.6 * len(agents)


def test_only_expressions_that_can_match_are_tried_and_in_device_detectors_order():
    from device_detector.lazy_regex import RegexLazyIgnore

    entries = [{"regex": RegexLazyIgnore(p)} for p in (
        r"Nokia(?!Browser)", r"(?<!Redmi )Note 7", r"HUAWEI[ _]?([^/;]+) Build", r"iPhone", r"Note \d")]
    found = Candidates(entries)
    kept = found.of("Mozilla/5.0 (Linux; Android 9; Redmi Note 7 Build/PKQ1) NokiaBrowser/1.0")
    assert [e["regex"] for e in kept] == [entries[i]["regex"] for i in (0, 1, 4)]   # wider than a match, in order
    assert found.of("Dalvik/2.1.0 (Linux; U; Android 12; ELE-AL00)") == []
    odd = "Mozilla/5.0 (Linux; Android 12; 红米 Note 7)"   # not plain ASCII: every expression is tried
    assert found.of(odd) == entries


@pytest.mark.parametrize(("pattern", "rewritten"), [
    (r"Nokia(?!Browser|Webview|; GT-I8750)|Lumia", r"Nokia(?:)|Lumia"),
    (r"(?<!(?:Redmi|Tegra) )NOTE 7", r"(?:)NOTE 7"),
    (r"a(?=b\)c)[(?!x]\(?!y(?P<n>z)(?<m>w)", r"a(?:)[(?!x]\(?!y(?P<n>z)(?<m>w)"),
    (r"[]()](?<=[)])q", r"[]()](?:)q"),
    (r"ab(?!c){2}", r"ab(?:){2}"),
])
def test_look_arounds_and_only_they_become_empty_groups(pattern, rewritten):
    assert without_lookarounds(pattern) == rewritten


@pytest.mark.parametrize(("pattern", "flags", "text"), [
    (r"Nokia(?!Browser)", regex.IGNORECASE, "nokia 6"),
    (r"(?<!Redmi )Note 7", regex.IGNORECASE, "Galaxy Note 7"),
    (r"ab(?!c){2}", regex.IGNORECASE, "ab"),                # a quantified look-around
    (r"ab(?=c){2,}", regex.IGNORECASE, "abc"),
    (r"a(?=b\)c)b\)c[(?!x]", regex.IGNORECASE, "ab)c!"),
    (r"(?=[[:alpha:])(])x", regex.IGNORECASE, "x"),        # RE2 would read these more narrowly than `regex`
    (r"a{,2}b", regex.IGNORECASE, "aab"),
    ("\u0130", regex.IGNORECASE, "i"),
    (r"a b", regex.IGNORECASE | regex.VERBOSE, "ab"),       # a flag RE2 is not given
    (r"NOTE", 0, "NOTE"),                                    # case-sensitive: the sets' reading is wider
])
def test_an_expression_that_matches_is_always_a_candidate(pattern, flags, text):
    from device_detector.lazy_regex import RegexLazy

    assert regex.search(pattern, text, flags)   # the case is real: device-detector's engine matches
    entry = {"regex": RegexLazy(pattern, flags)}
    assert Candidates([entry]).of(text) == [entry]


def test_the_parsers_device_detector_runs_are_the_filtering_ones():
    from device_detector.parser.device.device import Device as StockDevice
    from device_detector.parser.operating_system import OS as StockOS

    from flowops.ingest import device_index

    assert device_index.Device in DeviceDetector.DEVICE_PARSERS and StockDevice not in DeviceDetector.DEVICE_PARSERS
    agent = "Mozilla/5.0 (Linux; Android 13; 22081212C Build/TKQ1.220829.002) AppleWebKit/537.36 Mobile Safari/537.36"
    for ours, stock in ((device_index.Device, StockDevice), (device_index.OS, StockOS)):
        tried, every = len(ours(agent, None).regex_list), len(stock(agent, None).regex_list)
        assert 0 < tried < every / 10, (ours, tried, every)
    found = DeviceDetector(agent, skip_bot_detection=True)
    found.parse_os()
    found.parse_device()
    assert type(found.os) is device_index.OS and type(found.device) is device_index.Device
    assert (found.device_brand(), found.os_name()) == ("Xiaomi", "Android")
