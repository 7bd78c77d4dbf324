"""Load `conf/` into validated, typed settings.

Config is read once at the edge (CLI or job entry point) and passed in. Every error names the file, the
key and what was expected, so a data engineer editing YAML can fix it without reading Python.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flowops.errors import ConfigError

DEFAULT_CONF_DIR = Path("conf")
Engine = Literal["auto", "delta-rs", "spark-delta"]
ENV_OVERRIDES = {
    "FLOWOPS_LAKE_ROOT": ("lake", "root"),
    "FLOWOPS_MASTER": ("spark", "master"),
    "FLOWOPS_ENGINE": ("lake", "engine"),
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakeSettings(StrictModel):
    root: str = "./lakehouse"
    engine: Engine = "auto"
    lock_timeout_s: float = Field(600, gt=0)
    lock_stale_s: float = Field(30, gt=5)


class SparkSettings(StrictModel):
    master: str = "local[*]"
    app_name: str = "flowops"
    driver_memory: str = "8g"
    shuffle_partitions: int = Field(8, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("driver_memory")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+[kmgt]", value.lower()):
            raise ValueError(f"expected a JVM memory size like '4g' or '512m', got {value!r}")
        return value

    @field_validator("conf", mode="before")
    @classmethod
    def _spark_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            bad = [key for key in value if not str(key).startswith("spark.")]
            if bad:
                raise ValueError(f"expected only spark.* keys, got {bad}")
            return {str(key): str(val) for key, val in value.items()}
        return value


class PipelineSettings(StrictModel):
    timezone: str = "Asia/Shanghai"
    idle_hours: tuple[int, int] = (23, 7)
    late_arrival_days: int = Field(3, ge=0, le=31)

    @field_validator("idle_hours")
    @classmethod
    def _hours(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(0 <= hour <= 23 for hour in value) or value[0] == value[1]:
            raise ValueError(f"expected two different hours 0-23 [start, end), got {list(value)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA time zone like 'Asia/Shanghai', got {value!r}") from None
        return value


class PiiSettings(StrictModel):
    key_env: str = "FLOWOPS_PII_KEY"


class MlflowSettings(StrictModel):
    # False: jobs are not tracked as MLflow runs (the variable FLOWOPS_TRACKING=on|off overrides it).
    enabled: bool = True
    # None: a SQLite store and an artifact folder under the lake (LAKE/_mlflow/); MLFLOW_TRACKING_URI overrides both.
    tracking_uri: str | None = None
    experiment: str = "flowops"


class QualitySettings(StrictModel):
    # A checked frame of at most this many rows is collected once (Arrow) and validated by GX's pandas engine; a
    # larger one by GX's Spark engine on the cached frame. 0: always Spark.
    collect_below_rows: int = Field(1_000_000, ge=0)
    data_docs: bool = True   # the Data Docs site under LAKE/_quality, built at the end of a command


class Settings(StrictModel):
    """Everything in conf/pipeline.yml, after env and CLI overrides."""

    lake: LakeSettings = LakeSettings()
    spark: SparkSettings = SparkSettings()
    pipeline: PipelineSettings = PipelineSettings()
    pii: PiiSettings = PiiSettings()
    mlflow: MlflowSettings = MlflowSettings()
    quality: QualitySettings = QualitySettings()
    conf_dir: str = Field(default=str(DEFAULT_CONF_DIR), exclude=True)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """Read one YAML file, failing with the file and line on a syntax error or a key given twice."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def config_files(folder: Path) -> list[Path]:
    """The YAML files of a conf folder, `*.yml` and `*.yaml` alike (never one silently ignored), sorted."""
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, source: str | Path) -> M:
    """Validate `data` into `model`; errors list each bad key as `file: dotted.key: problem`."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """Turn pydantic's errors into `key: problem; key: problem`, in the words a YAML author uses."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problem = "unknown key"
        elif error["type"] == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            problem = f"expected {expected}; got {error.get('input')!r}"
        elif error["type"] == "missing":
            problem = "required key is missing"
        else:
            problem = error["msg"].removeprefix("Value error, ")
            if error["type"] not in ("value_error", "assertion_error"):
                problem = f"{problem}; got {error.get('input')!r}"
        parts.append(f"{key}: {problem}")
    return "; ".join(parts)


def load_settings(
    conf_dir: str | Path = DEFAULT_CONF_DIR,
    *,
    lake_root: str | None = None,
    master: str | None = None,
    engine: str | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Load conf/pipeline.yml, then apply env overrides, then CLI overrides (highest wins).

    Args:
        conf_dir: the conf folder.
        lake_root: `--lake` from the command line.
        master: `--master` from the command line.
        engine: `--engine` from the command line.
        environ: the environment to read overrides from (defaults to os.environ).
    """
    conf_dir = Path(conf_dir)
    if not conf_dir.is_dir():
        raise ConfigError(f"config folder {conf_dir} not found (pass --conf DIR, default is ./conf)")
    path = conf_dir / "pipeline.yml"
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    environ = os.environ if environ is None else environ
    for variable, (section, key) in ENV_OVERRIDES.items():
        if environ.get(variable):
            _set(data, section, key, environ[variable])
    for (section, key), value in {("lake", "root"): lake_root, ("spark", "master"): master,
                                  ("lake", "engine"): engine}.items():
        if value:
            _set(data, section, key, value)
    data["conf_dir"] = str(conf_dir)
    return validate(Settings, data, path)


def _set(data: dict[str, Any], section: str, key: str, value: str) -> None:
    block = data.get(section)
    if block is None:
        block = data[section] = {}
    if isinstance(block, dict):
        block[key] = value
