"""App identification by fingerprint rules from `conf/apps/*.yml`.

A record is judged three ways, the same in Spark and in `flowops apps match`:
- host: the HTTP host, else the TLS/QUIC SNI (see `hosts.normalise_host`). Its suffixes are tried from the
  longest to the shortest; at each length a `uri_prefix` rule on that suffix and the record's first URI
  path segment comes before the plain host rule. The first hit is the host match.
- user agent: its distinct product tokens (`hosts.ua_tokens`); the best matching token rule.
- port: for records with neither host nor SNI, a `port` rule (optionally limited to protocols).
Of these, the highest confidence wins, then the higher priority, then host over UA over port; no match
is `unknown`. Every lookup is a hash probe into a broadcast table, so the cost per record does not grow
with the number of rules (only with the label count of the longest rule suffix and the token cap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from flowops.config import _Strict, load_yaml, validate
from flowops.errors import ConfigError
from flowops.ingest.hosts import (
    UA_TOKENS_MAX,
    domain_labels,
    domain_labels_column,
    normalise_host,
    ua_tokens,
    ua_tokens_column,
)

UNKNOWN = "unknown"
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]{1,63}$")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_SEGMENT = re.compile(r"^/[^/?#]+/?$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
KIND_ORDER = {"uri": 0, "host": 0, "ua": 1, "port": 2}
GENERIC_UA_TOKENS = frozenset({"Mozilla", "AppleWebKit", "Safari", "Chrome", "Mobile", "Android", "okhttp",
                               "Dalvik", "CFNetwork", "Darwin", "Version", "Gecko", "Firefox", "Linux"})
PROTOCOLS = ("HTTP", "HTTPS", "QUIC", "DNS", "OTHER")


class RuleModel(_Strict):
    host: list[str] = Field(default_factory=list)
    uri_prefix: list[str] = Field(default_factory=list)
    ua: list[str] = Field(default_factory=list)
    port: list[int] = Field(default_factory=list)
    protocol: list[str] = Field(default_factory=list)
    confidence: float = Field(ge=0, le=1)

    @field_validator("host")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        bad = [h for h in hosts if h != h.lower() or not _HOST.match(h) or _IPV4.match(h)]
        if bad:
            raise ValueError(f"host entries must be lowercase domain suffixes, got {bad}")
        return hosts

    @field_validator("uri_prefix")
    @classmethod
    def _prefixes(cls, prefixes: list[str]) -> list[str]:
        bad = [p for p in prefixes if not _SEGMENT.match(p)]
        if bad:
            raise ValueError(f"uri_prefix entries must be one path segment like '/api/', got {bad}")
        return prefixes

    @field_validator("ua")
    @classmethod
    def _tokens(cls, tokens: list[str]) -> list[str]:
        generic = sorted(set(tokens) & GENERIC_UA_TOKENS)
        if generic:
            raise ValueError(f"ua tokens {generic} appear in most user agents and identify no app")
        return tokens

    @field_validator("port")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        if any(not 0 < p < 65536 for p in ports):
            raise ValueError(f"ports must be 1-65535, got {ports}")
        return ports

    @field_validator("protocol")
    @classmethod
    def _protocols(cls, protocols: list[str]) -> list[str]:
        bad = [p for p in protocols if p not in PROTOCOLS]
        if bad:
            raise ValueError(f"protocol must be among {list(PROTOCOLS)}, got {bad}")
        return protocols

    @model_validator(mode="after")
    def _one_kind(self) -> RuleModel:
        kinds = [name for name in ("host", "ua", "port") if getattr(self, name)]
        if len(kinds) != 1:
            raise ValueError(f"a rule needs exactly one of host, ua or port, got {kinds or 'none'}")
        if self.uri_prefix and not self.host:
            raise ValueError("uri_prefix only qualifies a host rule")
        if self.protocol and not self.port:
            raise ValueError("protocol only qualifies a port rule")
        return self


class AppModel(_Strict):
    id: str
    name: str
    vendor: str = ""
    category: str | None = None
    priority: int = Field(100, ge=0, le=1000)
    rules: list[RuleModel] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value) or value == UNKNOWN:
            raise ValueError(f"app id must be lowercase snake_case (and not 'unknown'), got {value!r}")
        return value


class AppFileModel(_Strict):
    category: str
    apps: list[AppModel] = Field(min_length=1)


@dataclass(frozen=True)
class Rule:
    """One flattened rule: a single key (host suffix, host+segment, UA token or port) -> app."""

    kind: str          # host | uri | ua | port
    key: str
    app_id: str
    app_name: str
    category: str
    confidence: float
    priority: int
    rule_id: str       # file:app:index, shown by `flowops apps match`
    protocols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    app_id: str
    app_name: str
    category: str
    confidence: float
    rule_id: str


NO_MATCH = Match(UNKNOWN, UNKNOWN, UNKNOWN, 0.0, "")


class AppRules:
    """All fingerprint rules, validated and indexed by key."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.by_kind: dict[str, dict[str, list[Rule]]] = {"host": {}, "uri": {}, "ua": {}, "port": {}}
        for rule in rules:
            self.by_kind[rule.kind].setdefault(rule.key, []).append(rule)
        self.max_labels = max((k.count(".") + 1 for k in self.by_kind["host"]), default=1)
        self.app_count = len({r.app_id for r in rules})

    @classmethod
    def load(cls, conf_dir: str | Path) -> AppRules:
        """Read and check every `conf/apps/*.yml`; errors name the file, the app and the problem."""
        folder = Path(conf_dir) / "apps"
        files = sorted(folder.glob("*.yml"))
        if not files:
            raise ConfigError(f"no app fingerprint files (*.yml) in {folder}")
        rules: list[Rule] = []
        owners: dict[tuple[str, str], str] = {}
        seen_ids: dict[str, Path] = {}
        for path in files:
            model = validate(AppFileModel, load_yaml(path), path)
            for app in model.apps:
                if app.id in seen_ids:
                    raise ConfigError(f"{path}: app id {app.id!r} is already defined in {seen_ids[app.id]}")
                seen_ids[app.id] = path
                for index, rule in enumerate(app.rules):
                    for flat in _flatten(path.stem, app, model.category, index, rule):
                        # One rule per key, or a lookup would return two rows for one record.
                        owner = owners.get((flat.kind, flat.key))
                        if owner is not None:
                            raise ConfigError(f"{path}: app {app.id!r} claims {flat.kind} {flat.key!r}, "
                                              f"which {owner} already claims")
                        owners[(flat.kind, flat.key)] = f"app {app.id!r} ({path.name})"
                        rules.append(flat)
        return cls(rules)

    def match(self, host: str | None, sni: str | None = None, uri: str | None = None,
              user_agent: str | None = None, port: int | None = None, protocol: str | None = None) -> Match:
        """Identify one record, exactly as `identify_apps` does in Spark."""
        name = normalise_host(host) or normalise_host(sni)
        found: list[Rule] = []
        labels = domain_labels(name)
        segment = first_segment(uri)
        for size in range(min(len(labels), self.max_labels), 0, -1):
            suffix = ".".join(labels[-size:])
            hit = (self.by_kind["uri"].get(f"{suffix}{segment}") if segment else None) or \
                self.by_kind["host"].get(suffix)
            if hit:
                found.append(hit[0])
                break
        by_token = [r for t in ua_tokens(user_agent) for r in self.by_kind["ua"].get(t, [])]
        if by_token:
            found.append(min(by_token, key=_rank))
        if not name and port is not None:
            found += [r for r in self.by_kind["port"].get(str(port), [])
                      if not r.protocols or (protocol or "").upper() in r.protocols][:1]
        return _as_match(min(found, key=_rank)) if found else NO_MATCH

    def tables(self, spark: SparkSession) -> dict[str, DataFrame]:
        """The broadcast lookup tables, one per kind, keyed by `key`."""
        schema = ("key string, app_id string, app_name string, category string, confidence double, "
                  "priority int, rule_id string, protocols array<string>")
        out = {}
        for kind, index in self.by_kind.items():
            rows = [(r.key, r.app_id, r.app_name, r.category, r.confidence, r.priority, r.rule_id,
                     list(r.protocols)) for rules in index.values() for r in rules]
            out[kind] = spark.createDataFrame(rows, schema)
        return out


def _flatten(stem: str, app: AppModel, file_category: str, index: int, rule: RuleModel) -> list[Rule]:
    common = {"app_id": app.id, "app_name": app.name, "category": app.category or file_category,
              "confidence": rule.confidence, "priority": app.priority, "rule_id": f"{stem}:{app.id}:{index}"}
    if rule.host and rule.uri_prefix:
        return [Rule("uri", f"{h}/{p.strip('/')}/", **common) for h in rule.host for p in rule.uri_prefix]
    if rule.host:
        return [Rule("host", h, **common) for h in rule.host]
    if rule.ua:
        return [Rule("ua", t, **common) for t in rule.ua]
    return [Rule("port", str(p), protocols=tuple(rule.protocol), **common) for p in rule.port]


def _rank(rule: Rule) -> tuple[float, int, int, str]:
    return (-rule.confidence, -rule.priority, KIND_ORDER[rule.kind], rule.app_id)


def _as_match(rule: Rule) -> Match:
    return Match(rule.app_id, rule.app_name, rule.category, rule.confidence, rule.rule_id)


def first_segment(uri: str | None) -> str:
    """`/api/v2/x?y` -> `/api/`; '' when the URI has no path segment."""
    match = re.match(r"^(/[^/?#]+)", uri or "")
    return f"{match.group(1)}/" if match else ""


APP_COLUMNS = ("app_id", "app_name", "app_category", "app_confidence", "app_rule")


def identify_apps(df: DataFrame, rules: AppRules, tables: dict[str, DataFrame]) -> DataFrame:
    """Add `app_id`, `app_name`, `app_category`, `app_confidence`, `app_rule` to xDR records.

    Needs `host` and `sni` (normalised as `hosts.normalise_host_column` does), `uri`, `user_agent`,
    `server_port` and `protocol`. The rules run once per distinct combination of what they read (host,
    SNI, first URI segment, user agent, port of host-less records, protocol), far fewer than records, and
    the answers join back on that combination.
    """
    name = F.coalesce(F.col("host"), F.col("sni"))
    parts = {
        "host": F.col("host"), "sni": F.col("sni"),
        "uri": F.regexp_extract(F.col("uri"), r"^(/[^/?#]+)", 1),
        "user_agent": F.col("user_agent"),
        "server_port": F.when(name.isNull(), F.col("server_port")),
        "protocol": F.col("protocol"),
    }
    key = F.concat_ws("\u0001", *[F.coalesce(col.cast("string"), F.lit("")) for col in parts.values()])
    keyed = df.withColumn("_app_key", key)
    combos = keyed.select("_app_key", *[col.alias(name) for name, col in parts.items()]).dropDuplicates(["_app_key"])
    answers = _identify(combos, rules, tables).select("_app_key", *APP_COLUMNS)
    return keyed.join(answers, on="_app_key", how="left").drop("_app_key")


def _identify(df: DataFrame, rules: AppRules, tables: dict[str, DataFrame]) -> DataFrame:
    """The rules applied to every row of `df` (see `identify_apps`)."""
    name = F.coalesce(F.col("host"), F.col("sni"))
    segment = F.regexp_extract(F.col("uri"), r"^(/[^/?#]+)", 1)
    out = (df.withColumn("_labels", domain_labels_column(name))
           .withColumn("_seg", F.when(segment != "", F.concat(segment, F.lit("/"))))
           .withColumn("_tokens", ua_tokens_column(F.col("user_agent")))
           .withColumn("_port_key", F.when(name.isNull(), F.col("server_port").cast("string"))))
    host_hits: list[str] = []
    for size in range(rules.max_labels, 0, -1):
        suffix = F.when(F.size("_labels") >= size, F.array_join(F.slice("_labels", -size, size), "."))
        for kind, key in (("uri", F.concat(suffix, F.col("_seg"))), ("host", suffix)):
            if rules.by_kind[kind]:
                out = _lookup(out, tables[kind], key, f"_{kind}{size}")
                host_hits.append(f"_{kind}{size}")
    ua_hits = []
    for position in range(UA_TOKENS_MAX):
        out = _lookup(out, tables["ua"], F.get(F.col("_tokens"), position), f"_ua{position}")
        ua_hits.append(f"_ua{position}")
    out = _lookup(out, tables["port"], F.col("_port_key"), "_port")
    port_ok = (F.size(F.col("_port.protocols")) == 0) | F.array_contains(F.col("_port.protocols"),
                                                                         F.col("protocol"))
    candidates = [_ranked(F.coalesce(*[F.col(h) for h in host_hits]), KIND_ORDER["host"])] if host_hits else []
    candidates += [_ranked(F.col(h), KIND_ORDER["ua"]) for h in ua_hits]
    candidates.append(_ranked(F.when(port_ok, F.col("_port")), KIND_ORDER["port"]))
    best = F.get(F.array_sort(F.filter(F.array(*candidates), lambda c: c.isNotNull())), 0).getField("hit")
    return (
        out.withColumn("_best", best)
        .withColumn("app_id", F.coalesce(F.col("_best.app_id"), F.lit(UNKNOWN)))
        .withColumn("app_name", F.coalesce(F.col("_best.app_name"), F.lit(UNKNOWN)))
        .withColumn("app_category", F.coalesce(F.col("_best.category"), F.lit(UNKNOWN)))
        .withColumn("app_confidence", F.coalesce(F.col("_best.confidence"), F.lit(0.0)))
        .withColumn("app_rule", F.col("_best.rule_id"))
        .drop("_labels", "_seg", "_tokens", "_port_key", "_best", "_port", *host_hits, *ua_hits)
    )


def _ranked(hit: Column, kind_order: int) -> Column:
    """A hit wrapped so that sorting ascending puts the winner first (same order as `_rank`)."""
    return F.when(hit.isNotNull(), F.struct(
        (-hit.getField("confidence")).alias("c"), (-hit.getField("priority")).alias("p"),
        F.lit(kind_order).alias("k"), hit.getField("app_id").alias("a"), hit.alias("hit")))


def _lookup(df: DataFrame, table: DataFrame, key: Column, alias: str) -> DataFrame:
    """Left-join one broadcast lookup on `key`, keeping the hit as a struct column `alias`."""
    hits = table.select(F.col("key").alias(f"{alias}_key"),
                        F.struct("app_id", "app_name", "category", "confidence", "priority", "rule_id",
                                 "protocols").alias(alias))
    return (df.withColumn(f"{alias}_key", key)
            .join(F.broadcast(hits), on=f"{alias}_key", how="left")
            .drop(f"{alias}_key"))
