"""The synthetic landing-data generator: layout, determinism, dirty data and planted truth.

The xDR files are re-read here with a small independent parser (plain Python, no generator code)
so the truth files are checked against what is really on disk.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import gzip
import json
import re
import zlib
from pathlib import Path

import pytest

from flowops.synth import GenerateResult, generate

SUBS = 200
MONTH = "2026-01"
RUN_FIRST = dt.date(2026, 1, 1)
RUN_LAST = dt.date(2026, 1, 31)
APPS_CSV = Path(__file__).resolve().parents[2] / "lib/flowops/synth/data/apps.csv"

FILE_RE = re.compile(r"^usage/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/xdr_(\d{10})_(\d+)\.txt\.gz$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{3})?$")
INT_RE = re.compile(r"^-?\d+$")
MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
LINE_KINDS = ("wrong_field_count", "bad_number", "negative_bytes", "end_before_start",
              "bad_timestamp", "invalid_msisdn", "invalid_imei", "bad_encoding", "duplicate")
ALL_KINDS = LINE_KINDS + ("late_arrival", "msisdn_prefixed", "empty_file", "truncated_gzip")
IDLE_HOURS = {23, 0, 1, 2, 3, 4, 5, 6}


# ----------------------------------------------------------------------------- the parser
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def imei_ok(value: str) -> bool:
    if value == "" or (value.isdigit() and len(value) in (14, 16)):
        return True
    return value.isdigit() and len(value) == 15 and set(value) != {"0"} and luhn_ok(value)


def parse_ts(value: str, first: dt.date = RUN_FIRST, last: dt.date = RUN_LAST
             ) -> dt.datetime | None:
    """A timestamp inside a week around the run, else None."""
    if not TS_RE.match(value):
        return None
    try:
        t = dt.datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]),
                        int(value[14:16]), int(value[17:19]),
                        int(value[20:]) * 1000 if len(value) > 19 else 0)
    except ValueError:
        return None
    if not first - dt.timedelta(days=7) <= t.date() <= last + dt.timedelta(days=7):
        return None
    return t


def classify(raw: bytes, seen: set[str], first: dt.date = RUN_FIRST, last: dt.date = RUN_LAST,
             ) -> tuple[str, list[str] | None, dt.datetime | None]:
    """('clean' | a bad kind | 'duplicate', fields and start time of a clean line)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_encoding", None, None
    f = line.split("|")
    if len(f) != 18:
        return "wrong_field_count", None, None
    msisdn = f[1]
    if msisdn.startswith("+86") and len(msisdn) == 14:
        msisdn = msisdn[3:]
    elif msisdn.startswith("86") and len(msisdn) == 13:
        msisdn = msisdn[2:]
    if not MOBILE_RE.match(msisdn):
        return "invalid_msisdn", None, None
    if not imei_ok(f[3]):
        return "invalid_imei", None, None
    start, end = parse_ts(f[4], first, last), parse_ts(f[5], first, last)
    if start is None or end is None:
        return "bad_timestamp", None, None
    if end < start:
        return "end_before_start", None, None
    if not all(INT_RE.match(f[i]) for i in (11, 16, 17)):
        return "bad_number", None, None
    if int(f[16]) < 0 or int(f[17]) < 0:
        return "negative_bytes", None, None
    if f[0] in seen:
        return "duplicate", None, None
    seen.add(f[0])
    return "clean", f, start


def read_gzip_lines(path: Path) -> list[bytes] | None:
    """Lines of a gzip file, or None when it cannot be read to its end."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.stat().st_size else b""
    except (EOFError, OSError, zlib.error):
        return None
    return data.splitlines()


def app_domains() -> dict[str, str]:
    with open(APPS_CSV, encoding="utf-8") as fh:
        return {d: r["category"] for r in csv.DictReader(fh) for d in r["domains"].split(";")}


def category_of(host: str, domains: dict[str, str]) -> str:
    """Category of the app owning the longest domain suffix of ``host`` ('unknown' if none)."""
    labels = host.split(".")
    for i in range(len(labels)):
        cat = domains.get(".".join(labels[i:]))
        if cat:
            return cat
    return "unknown"


def reparse(out: Path, first: dt.date = RUN_FIRST, last: dt.date = RUN_LAST) -> dict:
    """Read every xDR file back: kind counts per file and totals, and usage of clean lines."""
    domains = app_domains()
    seen: set[str] = set()
    per_file: dict[str, collections.Counter] = {}
    usage: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    days: dict[tuple[str, str], set] = collections.defaultdict(set)
    clean_fields: list[list[str]] = []
    files = sorted(p.relative_to(out).as_posix() for p in (out / "usage").rglob("*.gz"))
    for rel in files:
        m = FILE_RE.match(rel)
        assert m, f"unexpected file name {rel}"
        counts = collections.Counter()
        path = out / rel
        lines = read_gzip_lines(path)
        if lines is None:
            counts["truncated_gzip"] += 1
        elif not lines:
            counts["empty_file"] += 1
        for raw in lines or []:
            kind, f, start = classify(raw, seen, first, last)
            if kind != "clean":
                counts[kind] += 1
                continue
            clean_fields.append(f)
            if start.date().isoformat() < m.group(1):
                counts["late_arrival"] += 1
            if f[1].startswith("86") or f[1].startswith("+86"):
                counts["msisdn_prefixed"] += 1
            msisdn = f[1][-11:]
            key = (start.strftime("%Y-%m"), msisdn)
            size = int(f[16]) + int(f[17])
            u = usage[key]
            u["bytes"] += size
            u["records"] += 1
            u["idle_bytes"] += size if start.hour in IDLE_HOURS else 0
            u["bytes_" + category_of(f[12] or f[13], domains) if (f[12] or f[13])
              else "bytes_unknown"] += size
            days[key].add(start.date())
        per_file[rel] = counts
    total = collections.Counter()
    for c in per_file.values():
        total.update(c)
    return dict(per_file=per_file, total=total, usage=usage, days=days, clean=clean_fields)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[GenerateResult, GenerateResult]:
    base = tmp_path_factory.mktemp("synth")
    a = generate(base / "a", SUBS, MONTH, 1, seed=11, bad_rate=0.05, workers=2)
    b = generate(base / "b", SUBS, MONTH, 1, seed=11, bad_rate=0.05, workers=1)
    return a, b


@pytest.fixture(scope="module")
def out(runs) -> Path:
    return runs[0].out


@pytest.fixture(scope="module")
def parsed(out) -> dict:
    return reparse(out)


# ----------------------------------------------------------------------------- layout
def test_layout_and_headers(out: Path, runs) -> None:
    assert (out / "crm" / f"month={MONTH}" / "subscribers.csv").is_file()
    with open(out / "billing" / f"month={MONTH}" / "billing.csv", encoding="utf-8") as fh:
        assert fh.readline().strip() == "month,msisdn,item_code,item_name,quantity,unit,amount_yuan"
    with open(out / "orders" / f"month={MONTH}" / "orders.csv", encoding="utf-8") as fh:
        assert fh.readline().strip() == ("order_id,msisdn,order_time,product_id,product_type,"
                                         "channel,campaign_id,action,fee_yuan")
    crm = read_csv(out / "crm" / f"month={MONTH}" / "subscribers.csv")
    assert list(crm[0]) == ["msisdn", "imsi", "status", "activation_date", "churn_date", "brand",
                            "identity", "age_band", "city", "region_type", "vip_level",
                            "account_manager_id", "base_plan_id", "data_plan_id", "idle_pack_id",
                            "opt_out_all", "opt_out_channels", "complaints", "imei"]
    assert len(crm) == SUBS
    dates = {p.name for p in (out / "usage").iterdir()}
    assert dates == {f"dt={RUN_FIRST + dt.timedelta(days=i)}" for i in range(31)}
    for p in (out / "usage").rglob("*.gz"):
        rel = p.relative_to(out).as_posix()
        m = FILE_RE.match(rel)
        assert m and m.group(3) == m.group(1).replace("-", "") + m.group(2), rel
    for name in ("manifest.json", "archetypes.csv", "propensities.csv", "channel_preference.csv",
                 "handsets.csv", "usage_monthly.csv", "dirty.json"):
        assert (out / "_truth" / name).is_file(), name
    manifest = json.loads((out / "_truth" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["totals"]["xdr_lines"] == runs[0].xdr_lines > 50_000


def test_runs_are_byte_identical_whatever_the_worker_count(runs) -> None:
    a, b = runs
    files_a = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    assert files_a == files_b
    differ = [str(f) for f in files_a if (a.out / f).read_bytes() != (b.out / f).read_bytes()]
    assert differ == []
    assert a.xdr_lines == b.xdr_lines and a.dirty == b.dirty


def test_gzip_headers_have_no_time_or_name(out: Path) -> None:
    for p in list((out / "usage").rglob("*.gz"))[:50]:
        head = p.read_bytes()[:10]
        if head:
            assert head[:3] == b"\x1f\x8b\x08" and head[3] == 0 and head[4:8] == b"\0\0\0\0"


# ----------------------------------------------------------------------------- clean lines
def test_clean_lines_are_well_formed(parsed: dict) -> None:
    clean = parsed["clean"]
    assert len(clean) > 50_000
    ids = set()
    for f in clean:
        assert len(f) == 18
        assert re.fullmatch(r"[0-9a-f]{20}", f[0])
        assert MOBILE_RE.match(f[1][-11:]) and f[1][-11:][:3] in {
            "134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157", "158",
            "159", "172", "178", "182", "183", "184", "187", "188", "195", "197", "198"}
        assert re.fullmatch(r"460(00|02|07)\d{10}", f[2])
        if len(f[3]) == 15:
            assert luhn_ok(f[3])
        assert f[6] in {"2G", "3G", "4G", "5G"}
        assert f[9] in {"HTTP", "HTTPS", "QUIC", "DNS", "OTHER"}
        if f[9] != "HTTP":
            assert f[12] == "" and f[14] == ""
        if f[9] in ("DNS", "OTHER"):
            assert f[13] == ""
        ids.add(f[0])
    assert len(ids) == len(clean)
    protocols = collections.Counter(f[9] for f in clean)
    assert all(protocols[p] > 0 for p in ("HTTP", "HTTPS", "QUIC", "DNS", "OTHER"))
    forms = collections.Counter(len(f[3]) for f in clean)
    assert forms[15] > forms[0] > 0 and forms[14] > 0 and forms[16] > 0


def test_unknown_traffic_share(parsed: dict) -> None:
    domains = app_domains()
    clean = parsed["clean"]
    unknown = sum(1 for f in clean if category_of(f[12] or f[13], domains) == "unknown"
                  or not (f[12] or f[13]))
    assert 0.03 <= unknown / len(clean) <= 0.07


# ----------------------------------------------------------------------------- dirty data
def test_every_dirty_kind_is_planted_and_counted(out: Path, parsed: dict) -> None:
    truth = json.loads((out / "_truth" / "dirty.json").read_text())
    assert set(truth["kinds"]) == set(ALL_KINDS)
    assert all(truth["kinds"][k] >= 1 for k in ALL_KINDS), truth["kinds"]
    for kind in ALL_KINDS:
        assert parsed["total"][kind] == truth["kinds"][kind], kind


def test_dirty_counts_per_file_match_reparse(out: Path, parsed: dict) -> None:
    truth = json.loads((out / "_truth" / "dirty.json").read_text())
    for rel, counts in parsed["per_file"].items():
        expected = truth["files"].get(rel, {})
        got = {k: v for k, v in counts.items() if v}
        if "truncated_gzip" in got:      # unreadable: only the file-level kind is observable
            assert expected.get("truncated_gzip") == 1, rel
            continue
        assert got == expected, rel


def test_bad_rate_is_respected(out: Path, parsed: dict) -> None:
    manifest = json.loads((out / "_truth" / "manifest.json").read_text())
    t = manifest["totals"]
    bad = t["dirty_lines"] + t["duplicate_lines"]
    assert 0.04 <= bad / t["xdr_lines"] <= 0.06
    assert sum(v["lines"] for v in manifest["xdr_files"].values()) == t["xdr_lines"]


def test_truncated_files_are_recorded(out: Path) -> None:
    truth = json.loads((out / "_truth" / "dirty.json").read_text())
    assert truth["truncated_files"]
    for t in truth["truncated_files"]:
        assert read_gzip_lines(out / t["file"]) is None
        assert 0 <= t["lines_readable"] < t["lines_planned"]
    assert {e["form"] for e in truth["empty_files"]} == {"zero_bytes", "empty_gzip"}


def test_clean_run_has_no_dirt(tmp_path: Path) -> None:
    r = generate(tmp_path / "clean", 25, "2025-02", 1, seed=3, bad_rate=0.0, workers=1)
    assert all(v == 0 for v in r.dirty.values())
    got = reparse(r.out, dt.date(2025, 2, 1), dt.date(2025, 2, 28))
    assert set(got["total"]) == set()
    assert len(got["clean"]) == r.xdr_lines > 0


# ----------------------------------------------------------------------------- truth
def test_usage_truth_matches_reparse(out: Path, parsed: dict) -> None:
    truth = read_csv(out / "_truth" / "usage_monthly.csv")
    assert len(truth) == SUBS
    cats = [c for c in truth[0] if c.startswith("bytes_")]
    for row in truth:
        key = (row["month"], row["msisdn"])
        got = parsed["usage"].get(key, collections.Counter())
        assert int(row["bytes"]) == got["bytes"], key
        assert int(row["idle_bytes"]) == got["idle_bytes"], key
        assert int(row["records"]) == got["records"], key
        assert int(row["active_days"]) == len(parsed["days"].get(key, ())), key
        for c in cats:
            assert int(row[c]) == got[c], (key, c)
    assert sum(int(r["bytes"]) > 0 for r in truth) > SUBS * 0.7


def test_a_denser_run_splits_the_same_usage_into_more_records(tmp_path: Path) -> None:
    sparse = generate(tmp_path / "sparse", 25, "2025-02", 1, seed=3, workers=1)
    dense = generate(tmp_path / "dense", 25, "2025-02", 1, seed=3, workers=1, records_per_day=200)

    def usage(out: Path) -> dict:
        return {(r["msisdn"], r["month"]): (r["bytes"], r["idle_bytes"], r["active_days"])
                for r in read_csv(out / "_truth" / "usage_monthly.csv")}

    assert usage(dense.out) == usage(sparse.out)   # the planted usage does not depend on the density
    got = reparse(dense.out, dt.date(2025, 2, 1), dt.date(2025, 2, 28))
    assert sum(int(r["bytes"]) for r in read_csv(dense.out / "_truth" / "usage_monthly.csv")) == sum(
        c["bytes"] for c in got["usage"].values())
    active_days = sum(int(v[2]) for v in usage(dense.out).values())
    assert 180 <= dense.xdr_lines / active_days <= 220
    assert dense.xdr_lines > 6 * sparse.xdr_lines


def test_a_sparser_run_merges_the_same_usage_into_fewer_records(tmp_path: Path) -> None:
    natural = generate(tmp_path / "natural", 25, "2025-02", 1, seed=3, workers=1)
    sparse = generate(tmp_path / "sparse", 25, "2025-02", 1, seed=3, workers=1, records_per_day=3)

    def usage(out: Path) -> dict:
        return {(r["msisdn"], r["month"]): (r["bytes"], r["idle_bytes"], r["active_days"])
                for r in read_csv(out / "_truth" / "usage_monthly.csv")}

    assert usage(sparse.out) == usage(natural.out)   # busy and idle bytes per subscriber-day kept
    got = reparse(sparse.out, dt.date(2025, 2, 1), dt.date(2025, 2, 28))
    assert sum(int(r["records"]) for r in read_csv(sparse.out / "_truth" / "usage_monthly.csv")) == sum(
        c["records"] for c in got["usage"].values())
    active_days = sum(int(v[2]) for v in usage(sparse.out).values())
    assert 1.5 <= sparse.xdr_lines / active_days <= 4   # at least one busy and one idle session a day when used
    assert sparse.xdr_lines * 5 < natural.xdr_lines


def test_archetype_proportions_and_stages(out: Path) -> None:
    rows = read_csv(out / "_truth" / "archetypes.csv")
    assert len(rows) == SUBS
    share = collections.Counter(r["archetype"] for r in rows)
    expected = {"zero_smart", "zero_feature", "new_subscriber", "low_smart", "low_feature",
                "no_plan_usage", "idle_no_pack", "overflow", "complainer", "churn_risk", "steady"}
    assert set(share) == expected        # falling needs a previous month
    for name in expected:
        assert share[name] >= 0.035 * SUBS, (name, share[name])
    stage = {"zero_smart": "wake", "zero_feature": "wake", "new_subscriber": "wake",
             "low_smart": "lift", "low_feature": "lift", "no_plan_usage": "order",
             "idle_no_pack": "order", "overflow": "upgrade", "complainer": "alert",
             "churn_risk": "retain", "steady": "retain"}
    assert all(r["expected_stage"] == stage[r["archetype"]] for r in rows)


def test_archetype_signals_are_planted(out: Path) -> None:
    arch = {r["msisdn"]: r for r in read_csv(out / "_truth" / "archetypes.csv")}
    usage = {r["msisdn"]: r for r in read_csv(out / "_truth" / "usage_monthly.csv")}
    crm = {r["msisdn"]: r for r in read_csv(out / "crm" / f"month={MONTH}" / "subscribers.csv")}
    bill, qty = collections.defaultdict(dict), collections.defaultdict(dict)
    for r in read_csv(out / "billing" / f"month={MONTH}" / "billing.csv"):
        bill[r["msisdn"]][r["item_code"]] = float(r["amount_yuan"])
        qty[r["msisdn"]][r["item_code"]] = float(r["quantity"])
    mb = {m: int(u["bytes"]) / 2**20 for m, u in usage.items()}
    for m, a in arch.items():
        kind, b, c = a["archetype"], bill[m], crm[m]
        assert qty[m].get("voice_local", 0) > 0 or kind == "new_subscriber", m   # voice everywhere
        if kind in ("zero_smart", "zero_feature"):
            assert mb[m] == 0 and "data_payperuse" not in b, m
        if kind == "low_smart":
            assert 0 < mb[m] < 100 and "data_payperuse" not in b, m
        if kind == "no_plan_usage":
            assert c["data_plan_id"] == "" and 150 < mb[m] < 900 and b["data_payperuse"] > 0, m
        if kind == "idle_no_pack":
            idle = int(usage[m]["idle_bytes"]) / 2**20
            assert c["idle_pack_id"] == "" and idle >= 150 and idle >= 0.3 * mb[m], m
            assert "data_payperuse" not in b, m
        if kind == "overflow":
            assert b.get("data_payperuse", 0) > 0 or b.get("booster_fee", 0) > 0, m
        if kind == "complainer":
            assert int(c["complaints"]) >= 1, m
        if kind in ("steady", "low_smart", "low_feature", "no_plan_usage", "idle_no_pack",
                    "overflow", "zero_smart", "zero_feature", "new_subscriber"):
            assert int(c["complaints"]) == 0, m
        if kind == "new_subscriber":
            assert c["activation_date"].startswith(MONTH), m
    with_handset = {r["msisdn"] for r in read_csv(out / "_truth" / "handsets.csv")}
    assert set(arch) <= with_handset


def test_handset_changes_show_in_the_records(out: Path, parsed: dict) -> None:
    handsets = collections.defaultdict(list)
    for r in read_csv(out / "_truth" / "handsets.csv"):
        handsets[r["msisdn"]].append((r["from_date"], r["tac"]))
    changers = {m: h for m, h in handsets.items() if len(h) == 2}
    assert changers, "some subscribers change handset during the run"
    checked = 0
    for f in parsed["clean"]:
        h = changers.get(f[1][-11:])
        if h and len(f[3]) >= 14:
            expected = h[1][1] if f[4][:10] >= h[1][0] else h[0][1]
            assert f[3][:8] == expected, (f[1], f[4], h)
            checked += 1
    assert checked > 0


def test_propensities_cover_every_subscriber(out: Path) -> None:
    rows = read_csv(out / "_truth" / "propensities.csv")
    assert list(rows[0]) == ["msisdn", "offer_type", "kind", "fits", "p_organic", "p_unsubscribe", "channel",
                             "effect"]
    assert len(rows) == SUBS * 7 * 5
    assert len({(r["msisdn"], r["offer_type"], r["channel"]) for r in rows}) == len(rows)
    assert {r["kind"] for r in rows} == {"persuadable", "sure_thing", "lost_cause", "do_not_disturb"}
    assert {r["fits"] for r in rows} == {"0", "1"}
    assert all(0.0 <= float(r["p_organic"]) <= 1.0 and 0.0 <= float(r["p_unsubscribe"]) <= 1.0 for r in rows)
    # A contact can put off at most what the subscriber would have ordered anyway.
    assert all(-float(r["p_organic"]) <= float(r["effect"]) <= 1.0 for r in rows)
    # Kind, fit and the per-offer chances are the subscriber's for that offer, whatever the channel.
    per_offer = {(r["msisdn"], r["offer_type"], r["kind"], r["fits"], r["p_organic"], r["p_unsubscribe"])
                 for r in rows}
    assert len(per_offer) == SUBS * 7
    prefs = read_csv(out / "_truth" / "channel_preference.csv")
    assert len(prefs) == SUBS
    assert {p["preferred_channel"] for p in prefs} <= {"", "sms", "app", "web", "outbound",
                                                       "manager"}


def test_the_planner_rebuilt_from_the_manifest_plants_the_same_outcomes_and_knows_only_their_expectation(
        out: Path) -> None:
    import numpy as np

    from flowops.synth.generator import planner_of
    from flowops.synth.truth import OFFER_TYPES, expected_effects, planted_outcomes

    planner = planner_of(out)
    planted = planted_outcomes(planner, seed=11)
    rows = read_csv(out / "_truth" / "propensities.csv")
    assert [r["kind"] for r in rows] == planted["kind"].tolist()
    assert [float(r["effect"]) for r in rows] == pytest.approx(planted["effect"].tolist(), abs=1e-6)
    drawn = planted["effect"].to_numpy().reshape(planner.pop.n, len(OFFER_TYPES), -1)
    expected = expected_effects(planner, seed=11, draws=64)
    assert expected.shape == drawn.shape
    # An expectation over fresh draws: the same level as the planted draws, related to them but not them.
    assert expected.mean() == pytest.approx(drawn.mean(), rel=0.15)
    corr = np.corrcoef(expected.ravel(), drawn.ravel())[0, 1]
    assert 0.3 < corr < 0.95
    assert expected_effects(planner, seed=11, draws=64) == pytest.approx(expected)   # the draws are fixed by seed


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, message", [
    (dict(start_month="2026-13"), "start_month must be YYYY-MM, got '2026-13'"),
    (dict(start_month="202601"), "start_month must be YYYY-MM"),
    (dict(subscribers=0), "subscribers must be an integer >= 1"),
    (dict(months=0), "months must be an integer >= 1"),
    (dict(bad_rate=0.6), "bad_rate must be between 0 and 0.5"),
    (dict(bad_rate=-0.1), "bad_rate must be between 0 and 0.5"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(workers=0), "workers must be an integer >= 1"),
    (dict(records_per_day=1), "records_per_day must be between 2 and 5000"),
])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = dict(out=tmp_path / "x", subscribers=10, start_month="2026-01", months=1, seed=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(**args)
    assert not (tmp_path / "x").exists()


def test_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        generate(tmp_path, 5, "2026-01", 1, seed=1)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_regenerates_cleanly_over_its_own_output(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    generate(out, 5, "2026-01", 1, seed=1, workers=1)
    (out / "usage" / "stale.txt").write_text("left over")
    r = generate(out, 5, "2026-02", 1, seed=1, workers=1)
    assert not (out / "usage" / "stale.txt").exists()
    assert not (out / "crm" / "month=2026-01").exists()
    assert (out / "crm" / "month=2026-02" / "subscribers.csv").is_file() and r.xdr_lines > 0
