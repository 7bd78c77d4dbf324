"""Config loading: typed settings, overrides, and errors that name the file, the key and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowops.config import load_settings
from flowops.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


def write_conf(tmp_path: Path, text: str) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "pipeline.yml").write_text(text)
    return conf


def test_repo_conf_loads_with_defaults():
    settings = load_settings(CONF, environ={})

    assert settings.lake.engine == "auto"
    assert settings.lake.root == "./lakehouse"
    assert settings.pipeline.timezone == "Asia/Shanghai"
    assert settings.pipeline.idle_hours == (23, 7)


def test_cli_overrides_env_which_overrides_the_file():
    env = {"FLOWOPS_LAKE_ROOT": "/env/lake", "FLOWOPS_MASTER": "spark://env:7077", "FLOWOPS_ENGINE": "delta-rs"}

    from_env = load_settings(CONF, environ=env)
    from_cli = load_settings(CONF, lake_root="/cli/lake", master="local[1]", engine="spark-delta", environ=env)

    assert (from_env.lake.root, from_env.spark.master, from_env.lake.engine) == (
        "/env/lake", "spark://env:7077", "delta-rs")
    assert (from_cli.lake.root, from_cli.spark.master, from_cli.lake.engine) == (
        "/cli/lake", "local[1]", "spark-delta")


def test_wrong_value_names_file_key_and_expectation(tmp_path):
    conf = write_conf(tmp_path, "lake:\n  engine: deltars\n")

    with pytest.raises(ConfigError) as err:
        load_settings(conf, environ={})

    assert str(err.value) == (f"{conf}/pipeline.yml: lake.engine: expected 'auto', 'delta-rs' or "
                              "'spark-delta'; got 'deltars'")


def test_unknown_key_is_refused(tmp_path):
    conf = write_conf(tmp_path, "spark:\n  shuffle_partition: 4\n")

    with pytest.raises(ConfigError, match=r"pipeline.yml: spark.shuffle_partition: unknown key"):
        load_settings(conf, environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("spark:\n  driver_memory: lots\n", "spark.driver_memory: expected a JVM memory size like '4g'"),
    ("spark:\n  conf: {executor.memory: 4g}\n", "spark.conf: expected only spark.* keys"),
    ("pipeline:\n  timezone: Mars/Olympus\n", "pipeline.timezone: expected an IANA time zone"),
    ("pipeline:\n  idle_hours: [7, 7]\n", "pipeline.idle_hours: expected two different hours 0-23"),
    ("spark:\n  shuffle_partitions: zero\n", "spark.shuffle_partitions: Input should be a valid integer"),
    ("lake: [1, 2\n", "not valid YAML at line 2"),
    ("- just\n- a list\n", "expected a mapping of sections, got list"),
])
def test_bad_values_get_clear_messages(tmp_path, text, message):
    conf = write_conf(tmp_path, text)

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("*", r"\*")):
        load_settings(conf, environ={})


def test_missing_conf_folder_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="config folder .*nope not found \\(pass --conf DIR"):
        load_settings(tmp_path / "nope", environ={})
