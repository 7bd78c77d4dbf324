"""The generator's reference data: apps, handsets and products are complete and consistent."""

from __future__ import annotations

import collections
import csv
import re
from pathlib import Path

from flowops.synth.catalog import CATEGORIES, load_apps, load_devices, load_products, match_app
from flowops.synth.context import UNKNOWN_HOSTS

DATA = Path(__file__).resolve().parents[2] / "lib/flowops/synth/data"


def rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_apps_cover_the_categories_and_the_operator() -> None:
    apps = rows("apps.csv")
    assert len(apps) >= 45
    assert {a["category"] for a in apps} == set(CATEGORIES)
    ids = {a["app_id"] for a in apps}
    assert {"wechat", "douyin", "kuaishou", "taobao", "pinduoduo", "honor_of_kings",
            "china_mobile_app", "migu_video", "mail139", "fetion"} <= ids
    for a in apps:
        shares = float(a["share_http"]) + float(a["share_https"]) + float(a["share_quic"])
        assert abs(shares - 1.0) < 1e-6, a["app_id"]
        assert a["ua_token"] and a["ua_token"] in a["ua_android"], a["app_id"]
        assert "|" not in a["ua_android"] + a["ua_ios"], a["app_id"]


def test_every_planted_host_resolves_to_its_own_app() -> None:
    apps = load_apps()
    wrong = [(app, host, match_app(host, apps))
             for i, app in enumerate(apps.app_id)
             for host in apps.hosts[apps.host_off[i]:apps.host_off[i + 1]]
             if match_app(host, apps) != app]
    assert wrong == []
    assert [h for h in UNKNOWN_HOSTS if match_app(h, apps)] == []
    assert match_app("work.weixin.qq.com", apps) == "wecom"
    assert match_app("szextshort.weixin.qq.com", apps) == "wechat"


def test_app_ip_prefixes_are_not_shared() -> None:
    owner: dict[str, str] = {}
    for a in rows("apps.csv"):
        for p in a["ip_prefixes"].split(";"):
            assert re.fullmatch(r"\d+\.\d+\.\d+", p), p
            assert owner.setdefault(p, a["app_id"]) == a["app_id"], p


def test_devices_are_a_plausible_tac_reference() -> None:
    dev = rows("devices.csv")
    assert len(dev) >= 60
    tacs = [d["tac"] for d in dev]
    assert len(set(tacs)) == len(tacs)
    for d in dev:
        assert re.fullmatch(r"(86|35)\d{6}", d["tac"]), d
        assert d["generation"] in {"2G", "3G", "4G", "5G"}
        assert d["price_tier"] in {"low", "mid", "high", "flagship"}
        if d["os"] in ("Android", "HarmonyOS"):
            assert d["model_code"] in d["user_agent"], d["model"]
        if d["os"] == "iOS":
            assert d["user_agent"].startswith("Mozilla/5.0 (iPhone; CPU iPhone OS ")
    not_in_ref = sum(d["in_reference"] == "false" for d in dev) / len(dev)
    assert 0.07 <= not_in_ref <= 0.15
    brands = collections.Counter(d["brand"] for d in dev)
    assert {"Apple", "Huawei", "Honor", "Xiaomi", "Redmi", "OPPO", "vivo", "Samsung",
            "K-Touch", "China Mobile"} <= set(brands)
    assert sum(d["smart"] == "false" for d in dev) >= 5
    assert load_devices().n == len(dev)


def test_products_hold_the_seed_ladders() -> None:
    prod = load_products()
    fees = collections.defaultdict(set)
    for t, f in zip(prod.type, prod.fee, strict=False):
        fees[t].add(int(f))
    assert fees["data_plan"] == {5, 10, 20, 30, 50, 100, 200}
    assert fees["booster"] == {3, 5, 10}
    assert fees["idle_pack"] == {5, 10}
    assert {"base_plan", "app", "terminal"} <= set(fees)
    zero_mb = [p for p, t, a in zip(prod.product_id, prod.type, prod.allowance_mb, strict=False)
               if t == "base_plan" and a == 0]
    assert zero_mb, "old voice-only plans without data must exist"
    assert all(prod.idle_only[i] == (prod.type[i] == "idle_pack") for i in range(len(prod.type)))
