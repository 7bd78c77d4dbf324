"""Tag definitions are checked before any Spark job: each mistake is one clear error naming the file and tag."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from flowops.errors import ConfigError
from flowops.segments import load_segments
from flowops.tags.base import BASE_COLUMNS
from flowops.tags.catalogue import catalogue_markdown
from flowops.tags.definitions import load_library, sql_identifiers
from flowops.tags.engine import check_expressions
from tests.conftest import CONF, ROOT


def conf_with(tmp_path: Path, text: str) -> Path:
    """A copy of the repo's conf with one more tag file, `extra.yml`."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "tags" / "extra.yml").write_text(textwrap.dedent(text), encoding="utf-8")
    return conf


def tag_file(*tags: str) -> str:
    return "group: extra\ntags:\n" + "".join(textwrap.indent(textwrap.dedent(t).strip(), "  ") + "\n" for t in tags)


def error_for(tmp_path: Path, *tags: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_library(conf_with(tmp_path, tag_file(*tags)))
    return str(caught.value)


@pytest.mark.parametrize(("tag", "message"), [
    ("- {name: x1, description: d, type: double, function: no_such_fn, args: {}}",
     r"extra\.yml: tag x1: unknown function 'no_such_fn'; known: band, "),
    ("- {name: x1, description: d, type: string, function: band, args: {column: dou_mb, edges: [1]}}",
     r"extra\.yml: tag x1: function band: missing argument\(s\) labels"),
    ("- {name: x1, description: d, type: string, function: band, args: {column: dou_mb, edges: [1], labels: [a, b], "
     "colour: red}}",
     r"extra\.yml: tag x1: function band: unknown argument\(s\) colour"),
    ("- {name: x1, description: d, type: double, expr: dou_mb * no_such_tag}",
     r"extra\.yml: tag x1: unknown dependency 'no_such_tag' in expr"),
    ("- {name: x1, description: d, type: double, function: ratio, args: {numerator: dou_mb, denominator: nope}}",
     r"extra\.yml: tag x1: function ratio: argument denominator: unknown dependency 'nope'"),
    ("- {name: x1, description: d, type: double, function: band, args: {column: dou_mb, edges: [1], labels: [a, b]}}",
     r"extra\.yml: tag x1: type clash: function band returns string, the tag declares double"),
    ("- {name: x1, description: d, type: string, function: band, args: {column: identity, edges: [1], labels: [a, b]}}",
     r"extra\.yml: tag x1: type clash: function band: argument column takes int or long or double, but identity is "
     r"string"),
    ("- {name: x1, description: d, type: string, function: band, args: {column: dou_mb, edges: [5, 1], "
     "labels: [a, b, c]}}",
     r"extra\.yml: tag x1: function band: edges must increase"),
    ("- {name: x1, description: d, type: double, function: ratio, args: {numerator: 3, denominator: dou_mb}}",
     r"extra\.yml: tag x1: function ratio: argument numerator must be a tag or base column name; got 3"),
    ("- {name: dou_mb, description: d, type: double, expr: data_mb_m0}",
     r"extra\.yml: tag dou_mb: already defined in .*consumption\.yml"),
    ("- {name: data_mb_m0, description: d, type: double, expr: dou_mb}",
     r"extra\.yml: tag data_mb_m0: the name is taken by a base or key column"),
    ("- {name: sub_id, description: d, type: string, expr: identity}",
     r"extra\.yml: tag sub_id: the name is taken by a base or key column"),
    ("- {name: x1, description: d, type: string, function: trend, args: {change: dou_change, rising: -0.5, "
     "falling: 0.3}}",
     r"extra\.yml: tag x1: function trend: rising \(-0\.5\) must be above falling \(0\.3\)"),
    ("- {name: x1, description: d, type: string, function: band, args: {column: dou_mb, edges: [.nan], "
     "labels: [a, b]}}",
     r"extra\.yml: tag x1: function band: argument edges must be a list of numbers"),
    ("- {name: x1, type: double, expr: dou_mb}",
     r"extra\.yml: tag x1 \(tags\.0\)\.description: required key is missing"),
    ("- {name: x1, description: d, type: float, expr: dou_mb}",
     r"extra\.yml: .*type must be one of string, boolean, int"),
    ("- {name: x1, description: d, type: double, expr: dou_mb, function: ratio}",
     r"extra\.yml: .*give exactly one of 'expr' or 'function'"),
])
def test_each_definition_mistake_is_one_clear_error(tmp_path, tag, message):
    assert re.search(message, error_for(tmp_path, tag)), error_for(tmp_path, tag)


def test_a_cycle_is_reported_with_its_path(tmp_path):
    message = error_for(tmp_path, "- {name: x1, description: d, type: double, expr: x2 + 1}",
                        "- {name: x2, description: d, type: double, expr: x3 * 2}",
                        "- {name: x3, description: d, type: double, expr: x1 - dou_mb}")
    assert re.search(r"extra\.yml: tag x1: dependency cycle x1 -> x2 -> x3 -> x1", message), message


def test_every_error_is_reported_at_once(tmp_path):
    message = error_for(tmp_path, "- {name: x1, description: d, type: double, expr: nope1}",
                        "- {name: x2, description: d, type: double, expr: nope2}")
    assert "tag x1: unknown dependency 'nope1'" in message and "tag x2: unknown dependency 'nope2'" in message


@pytest.mark.parametrize(("tag", "message"), [
    ("- {name: x1, description: d, type: double, expr: identity}",
     r"extra\.yml: tag x1: type clash: the expression gives string, the tag declares double"),
    ("- {name: x1, description: d, type: int, expr: dou_mb}",
     r"extra\.yml: tag x1: type clash: the expression gives double, the tag declares int"),
    ("- {name: x1, description: d, type: double, expr: 'dou_mb +* 2'}",
     r"extra\.yml: tag x1: expr does not parse"),
    ("- {name: x1, description: d, type: double, expr: no_such_function(dou_mb)}",
     r"extra\.yml: tag x1: .*no_such_function"),
])
def test_expressions_are_checked_by_spark_analysis_without_a_job(spark, tmp_path, tag, message):
    library = load_library(conf_with(tmp_path, tag_file(tag)))
    with pytest.raises(ConfigError, match=message):
        check_expressions(spark, library)


def test_the_shipped_library_passes_every_check(spark):
    library = load_library(CONF)
    check_expressions(spark, library)
    names = library.names
    assert len(names) == len(set(names)) > 100
    position = {n: i for i, n in enumerate(names)}
    assert all(position[d] < position[t.name] for t in library.tags for d in t.deps if d in position)


def test_sql_identifiers_skip_keywords_calls_fields_strings_and_lambda_arguments():
    expr = ("CASE WHEN a.b > 1 AND x IN ('y z') THEN CAST(foo AS DOUBLE) "
            "ELSE aggregate(arr, 0D, (acc, e) -> acc + e * w) END + `odd name`")
    assert sql_identifiers(expr) == ["a", "x", "foo", "arr", "w", "odd name"]
    assert sql_identifiers("a IS DISTINCT FROM b AND trim(BOTH FROM c) = 'x' -- d") == ["a", "b", "c"]
    assert sql_identifiers("extract(MONTH FROM Activation_Date) > 3 OR rlike(e, r'^f.g') IS UNKNOWN") == [
        "activation_date", "e"]


def test_segment_rules_name_unknown_tags_and_thresholds(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / "segments.yml"
    text = path.read_text(encoding="utf-8")
    library = load_library(conf)
    path.write_text(text.replace("when: has_complaints", "when: has_complaints OR grumpy"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"segments\.yml: rule complaints: unknown tag\(s\) grumpy"):
        load_segments(conf, library)
    path.write_text(text.replace("${low_mb}", "${tiny_mb}"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rule handset_ahead_of_plan: unknown threshold \$\{tiny_mb\}"):
        load_segments(conf, library)
    path.write_text(text.replace("stage: lift", "stage: order"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no rule gives stage\(s\) lift"):
        load_segments(conf, library)


def test_the_catalogue_lists_every_tag_and_the_committed_copy_is_current():
    library = load_library(CONF)
    text = catalogue_markdown(library)
    listed = re.findall(r"^\| `(\w+)` \| ", text, flags=re.M)
    assert {name: listed.count(name) for name in library.names} == {name: 1 for name in library.names}
    assert {c.name for c in BASE_COLUMNS} <= set(listed)
    committed = (ROOT / "docs" / "tags.md").read_text(encoding="utf-8")
    assert committed == text, "docs/tags.md is stale: run `flowops tags --catalog`"


@pytest.mark.parametrize("expr", ["reflect('java.lang.Runtime', 'getRuntime')", "JAVA_METHOD ('x', 'y')",
                                  "try_reflect('a', 'b')",
                                  "dou_mb + (SELECT max(value) FROM parquet.`/etc/secrets`)"])
def test_hostile_expressions_are_refused_before_anything_runs(tmp_path, expr):
    error = error_for(tmp_path, f"- {{name: x1, description: d, type: double, expr: \"{expr}\"}}")

    assert re.search(r"extra\.yml: tag x1: expr refused: (\w+\(\) calls Java methods|a subquery \(SELECT\))",
                     error), error


def test_segment_thresholds_are_typed_values_written_as_literals(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / "segments.yml"
    text = path.read_text(encoding="utf-8")
    library = load_library(conf)
    rule = next(r for r in load_segments(conf, library).rules if r.name == "falling_usage")
    assert "value_tier IN ('vip', 'high', 'mid')" in rule.when

    path.write_text(text.replace("falling_tiers: [vip, high, mid]", "falling_tiers: [\"vip') OR (true\", high]"),
                    encoding="utf-8")
    rule = next(r for r in load_segments(conf, library).rules if r.name == "falling_usage")
    assert "value_tier IN ('vip\\') OR (true', 'high')" in rule.when   # a value stays a value
    path.write_text(text.replace("when: has_complaints", "when: has_complaints OR java_method('a', 'b')"),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rule complaints: condition refused: java_method\(\) calls Java"):
        load_segments(conf, library)


def test_a_key_given_twice_and_yaml_files_of_either_extension(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "tags" / "extra.yaml").write_text("group: extra\ntags:\n  - {name: x1, description: d, type: double, "
                                              "expr: dou_mb * 2}\n", encoding="utf-8")
    assert "x1" in load_library(conf)   # *.yaml is read like *.yml, never ignored

    (conf / "tags" / "extra.yaml").write_text("group: extra\ntags:\n  - name: x1\n    description: d\n"
                                              "    type: double\n    expr: dou_mb * 2\n    expr: dou_mb * 3\n",
                                              encoding="utf-8")
    with pytest.raises(ConfigError, match=r"extra\.yaml: not valid YAML at line 7.*key 'expr' is given twice "
                                          r"\(first at line 6\)"):
        load_library(conf)
