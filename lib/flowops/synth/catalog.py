"""The synthetic world's reference data: apps, handsets and products, loaded from ``data/*.csv``.

The CSV files are the source of truth (the lead builds the operator's app fingerprints and TAC
reference from them); this module only turns them into arrays the generator can index.

App identification rule the data is built for: a host or SNI belongs to the app whose domain is
the longest dot-suffix of it (``work.weixin.qq.com`` is WeCom, ``szextshort.weixin.qq.com`` is
WeChat). :func:`match_app` implements it so tests can prove every planted host resolves to its app.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).with_name("data")

CATEGORIES: tuple[str, ...] = (
    "video", "short_video", "games", "social", "news", "shopping", "life", "music", "reading",
    "tools", "navigation", "finance", "travel", "operator",
)
# Index of the "unknown" bucket in per-category arrays (after the 14 real categories).
UNKNOWN_CATEGORY = len(CATEGORIES)

GENERATIONS: tuple[str, ...] = ("2G", "3G", "4G", "5G")
PRICE_TIERS: tuple[str, ...] = ("low", "mid", "high", "flagship")

# Data outside every allowance is charged per MB, with a monthly cap.
PAYPERUSE_YUAN_PER_MB = 0.29
PAYPERUSE_CAP_YUAN = 60.0
# The operator's idle-time window: 23:00-07:00, judged by a record's start time.
IDLE_HOURS: tuple[int, ...] = (23, 0, 1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class Apps:
    """Apps as parallel arrays; host, IP and URI pools are flattened with per-app offsets."""

    app_id: tuple[str, ...]
    name_zh: tuple[str, ...]
    category: np.ndarray          # int8 index into CATEGORIES
    domains: tuple[tuple[str, ...], ...]
    hosts: tuple[str, ...]        # flattened concrete host names
    host_off: np.ndarray          # int32, len n+1
    ip_prefixes: tuple[str, ...]  # flattened "a.b.c" /24 prefixes
    ip_off: np.ndarray
    uri_paths: tuple[str, ...]
    uri_off: np.ndarray
    ua_android: tuple[str, ...]
    ua_ios: tuple[str, ...]
    ua_token: tuple[str, ...]
    dl_kb: np.ndarray             # float64 typical downlink per session
    ul_kb: np.ndarray
    proto_share: np.ndarray       # (n, 3) float64: HTTP, HTTPS, QUIC
    idle_affinity: np.ndarray
    popularity: np.ndarray
    on_feature: np.ndarray        # bool: usable from a feature phone (WAP)

    @property
    def n(self) -> int:
        return len(self.app_id)


@dataclass(frozen=True)
class Devices:
    """Handset models as parallel arrays."""

    tac: tuple[str, ...]
    brand: tuple[str, ...]
    model: tuple[str, ...]
    model_code: tuple[str, ...]
    os: tuple[str, ...]
    os_version: tuple[str, ...]
    build: tuple[str, ...]
    user_agent: tuple[str, ...]
    gen: np.ndarray               # int8: 2..5 (highest supported generation)
    smart: np.ndarray             # bool
    tier: np.ndarray              # int8 index into PRICE_TIERS
    in_reference: np.ndarray      # bool
    popularity: np.ndarray

    @property
    def n(self) -> int:
        return len(self.tac)


@dataclass(frozen=True)
class Products:
    """The product catalogue; ``index`` maps product_id to row."""

    product_id: tuple[str, ...]
    type: tuple[str, ...]
    name: tuple[str, ...]
    fee: np.ndarray               # float64 yuan per month (or per purchase for boosters)
    allowance_mb: np.ndarray      # float64
    idle_only: np.ndarray         # bool
    gen: np.ndarray               # int8 2..5, 0 when not applicable
    index: dict[str, int]

    def ids(self, *product_ids: str) -> np.ndarray:
        """Row numbers of the given product ids, as an int16 array."""
        return np.array([self.index[p] for p in product_ids], dtype=np.int16)


def _read(name: str) -> list[dict[str, str]]:
    with open(DATA_DIR / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _flatten(lists: list[list[str]]) -> tuple[tuple[str, ...], np.ndarray]:
    off = np.zeros(len(lists) + 1, dtype=np.int32)
    off[1:] = np.cumsum([len(x) for x in lists])
    return tuple(s for x in lists for s in x), off


def _split(value: str) -> list[str]:
    return [p for p in value.split(";") if p]


@functools.cache
def load_apps() -> Apps:
    """Load ``data/apps.csv``; fails on an unknown category or an app without hosts."""
    rows = _read("apps.csv")
    for r in rows:
        if r["category"] not in CATEGORIES:
            raise ValueError(f"apps.csv: app {r['app_id']!r} has category {r['category']!r}, "
                             f"expected one of {list(CATEGORIES)}")
        if not _split(r["hosts"]) or not _split(r["domains"]):
            raise ValueError(f"apps.csv: app {r['app_id']!r} needs at least one host and domain")
    hosts, host_off = _flatten([_split(r["hosts"]) for r in rows])
    ips, ip_off = _flatten([_split(r["ip_prefixes"]) for r in rows])
    uris, uri_off = _flatten([_split(r["uri_paths"]) or ["/"] for r in rows])
    share = np.array([[float(r["share_http"]), float(r["share_https"]), float(r["share_quic"])]
                      for r in rows])
    share /= share.sum(axis=1, keepdims=True)
    return Apps(
        app_id=tuple(r["app_id"] for r in rows),
        name_zh=tuple(r["name_zh"] for r in rows),
        category=np.array([CATEGORIES.index(r["category"]) for r in rows], dtype=np.int8),
        domains=tuple(tuple(_split(r["domains"])) for r in rows),
        hosts=hosts, host_off=host_off, ip_prefixes=ips, ip_off=ip_off,
        uri_paths=uris, uri_off=uri_off,
        ua_android=tuple(r["ua_android"] for r in rows),
        ua_ios=tuple(r["ua_ios"] for r in rows),
        ua_token=tuple(r["ua_token"] for r in rows),
        dl_kb=np.array([float(r["dl_kb"]) for r in rows]),
        ul_kb=np.array([float(r["ul_kb"]) for r in rows]),
        proto_share=share,
        idle_affinity=np.array([float(r["idle_affinity"]) for r in rows]),
        popularity=np.array([float(r["popularity"]) for r in rows]),
        on_feature=np.array([r["on_feature"] == "true" for r in rows]),
    )


@functools.cache
def load_devices() -> Devices:
    """Load ``data/devices.csv``; fails on duplicate TACs or a TAC that is not 8 digits."""
    rows = _read("devices.csv")
    tacs = [r["tac"] for r in rows]
    bad = [t for t in tacs if len(t) != 8 or not t.isdigit()]
    if bad or len(set(tacs)) != len(tacs):
        raise ValueError(f"devices.csv: TACs must be unique 8-digit strings, bad: {bad}")
    return Devices(
        tac=tuple(tacs),
        brand=tuple(r["brand"] for r in rows),
        model=tuple(r["model"] for r in rows),
        model_code=tuple(r["model_code"] for r in rows),
        os=tuple(r["os"] for r in rows),
        os_version=tuple(r["os_version"] for r in rows),
        build=tuple(r["build"] for r in rows),
        user_agent=tuple(r["user_agent"] for r in rows),
        gen=np.array([GENERATIONS.index(r["generation"]) + 2 for r in rows], dtype=np.int8),
        smart=np.array([r["smart"] == "true" for r in rows]),
        tier=np.array([PRICE_TIERS.index(r["price_tier"]) for r in rows], dtype=np.int8),
        in_reference=np.array([r["in_reference"] == "true" for r in rows]),
        popularity=np.array([float(r["popularity"]) for r in rows]),
    )


@functools.cache
def load_products() -> Products:
    """Load ``data/products.csv``."""
    rows = _read("products.csv")
    ids = tuple(r["product_id"] for r in rows)
    return Products(
        product_id=ids,
        type=tuple(r["type"] for r in rows),
        name=tuple(r["name"] for r in rows),
        fee=np.array([float(r["fee_yuan"]) for r in rows]),
        allowance_mb=np.array([float(r["allowance_mb"]) for r in rows]),
        idle_only=np.array([r["idle_only"] == "true" for r in rows]),
        gen=np.array([GENERATIONS.index(r["generation"]) + 2 if r["generation"] else 0
                      for r in rows], dtype=np.int8),
        index={p: i for i, p in enumerate(ids)},
    )


def match_app(host: str, apps: Apps | None = None) -> str | None:
    """Return the app whose domain is the longest dot-suffix of ``host``, or None."""
    apps = apps or load_apps()
    host = host.lower().rstrip(".")
    best, best_len = None, -1
    for app_id, domains in zip(apps.app_id, apps.domains, strict=False):
        for d in domains:
            if (host == d or host.endswith("." + d)) and len(d) > best_len:
                best, best_len = app_id, len(d)
    return best
