"""The README describes what is written: each column it documents for gold/campaign_results and each key it
documents for an export's manifest.json is in what the code writes, and nothing written goes undocumented."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from flowops.errors import LandingError
from flowops.lake.tables import CAMPAIGN_RESULTS
from flowops.landing import next_month, previous_months, shift_month
from flowops.scenarios.templates import load_channels
from flowops.steps import target
from tests.conftest import CONF, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
TICKED = re.compile(r"`([^`]+)`")


def section(heading: str) -> str:
    """The README's text under the heading that starts with `heading`, to the next heading."""
    match = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#+ |\Z)", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no heading starting {heading!r}"
    return match.group(1)


def documented_result_columns() -> set[str]:
    """The names in the first cell of each row of the evaluation's column table."""
    rows = [line for line in section("Evaluation: did it work").splitlines() if line.startswith("| `")]
    return {name for line in rows for name in TICKED.findall(line.split("|")[1])}


def documented_result_keys() -> set[str]:
    """The key columns the "Where things land" row of gold/campaign_results names."""
    row = next(line for line in section("Where things land").splitlines() if "`gold/campaign_results`" in line)
    return set(TICKED.findall(row)) - {"gold/campaign_results"}


def documented_manifest_keys() -> tuple[set[str], set[str]]:
    """(keys, keys per entry of `files`) of a channel folder's manifest.json, as the exports paragraph lists them:
    `(`month`, ...; `files`, per file `file`, ...; `written_at`)`."""
    text = section("Scenarios, the contact policy and the exports")
    listed = re.search(r"`manifest\.json` per channel folder \(([^)]*)\)", text)
    assert listed, "the exports paragraph lists no keys of a channel folder's manifest.json"
    per_file = re.search(r"`files`([^;]*);", listed.group(1))
    assert per_file, "the exports paragraph lists no keys of the manifest's files"
    file_keys = set(TICKED.findall(per_file.group(1)))
    return set(TICKED.findall(listed.group(1))) - file_keys, file_keys


def written_manifest(root: Path) -> dict:
    """The manifest.json `steps/target.write_exports` writes in the SMS folder of a wave of two rows."""
    rows = pd.DataFrame({"channel": ["sms", "sms"], "scenario": ["data_no_plan", "data_no_plan"],
                         "sub_id": ["s2", "s1"], "msisdn": ["13800000002", "13800000001"],
                         "message": ["hello", "=cmd"], "contact_date": ["2026-04-05", "2026-04-05"],
                         "window_end": ["2026-04-09", "2026-04-09"], "priority": [0, 0]})
    args = [root, "2026-03", "2026-04", 1, rows, load_channels(CONF), "20260401T000000-abcdef12"]
    if "scenarios" in inspect.signature(target.write_exports).parameters:   # the wave's scenarios, for its manifest
        args.append({"data_no_plan": target.WaveScenario(dt.date(2026, 4, 5), dt.date(2026, 4, 9), ("sms",))})
    target.write_exports(*args)
    return json.loads((root / "month=2026-03" / "wave=1" / "channel=sms" / "manifest.json").read_text(encoding="utf-8"))


def test_every_documented_column_of_campaign_results_is_written_and_every_written_one_documented():
    written = set(CAMPAIGN_RESULTS.schema.fieldNames())
    columns, keys = documented_result_columns(), documented_result_keys()
    assert len(columns) > 20  # the table was found and read
    assert columns - written == set(), "documented in the README but not written"
    assert keys - written == set(), "named as keys in the README but not written"
    assert written - columns - keys == set(), "written but not documented in the README"


def test_every_documented_manifest_key_is_written_and_every_written_one_documented(tmp_path):
    written = written_manifest(tmp_path / "exports")
    keys, file_keys = documented_manifest_keys()

    assert written["files"][0]["rows"] == 2   # the manifest of what was written was found and read
    assert keys - set(written) == set(), "documented in the README but not written"
    assert file_keys - set(written["files"][0]) == set(), "documented in the README but not written"
    assert set(written) - keys == set(), "written but not documented in the README"
    assert set(written["files"][0]) - file_keys == set(), "written but not documented in the README"


def test_month_arithmetic_crosses_years_both_ways_and_refuses_a_malformed_month():
    assert [shift_month("2026-01", k) for k in (-13, -1, 0, 1, 12)] == ["2024-12", "2025-12", "2026-01", "2026-02",
                                                                        "2027-01"]
    assert next_month("2026-12") == "2027-01"
    assert previous_months("2026-02", 3) == ["2025-11", "2025-12", "2026-01"]
    with pytest.raises(LandingError):
        shift_month("2026-13", 1)
