"""App identification by fingerprint rules from `conf/apps/*.yml`.

A record is judged three ways, the same in Spark and in `flowops apps match`:
- host: the HTTP host, else the TLS/QUIC SNI (see `hosts.normalise_host`). Its suffixes are tried from the
  longest to the shortest; at each length a `uri_prefix` rule on that suffix and the record's first URI
  path segment comes before the plain host rule. The first hit is the host match.
- user agent: its distinct product tokens (`hosts.ua_tokens`); the best matching token rule.
- port: for records with neither host nor SNI, a `port` rule (optionally limited to protocols).
Of these, the highest confidence wins, then the higher priority, then host over UA over port; no match
is `unknown`. Every lookup is a dictionary probe, so the cost does not grow with the number of rules (only
with the label count of the longest rule suffix and the token cap); in Spark the rules run once per
distinct key on the executors, not once per record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from flowops.config import StrictModel, config_files, load_yaml, validate
from flowops.errors import ConfigError
from flowops.ingest.hosts import domain_labels, normalise_host, ua_tokens
from flowops.ingest.pii import mask_digits_text
from flowops.ingest.vector import per_distinct

UNKNOWN = "unknown"
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]{1,63}$")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_SEGMENT = re.compile(r"^/[^/?#]+/?$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
KIND_ORDER = {"uri": 0, "host": 0, "ua": 1, "port": 2}
GENERIC_UA_TOKENS = frozenset({"Mozilla", "AppleWebKit", "Safari", "Chrome", "Mobile", "Android", "okhttp",
                               "Dalvik", "CFNetwork", "Darwin", "Version", "Gecko", "Firefox", "Linux"})
PROTOCOLS = ("HTTP", "HTTPS", "QUIC", "DNS", "OTHER")
MAX_AGENT = 512  # characters of a user agent kept in bronze


class RuleModel(StrictModel):
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


class AppModel(StrictModel):
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


class AppFileModel(StrictModel):
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
        files = config_files(folder)
        if not files:
            raise ConfigError(f"no app fingerprint files (*.yml, *.yaml) in {folder}")
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
        """Identify one record: the better of its host-side and its user-agent rule (what `identify_apps` does)."""
        found = [r for r in (self.host_rule(host, sni, uri, port, protocol), self.agent_rule(user_agent)) if r]
        return _as_match(min(found, key=_rank)) if found else NO_MATCH

    def host_rule(self, host: str | None, sni: str | None = None, uri: str | None = None, port: int | None = None,
                  protocol: str | None = None) -> Rule | None:
        """The rule a record's host side names: the longest host suffix with a rule (a `uri_prefix` rule on the
        record's first path segment first); for a record with no name, a port rule for its protocol."""
        name = normalise_host(host) or normalise_host(sni)
        labels = domain_labels(name)
        segment = first_segment(uri)
        for size in range(min(len(labels), self.max_labels), 0, -1):
            suffix = ".".join(labels[-size:])
            hit = (self.by_kind["uri"].get(f"{suffix}{segment}") if segment else None) or \
                self.by_kind["host"].get(suffix)
            if hit:
                return hit[0]
        if not name and port is not None:
            return next((r for r in self.by_kind["port"].get(str(port), [])
                         if not r.protocols or (protocol or "").upper() in r.protocols), None)
        return None

    def agent_rule(self, user_agent: str | None) -> Rule | None:
        """The best rule among the user agent's product tokens."""
        by_token = [r for t in ua_tokens(user_agent) for r in self.by_kind["ua"].get(t, [])]
        return min(by_token, key=_rank) if by_token else None


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


APP_COLUMNS = ("app_id", "app_category", "app_confidence", "app_rule")
APP_DDL = "app_id string, app_category string, app_confidence double, app_rule string"
_NO_RANK = (np.inf, np.inf, np.inf)


class Identifier:
    """Identifies batches of records (Arrow arrays) with `AppRules`, remembering the answer for every distinct
    host-side key and user agent it has seen: the rules run once per distinct key, not once per record.

    It also normalises what bronze keeps of those fields, once per distinct value: the host name and SNI
    (`hosts.normalise_host`), the first URI path segment and the user agent with long digit runs masked.
    """

    def __init__(self, rules: AppRules) -> None:
        self.rules = rules
        self._hosts: dict[tuple[str, ...], tuple] = {}
        self._agents: dict[str, tuple] = {}

    def identify(self, host: pa.StringArray, sni: pa.StringArray, uri: pa.StringArray, user_agent: pa.StringArray,
                 port: pa.StringArray, protocol: pa.StringArray) -> dict[str, pa.Array]:
        """The raw (trimmed) fields of a batch -> `host`, `sni`, `uri`, `user_agent` as bronze keeps them and
        APP_COLUMNS; `uri` may be the whole URI or its first segment, `port` is the port as text."""
        host_index, host_answers = per_distinct([host, sni, uri, port, protocol], self._host_answer)
        agent_index, agent_answers = per_distinct([user_agent], self._agent_answer)
        host_cols, agent_cols = list(zip(*host_answers, strict=True)), list(zip(*agent_answers, strict=True))
        # (host, sni, uri, rank, rule) and (user_agent, rank, rule) per distinct key.
        host_rank = np.array(host_cols[3], dtype=float).reshape(-1, 3)[host_index]
        agent_rank = np.array(agent_cols[1], dtype=float).reshape(-1, 3)[agent_index]
        # Host-side and agent rules never tie (their kinds differ), so comparing the numeric rank decides.
        agent_wins = pa.array(_lexicographic_less(agent_rank, host_rank))
        host_rule = pa.array(host_cols[4], _RULE_TYPE).take(pa.array(host_index))
        agent_rule = pa.array(agent_cols[2], _RULE_TYPE).take(pa.array(agent_index))
        best = pc.if_else(agent_wins, agent_rule, host_rule)
        return {
            "host": pa.array(host_cols[0], pa.string()).take(pa.array(host_index)),
            "sni": pa.array(host_cols[1], pa.string()).take(pa.array(host_index)),
            "uri": pa.array(host_cols[2], pa.string()).take(pa.array(host_index)),
            "user_agent": pa.array(agent_cols[0], pa.string()).take(pa.array(agent_index)),
            "app_id": pc.fill_null(pc.struct_field(best, "app_id"), UNKNOWN),
            "app_category": pc.fill_null(pc.struct_field(best, "category"), UNKNOWN),
            "app_confidence": pc.fill_null(pc.struct_field(best, "confidence"), 0.0),
            "app_rule": pc.struct_field(best, "rule_id"),
        }

    def _host_answer(self, key: tuple[str, ...]) -> tuple:
        if (found := self._hosts.get(key)) is None:
            host, sni, uri, port, protocol = key
            rule = self.rules.host_rule(host, sni, uri, int(port) if port.isdigit() else None, protocol)
            segment = first_segment(uri).rstrip("/")
            found = self._hosts[key] = (normalise_host(host) or None, normalise_host(sni) or None,
                                        mask_digits_text(segment) or None, *_rank_and_rule(rule))
        return found

    def _agent_answer(self, key: tuple[str, ...]) -> tuple:
        if (found := self._agents.get(key[0])) is None:
            found = self._agents[key[0]] = (mask_digits_text(key[0])[:MAX_AGENT] or None,
                                            *_rank_and_rule(self.rules.agent_rule(key[0])))
        return found


def identify_apps(df: DataFrame, rules: AppRules) -> DataFrame:
    """`Identifier` over a Spark DataFrame of records with raw `host`, `sni`, `uri`, `user_agent`, `server_port`
    and `protocol`: replaces the first four as bronze keeps them and adds APP_COLUMNS (for tools, tests and
    benchmarks; ingest identifies while it parses)."""
    inputs = ["host", "sni", "uri", "user_agent", "server_port", "protocol"]
    keep = [f for f in df.schema.fields if f.name not in inputs[:4]]
    out_schema = T.StructType([*keep, *T.StructType.fromDDL(
        "host string, sni string, uri string, user_agent string, " + APP_DDL).fields])

    def identify(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        identifier = Identifier(rules)
        for batch in batches:
            text = [pc.cast(batch.column(name), pa.string()) for name in inputs]
            found = identifier.identify(*text[:4], text[4], text[5])
            yield pa.RecordBatch.from_arrays([*[batch.column(f.name) for f in keep], *found.values()],
                                             names=[*[f.name for f in keep], *found])

    return df.mapInArrow(identify, out_schema)


_RULE_TYPE = pa.struct([("app_id", pa.string()), ("category", pa.string()), ("confidence", pa.float64()),
                        ("rule_id", pa.string())])


def _rank_and_rule(rule: Rule | None) -> tuple[tuple[float, float, float], dict | None]:
    if rule is None:
        return _NO_RANK, None
    rank = _rank(rule)
    return (rank[0], rank[1], rank[2]), {"app_id": rule.app_id, "category": rule.category,
                                          "confidence": rule.confidence, "rule_id": rule.rule_id}


def _lexicographic_less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise a < b for rows of three numbers."""
    return (a[:, 0] < b[:, 0]) | ((a[:, 0] == b[:, 0]) & ((a[:, 1] < b[:, 1]) | (
        (a[:, 1] == b[:, 1]) & (a[:, 2] < b[:, 2]))))
