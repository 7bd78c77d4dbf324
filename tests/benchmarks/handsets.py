"""Handset identification from user agents: brand accuracy and speed of flowops' resolver against ua-parser
alone (the resolver before device-detector: its brand was exactly ua-parser's), same machine, same run.

    .venv/bin/python -m tests.benchmarks.handsets [--agents RAW]   # RAW: a generated landing folder

Accuracy on tests/data/handsets.csv. Speed in distinct agents per second on one core, cold caches: on the check
table (every agent a different handset: the worst case, one device-data lookup per agent) and, with --agents, on
the distinct agents of a generated landing folder (many apps' agents per handset: one lookup per model code).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import time
from collections import Counter
from pathlib import Path

from tests.unit.test_handsets import HOLD_OUT, TABLE


def uap_brand(agent: str) -> str | None:
    from ua_parser import parse

    from flowops.ingest.terminals import normal_brand

    device = parse(agent).device
    return normal_brand(device.brand) if device and device.brand and not device.brand.startswith("Generic") \
        else None


def flowops_brand(agent: str) -> str | None:
    from flowops.ingest.terminals import parse_user_agent

    return parse_user_agent(agent)[0]


def clear() -> None:
    from flowops.ingest import terminals

    for cached in (terminals.parse_user_agent, terminals._by_code, terminals._by_agent):
        cached.cache_clear()


def rate(resolve, agents: list[str]) -> float:
    clear()
    resolve("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/1.0 Mobile Safari/537.36")   # load
    clear()
    started = time.perf_counter()
    for agent in agents:
        resolve(agent)
    return len(agents) / (time.perf_counter() - started)


def landed_agents(raw: Path, limit: int = 20000) -> list[str]:
    """Distinct user agents (field 16) of a generated landing folder's xDR files."""
    seen: dict[str, None] = {}
    for path in sorted(raw.glob("usage/dt=*/hour=*/*.txt.gz")):
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split("|")
                    if len(fields) > 15 and fields[15]:
                        seen.setdefault(fields[15], None)
        except (EOFError, OSError):   # the generator plants truncated and corrupt files
            continue
        if len(seen) >= limit:
            break
    return list(seen)[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=Path, help="a generated landing folder, for its distinct agents")
    args = parser.parse_args()
    with TABLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    agents = [r["user_agent"] for r in rows]
    print(f"| resolver | brand accuracy ({len(rows)} agents) | hold-out | agents/s, check table | s per million "
          "distinct agents |" + (" agents/s, landed agents |" if args.agents else ""))
    print("|---|---|---|---|---|" + ("---|" if args.agents else ""))
    landed = landed_agents(args.agents) if args.agents else []
    for name, resolve in (("ua-parser alone (before)", uap_brand), ("flowops (device-detector + ua-parser)",
                                                                    flowops_brand)):
        right = Counter(resolve(r["user_agent"]) == r["brand"] for r in rows)
        held = [r for r in rows if r["source"].startswith(HOLD_OUT)]
        held_right = sum(resolve(r["user_agent"]) == r["brand"] for r in held)
        speed = rate(resolve, agents)
        extra = f" {rate(resolve, landed):,.0f} ({len(landed):,} agents) |" if landed else ""
        print(f"| {name} | {right[True] / len(rows):.1%} | {held_right / len(held):.1%} | {speed:,.0f} | "
              f"{1e6 / speed:,.0f} |{extra}")
    per = Counter(r["brand"] for r in rows)
    good = Counter(r["brand"] for r in rows if flowops_brand(r["user_agent"]) == r["brand"])
    before = Counter(r["brand"] for r in rows if uap_brand(r["user_agent"]) == r["brand"])
    print("\n| brand | rows | before | flowops |\n|---|---|---|---|")
    for brand in sorted(per, key=lambda b: -per[b]):
        print(f"| {brand} | {per[brand]} | {before[brand] / per[brand]:.0%} | {good[brand] / per[brand]:.0%} |")


if __name__ == "__main__":
    main()
