"""Brand accuracy of the user-agent resolver on real handsets (tests/data/handsets.csv: labelled user agents of
the brands common in China, from Matomo device-detector's and ua-parser-js's test data; see tests/data/README.md).
The per-brand table is printed (pytest -rP shows it); the test fails below 90% overall or on the hold-out rows,
which come from a source the device data was not built from."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from flowops.ingest.terminals import parse_user_agent

TABLE = Path(__file__).resolve().parents[1] / "data" / "handsets.csv"
HOLD_OUT = "faisalman/ua-parser-js"


def test_brand_accuracy_on_real_handsets_is_at_least_90_percent_overall_and_on_the_hold_out():
    with TABLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 300 and len({r["brand"] for r in rows}) >= 15
    right, seen, held, held_right = Counter(), Counter(), 0, 0
    for row in rows:
        brand = parse_user_agent(row["user_agent"])[0]
        seen[row["brand"]] += 1
        right[row["brand"]] += brand == row["brand"]
        if row["source"].startswith(HOLD_OUT):
            held += 1
            held_right += brand == row["brand"]
    overall = sum(right.values()) / len(rows)
    print(f"\nbrand accuracy on {len(rows)} real user agents: {overall:.1%} (hold-out {held_right / held:.1%} of "
          f"{held})")
    for brand in sorted(seen, key=lambda b: -seen[b]):
        print(f"  {brand:<10}{right[brand] / seen[brand]:>7.1%}  of {seen[brand]}")
    assert overall >= 0.9, f"{overall:.1%}"
    assert held_right / held >= 0.9, f"hold-out {held_right / held:.1%}"
