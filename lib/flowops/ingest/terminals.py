"""Terminal insight: which handset is behind an IMEI.

First the TAC (the IMEI's first 8 digits) in the operator's reference table `conf/terminals/*.csv`; for
TACs it lacks, the user agent: brand and marketing name from Matomo's device data (`device-detector`, which
knows the model codes of Chinese handsets: ELE-L29 is a Huawei P30, V2036A a vivo Y30, RMX2202 a realme GT),
the OS from `ua-parser` (smart or not from the OS), and ua-parser's brand when Matomo's data has none. Each
answer records its source: `tac`, `user_agent` or `unknown`.

device-detector tries hundreds of regular expressions per agent, so it runs here with RE2 sets choosing which of
them can match (`device_index`: the same answers, 9x faster), it is asked once per model code (an agent's code in a
fixed agent: the hundreds of app-specific agents of one handset cost one lookup), and only for agents without a code
is the whole agent parsed. The ingest keeps what it read (silver/user_agents, with `resolver_name`), so an agent is
read once, not every day it is seen.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flowops.errors import ConfigError
from flowops.landing import GENERATIONS

COLUMNS = ("tac", "brand", "model", "os", "network_gen", "is_smart", "price_tier")
PRICE_TIERS = ("low", "mid", "high", "flagship")
SMART_OS = ("Android", "iOS", "HarmonyOS", "iPadOS", "Windows Phone")
UA_SCHEMA = "brand string, model string, os string, is_smart boolean, network_gen string, price_tier string"
# Where agents name the handset's model code, and the OS such an agent is from (None: ua-parser reads it). Browsers on
# Android and HarmonyOS put it before " Build/" or after "HarmonyOS;" (ua-parser's generic rules sometimes take a
# browser name for the model instead: "HuaweiBrowser" -> "Browser"); Android apps and SDKs in their own
# parenthesis: "(Linux; U; Android 13; zh_CN; PHJ110; Build/...)", "(Android 14; PHB110)", "(android 13; ; PHJ110)",
# "(V2271A; Android 13)". A code is looked up once, however many agents carry it; one the device data does not
# know sends the whole agent to it, as an agent without a code goes.
_MODEL_CODE = ((re.compile(r";\s*([^;()]+?)\s+Build/"), None), (re.compile(r"HarmonyOS;\s*([^;()]+?)\s*[;)]"), None),
               (re.compile(r";\s*([^;()]+?);\s*Build/"), "Android"),
               (re.compile(r"\((?:Linux; )?(?:U; )?[Aa]ndroid [\d.]+;(?: [a-z]{2}[_-][A-Za-z]{2};)?(?: ;)?"
                           r"\s*([^;()]+?)\)"), "Android"),
               (re.compile(r"\(([^;()]+?); Android [\d.]+\)"), "Android"))


@dataclass(frozen=True)
class Terminal:
    tac: str | None
    brand: str | None
    model: str | None
    os: str | None
    network_gen: str | None
    is_smart: bool | None
    price_tier: str | None
    source: str  # tac | user_agent | unknown


@dataclass(frozen=True)
class ClassRule:
    """One rule of conf/terminals/classes.yml: when brand, model pattern, OS and smartness match, the value."""

    value: str
    brand: str | None = None
    model: re.Pattern | None = None
    os: tuple[str, ...] | None = None
    smart: bool | None = None

    def matches(self, brand: str | None, model: str | None, os_name: str | None, smart: bool | None) -> bool:
        return ((self.brand is None or self.brand == brand)
                and (self.model is None or bool(model and self.model.search(model)))
                and (self.os is None or os_name in self.os)
                and (self.smart is None or bool(smart) == self.smart))


@dataclass(frozen=True)
class HandsetClasses:
    """Network generation and price tier of a handset known only by its user agent (conf/terminals/classes.yml)."""

    network_gen: tuple[ClassRule, ...] = ()
    price_tier: tuple[ClassRule, ...] = ()

    @classmethod
    def load(cls, conf_dir: str | Path) -> HandsetClasses:
        """The rules, checked (an unknown key, generation, tier or a bad pattern names the file and rule); none
        when the file is absent."""
        from flowops.config import load_yaml

        path = Path(conf_dir) / "terminals" / "classes.yml"
        if not path.exists():
            return cls()
        data = load_yaml(path) or {}
        unknown = set(data) - {"network_gen", "price_tier"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)} (network_gen, price_tier)")

        def rules(section: str, field: str, allowed: tuple[str, ...]) -> tuple[ClassRule, ...]:
            out = []
            for number, rule in enumerate(data.get(section) or [], start=1):
                where = f"{path}: {section} rule {number}"
                if not isinstance(rule, dict) or set(rule) - {field, "brand", "model", "os", "smart"}:
                    raise ConfigError(f"{where}: expected {field} with optional brand, model, os, smart; got {rule!r}")
                if rule.get(field) not in allowed:
                    raise ConfigError(f"{where}: {field} must be one of {', '.join(allowed)}, got {rule.get(field)!r}")
                try:
                    pattern = re.compile(str(rule["model"]), re.IGNORECASE) if "model" in rule else None
                except re.error as exc:
                    raise ConfigError(f"{where}: model is not a regular expression: {exc}") from None
                os_names = rule.get("os")
                out.append(ClassRule(rule[field], rule.get("brand"), pattern,
                                     tuple(os_names) if isinstance(os_names, list) else None, rule.get("smart")))
            return tuple(out)

        return cls(rules("network_gen", "gen", GENERATIONS), rules("price_tier", "tier", PRICE_TIERS))

    def classify(self, brand: str | None, model: str | None, os_name: str | None,
                 smart: bool | None) -> tuple[str | None, str | None]:
        """(network_gen, price_tier): the first matching rule of each list, None when none matches."""
        def first(rules: tuple[ClassRule, ...]) -> str | None:
            return next((r.value for r in rules if r.matches(brand, model, os_name, smart)), None)
        return first(self.network_gen), first(self.price_tier)


def load_reference(conf_dir: str | Path, skip: Path | None = None) -> dict[str, Terminal]:
    """Read `conf/terminals/*.csv` (but `skip`, a file about to be replaced: then none left is no error); errors
    name the file, the line and the bad value."""
    folder = Path(conf_dir) / "terminals"
    files = [p for p in sorted(folder.glob("*.csv")) if skip is None or p.resolve() != skip.resolve()]
    if not files:
        if skip is not None:
            return {}
        raise ConfigError(f"no TAC reference files (*.csv) in {folder}")
    table: dict[str, Terminal] = {}
    for path in files:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                found = ",".join(reader.fieldnames or [])
                raise ConfigError(f"{path}: header must be {','.join(COLUMNS)}, got {found}")
            for number, row in enumerate(reader, start=2):
                terminal = _terminal(row, f"{path}:{number}")
                if terminal.tac in table:
                    raise ConfigError(f"{path}:{number}: TAC {terminal.tac} is listed twice")
                table[terminal.tac] = terminal  # type: ignore[index]
    return table


def _terminal(row: dict[str, str], where: str) -> Terminal:
    def fail(column: str, expected: str) -> ConfigError:
        return ConfigError(f"{where}: {column} must be {expected}, got {row[column]!r}")

    if not re.fullmatch(r"\d{8}", row["tac"]):
        raise fail("tac", "8 digits")
    if row["network_gen"] not in GENERATIONS:
        raise fail("network_gen", f"one of {', '.join(GENERATIONS)}")
    if row["is_smart"] not in ("true", "false"):
        raise fail("is_smart", "true or false")
    if row["price_tier"] not in PRICE_TIERS:
        raise fail("price_tier", f"one of {', '.join(PRICE_TIERS)}")
    for column in ("brand", "model", "os"):
        if not row[column].strip():
            raise fail(column, "non-empty")
    return Terminal(row["tac"], row["brand"], row["model"], row["os"], row["network_gen"],
                    row["is_smart"] == "true", row["price_tier"], "tac")


@lru_cache(maxsize=65536)
def parse_user_agent(user_agent: str) -> tuple[str | None, str | None, str | None, bool | None]:
    """(brand, model, os, is_smart) from a user agent; Nones when it says nothing about the handset. The model
    is the marketing name when the device data knows it, else the model code the agent carries."""
    from ua_parser import parse

    result = parse(user_agent)
    os_name = result.os.family if result.os else None
    if re.search(r"HarmonyOS|OpenHarmony", user_agent):
        os_name = "HarmonyOS"
    code, code_os = next(((found.group(1), implied) for pattern, implied in _MODEL_CODE
                          if (found := pattern.search(user_agent))), (None, None))
    brand, model, _ = _by_code(code) if code else (None, None, None)
    os_name = os_name or code_os
    if brand is None:
        brand, model, agent_os = _by_agent(user_agent)
        # App agents ("android/7.6.1 (android 13; ; PHJ110)") whose OS ua-parser cannot read: the device data's
        # smartphone OS, when it identified the handset (its guesses for other agents are not kept).
        os_name = os_name or (agent_os if agent_os in SMART_OS else None)
    if brand is None and result.device and result.device.brand and not result.device.brand.startswith("Generic"):
        brand, model = normal_brand(result.device.brand), model or result.device.model
    if model is None and result.device and result.device.family \
            and not result.device.family.startswith(("Generic", "Other")):
        model = result.device.family
    model = model or code
    if os_name is None and brand is None and model is None:
        return None, None, None, None
    # Smart or not from the OS only: the device data calls any handset it names a smartphone (a MIDP feature
    # phone's agent included).
    is_smart = os_name in SMART_OS if os_name else False
    return brand, model, os_name, is_smart


# Brand names as the TAC table and the tags spell them (device data and ua-parser spell some differently).
BRAND_NAMES = {"vivo": "vivo", "realme": "realme", "nubia": "nubia", "xiaomi": "Xiaomi", "oppo": "OPPO",
               "oneplus": "OnePlus", "zte": "ZTE", "huawei": "Huawei", "honor": "Honor", "iqoo": "vivo",
               "redmi": "Xiaomi", "poco": "Xiaomi", "pocophone": "Xiaomi"}
_CODE_AGENT = ("Mozilla/5.0 (Linux; Android 10; {} Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/100.0.0.0 Mobile Safari/537.36")


def normal_brand(brand: str | None) -> str | None:
    """A brand as the TAC table spells it (Redmi and POCO are Xiaomi's lines, iQOO vivo's)."""
    if not brand or brand.lower() in ("unknown", "generic"):
        return None
    return BRAND_NAMES.get(brand.lower().replace(" ", ""), brand)


@lru_cache(maxsize=65536)
def _by_code(code: str) -> tuple[str | None, str | None, None]:
    """(brand, marketing name, None) of a model code, from the device data (asked with the code in a fixed agent,
    whose OS says nothing of the handset's)."""
    return (*_by_agent(_CODE_AGENT.format(code))[:2], None)


@lru_cache(maxsize=65536)
def _by_agent(user_agent: str) -> tuple[str | None, str | None, str | None]:
    """(brand, marketing name, OS) of a user agent, from the device data; all None when it names no brand."""
    from flowops.ingest.device_index import DeviceDetector

    # What DeviceDetector.parse does, less the client (browser, app) parse: a fifth of its time, and no part of the
    # brand, model or OS it answers (the client only makes a device a TV).
    found = DeviceDetector(user_agent, skip_bot_detection=True)
    if not found.is_worthless():
        found.parse_os()
        found.parse_device()
    brand = normal_brand("coocaa" if found.os_name() == "Coolita OS" else found.device_brand())
    os_name = found.os_name() or None
    if os_name in ("", "UNK"):
        os_name = None
    return (brand, found.device_model() or None, os_name) if brand else (None, None, None)


def lookup(reference: dict[str, Terminal], tac: str | None = None, user_agent: str | None = None,
           classes: HandsetClasses | None = None) -> Terminal:
    """Identify one handset exactly as `identify_terminals` does in Spark."""
    if tac and tac in reference:
        return reference[tac]
    if user_agent:
        brand, model, os_name, is_smart, network_gen, price_tier = _from_agent(user_agent, classes)
        if os_name or brand or model:
            return Terminal(tac, brand, model, os_name, network_gen, is_smart, price_tier, "user_agent")
    return Terminal(tac, None, None, None, None, None, None, "unknown")


def _from_agent(user_agent: str, classes: HandsetClasses | None) -> tuple:
    brand, model, os_name, is_smart = parse_user_agent(user_agent)
    if not (os_name or brand or model):
        return brand, model, os_name, is_smart, None, None
    return (brand, model, os_name, is_smart, *(classes or HandsetClasses()).classify(brand, model, os_name, is_smart))


def reference_df(spark: SparkSession, reference: dict[str, Terminal]) -> DataFrame:
    """The reference table as a (small, broadcastable) DataFrame."""
    rows = [(t.tac, t.brand, t.model, t.os, t.network_gen, t.is_smart, t.price_tier) for t in reference.values()]
    return spark.createDataFrame(rows, "tac string, brand string, model string, os string, network_gen string, "
                                       "is_smart boolean, price_tier string")


def _parse_user_agents(classes: HandsetClasses, user_agents: pd.Series) -> pd.DataFrame:
    rows = [_from_agent(ua, classes) if isinstance(ua, str) and ua else (None,) * 6 for ua in user_agents]
    return pd.DataFrame(rows, columns=["brand", "model", "os", "is_smart", "network_gen", "price_tier"])


# Bump when parse_user_agent or _from_agent read agents differently: agents read before are then read again.
AGENT_RULES_VERSION = 2


def resolver_name(classes: HandsetClasses | None = None) -> str:
    """What reads user agents: the device data's and ua-parser's versions, these rules and the handset classes.
    An agent read by another resolver is read again (`silver/user_agents` keeps the name with each agent)."""
    import hashlib
    from importlib.metadata import version

    classes = classes or HandsetClasses()
    canonical = [(section, r.value, r.brand, r.model.pattern if r.model else None, r.model.flags if r.model else None,
                  r.os, r.smart) for section, rules in (("gen", classes.network_gen), ("tier", classes.price_tier))
                 for r in rules]
    rules = hashlib.sha256(repr(canonical).encode()).hexdigest()[:12]
    return (f"device-detector {version('device-detector')}; ua-parser {version('ua-parser')}; "
            f"agent rules v{AGENT_RULES_VERSION}; classes {rules}")


def unknown_agents(devices_df: DataFrame, reference: DataFrame) -> DataFrame:
    """The distinct user agents of rows whose TAC the reference table lacks: what `read_agents` must read."""
    known = F.broadcast(reference.select(F.col("tac").alias("_ref_tac")))
    return (devices_df.join(known, devices_df["tac"] == F.col("_ref_tac"), how="left_anti")
            .where(F.col("user_agent").isNotNull()).select("user_agent").distinct())


def read_agents(agents_df: DataFrame, classes: HandsetClasses | None = None) -> DataFrame:
    """`user_agent` and what it says of the handset (UA_SCHEMA's columns), for each row of `agents_df`."""
    # A vectorised UDF because Spark has no user-agent parser. Spread over every core: the distinct agents are
    # a few hundred KB, which adaptive execution would otherwise coalesce into one task, and the device data
    # costs milliseconds per agent (one core parsed them all).
    rules = classes or HandsetClasses()

    def parse(user_agents: pd.Series) -> pd.DataFrame:
        return _parse_user_agents(rules, user_agents)

    parse_udf = F.pandas_udf(parse, UA_SCHEMA)
    cores = agents_df.sparkSession.sparkContext.defaultParallelism
    return (agents_df.select("user_agent").repartition(2 * cores)
            .select("user_agent", parse_udf("user_agent").alias("_ua")).select("user_agent", "_ua.*"))


def identify_terminals(devices_df: DataFrame, reference: DataFrame, classes: HandsetClasses | None = None,
                       agents: DataFrame | None = None) -> DataFrame:
    """Add terminal attributes and `terminal_source` to rows carrying `tac` and `user_agent`.

    Args:
        agents: what `read_agents` returned for (at least) `unknown_agents(devices_df, reference)`, e.g. kept
            from earlier runs; read here when None.
    """
    if agents is None:
        agents = read_agents(unknown_agents(devices_df, reference), classes)
    known = F.broadcast(reference.withColumnRenamed("tac", "_ref_tac"))
    joined = devices_df.join(known, devices_df["tac"] == F.col("_ref_tac"), how="left")
    fields = [c for c in agents.columns if c != "user_agent"]
    read = agents.select("user_agent", F.struct(*fields).alias("_ua"))
    out = joined.join(read, on="user_agent", how="left")
    from_ua = F.col("_ref_tac").isNull() & (F.col("_ua.os").isNotNull() | F.col("_ua.brand").isNotNull()
                                            | F.col("_ua.model").isNotNull())
    source = F.when(F.col("_ref_tac").isNotNull(), "tac").when(from_ua, "user_agent").otherwise("unknown")
    return (
        out.withColumn("terminal_source", source)
        .withColumn("brand", F.when(from_ua, F.col("_ua.brand")).otherwise(F.col("brand")))
        .withColumn("model", F.when(from_ua, F.col("_ua.model")).otherwise(F.col("model")))
        .withColumn("os", F.when(from_ua, F.col("_ua.os")).otherwise(F.col("os")))
        .withColumn("is_smart", F.when(from_ua, F.col("_ua.is_smart")).otherwise(F.col("is_smart")))
        .withColumn("network_gen", F.when(from_ua, F.col("_ua.network_gen")).otherwise(F.col("network_gen")))
        .withColumn("price_tier", F.when(from_ua, F.col("_ua.price_tier")).otherwise(F.col("price_tier")))
        .drop("_ref_tac", "_ua")
    )
