"""The DuckDB baseline: what a single-machine engineer would write to do the same ingest work, without Spark.

Same files, same cores: check every gzip file whole (zlib, one process per core), read the lines with their
file and line number, split and validate them with a reason for each reject, drop replays (same day and
record id), hash the msisdn with the key, map the host to an app by its domain suffix, identify each
subscriber-day's handset (the TAC table, else its most-sent user agent read by the same device data flowops
uses, each distinct agent once, one process per core), and write bronze, silver usage (subscriber x day x app x
RAT x idle) and silver devices (subscriber x day x TAC) as zstd Parquet partitioned by day.

What it leaves out of flowops' work: the Luhn check, app rules beyond a host-suffix lookup (URI prefixes,
user-agent tokens, ports), dedupe against earlier deliveries, reconciliation, quarantine files, the cells and
keys tables, and Delta commits. `--no-handsets` leaves out the handsets too (the baseline before issue 10).

    python -m tests.benchmarks.duckdb_ingest RAW OUT [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from flowops.ingest.apps import AppRules
from flowops.ingest.lines import check_file

ROOT = Path(__file__).resolve().parents[2]
QUERY = """
CREATE TEMP TABLE lines AS
SELECT filename AS source_file, line, row_number() OVER (PARTITION BY filename) AS line_no
FROM read_csv({files}, columns={{'line': 'VARCHAR'}}, delim='\\x1f', quote='', escape='', header=false,
              filename=true, ignore_errors=true, strict_mode=false, auto_detect=false);

CREATE TEMP TABLE parsed AS
WITH split AS (
    SELECT source_file, line_no, line, string_split(line, '|') AS f FROM lines
), typed AS (
    SELECT *, len(f) AS n,
        regexp_replace(trim(f[2]), '^(\\+86|0086|86)(1[0-9]{{10}})$', '\\2') AS msisdn,
        try_strptime(f[5], ['%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%d %H:%M:%S']) AS st,
        try_strptime(f[6], ['%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%d %H:%M:%S']) AS et,
        TRY_CAST(f[17] AS BIGINT) AS ul, TRY_CAST(f[18] AS BIGINT) AS dl,
        lower(regexp_replace(coalesce(nullif(trim(f[13]), ''), trim(f[14])), ':[0-9]+$', '')) AS name
    FROM split
)
SELECT source_file, line_no, line, f[1] AS record_id, msisdn, f[4] AS imei, st, et, ul, dl, name,
    nullif(trim(f[16]), '') AS user_agent,
    upper(f[7]) AS rat, st::DATE AS dt, (hour(st) >= 23 OR hour(st) < 7) AS is_idle,
    CASE
        WHEN n <> 18 THEN 'wrong_field_count'
        WHEN f[1] = '' THEN 'missing_record_id'
        WHEN NOT regexp_full_match(msisdn, '1[3-9][0-9]{{9}}') THEN 'invalid_msisdn'
        WHEN f[4] <> '' AND NOT regexp_full_match(f[4], '[0-9]{{14,16}}') THEN 'invalid_imei'
        WHEN NOT regexp_full_match(f[17], '-?[0-9]{{1,18}}') OR NOT regexp_full_match(f[18], '-?[0-9]{{1,18}}')
            THEN 'bad_number'
        WHEN ul < 0 OR dl < 0 THEN 'negative_bytes'
        WHEN st IS NULL OR et IS NULL THEN 'bad_timestamp'
        WHEN et < st THEN 'end_before_start'
        WHEN upper(trim(f[7])) NOT IN ('2G', '3G', '4G', '5G') THEN 'invalid_rat'
        WHEN upper(trim(f[10])) NOT IN ('HTTP', 'HTTPS', 'QUIC', 'DNS', 'OTHER') THEN 'invalid_protocol'
    END AS reason
FROM typed;

CREATE TEMP TABLE bronze AS
SELECT p.*, sha256('{key}' || msisdn) AS sub_id,
    coalesce(a4.app_id, a3.app_id, a2.app_id, 'unknown') AS app_id
FROM (SELECT * FROM parsed WHERE reason IS NULL
      QUALIFY row_number() OVER (PARTITION BY dt, record_id ORDER BY source_file, line_no) = 1) p
LEFT JOIN apps a4 ON a4.suffix = array_to_string(string_split(p.name, '.')[-4:], '.')
LEFT JOIN apps a3 ON a3.suffix = array_to_string(string_split(p.name, '.')[-3:], '.')
LEFT JOIN apps a2 ON a2.suffix = array_to_string(string_split(p.name, '.')[-2:], '.');

COPY (SELECT * EXCLUDE (line, msisdn, user_agent) FROM bronze) TO '{out}/bronze' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY dt);
COPY (SELECT source_file, line_no, reason, line FROM parsed WHERE reason IS NOT NULL)
    TO '{out}/quarantine.parquet' (FORMAT parquet, COMPRESSION zstd);
COPY (SELECT dt, sub_id, app_id, rat, is_idle, sum(ul) AS ul_bytes, sum(dl) AS dl_bytes,
             sum(ul + dl) AS total_bytes, count(*) AS records, sum(epoch_ms(et) - epoch_ms(st)) / 1000.0 AS duration_s
      FROM bronze GROUP BY ALL) TO '{out}/silver' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY dt);
"""

# Each subscriber-day's handset: its TAC's row in the handset table, else what its most-sent agent says.
HANDSETS = """
CREATE TEMP TABLE handsets AS
SELECT dt, sub_id, tac, arg_max(user_agent, records) FILTER (WHERE user_agent IS NOT NULL) AS user_agent,
    sum(records) AS records, sum(total_bytes) AS total_bytes
FROM (SELECT dt, sub_id, nullif(left(imei, 8), '') AS tac, user_agent, count(*) AS records,
             sum(ul + dl) AS total_bytes FROM bronze GROUP BY ALL)
GROUP BY ALL;
CREATE TEMP TABLE wanted AS
SELECT DISTINCT user_agent FROM handsets h ANTI JOIN terminals t ON h.tac = t.tac WHERE user_agent IS NOT NULL;
"""
DEVICES = """
COPY (SELECT h.dt, h.sub_id, h.tac, coalesce(t.brand, a.brand) AS brand, coalesce(t.model, a.model) AS model,
             coalesce(t.os, a.os) AS os, coalesce(t.network_gen, a.network_gen) AS network_gen,
             coalesce(t.is_smart, a.is_smart) AS is_smart, coalesce(t.price_tier, a.price_tier) AS price_tier,
             CASE WHEN t.tac IS NOT NULL THEN 'tac'
                  WHEN coalesce(a.brand, a.model, a.os) IS NOT NULL THEN 'user_agent' ELSE 'unknown' END
                 AS terminal_source, h.records, h.total_bytes
      FROM handsets h LEFT JOIN terminals t ON h.tac = t.tac LEFT JOIN agents a ON h.user_agent = a.user_agent)
    TO '{out}/devices' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY dt);
"""


def _read_agents(agents: list[str]) -> list[tuple]:
    """What the device data says of each agent, exactly as flowops reads it (one call per process)."""
    from flowops.ingest.terminals import HandsetClasses, _from_agent

    classes = HandsetClasses.load(ROOT / "conf")
    return [(agent, *_from_agent(agent, classes)) for agent in agents]


def run(raw: Path, out: Path, threads: int = 2, key: str = "bench-key", handsets: bool = True) -> dict:
    """Run the baseline on every xDR file under `raw`; returns seconds and row counts."""
    import duckdb

    from flowops.ingest.terminals import load_reference

    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(str(p) for p in raw.glob("usage/dt=*/hour=*/*.txt.gz"))
    rules = AppRules.load(ROOT / "conf")
    started = time.perf_counter()
    # One process per core, for the whole-file check and the device data. Spawned, not forked: every segfault this
    # baseline had (three in 2026-11, one before it read handsets) was in a process forked after DuckDB was loaded.
    with ProcessPoolExecutor(threads, mp_context=multiprocessing.get_context("spawn")) as pool:
        checks = list(pool.map(check_file, paths, paths, chunksize=16))
        good = [c.source_file for c in checks if c.ok]
        con = duckdb.connect()
        con.execute(f"SET threads TO {threads}")
        # Bounded like flowops' JVM (8 GB driver): larger months spill to disk instead of being killed by the kernel
        # (unbounded, the 30 M-line step took 20 GB and was OOM-killed).
        con.execute("SET memory_limit = '8GB'")
        con.execute(f"SET temp_directory = '{out / 'spill'}'")
        con.execute("SET preserve_insertion_order = true")
        con.execute("CREATE TEMP TABLE apps (suffix VARCHAR, app_id VARCHAR)")
        con.executemany("INSERT INTO apps VALUES (?, ?)", [(r.key, r.app_id) for r in rules.rules if r.kind == "host"])
        files = "[" + ", ".join(f"'{f}'" for f in good) + "]"
        con.execute(QUERY.format(files=files, key=key, out=out))
        agents = 0
        if handsets:
            con.execute("CREATE TEMP TABLE terminals (tac VARCHAR, brand VARCHAR, model VARCHAR, os VARCHAR, "
                        "network_gen VARCHAR, is_smart BOOLEAN, price_tier VARCHAR)")
            con.executemany("INSERT INTO terminals VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(t.tac, t.brand, t.model, t.os, t.network_gen, t.is_smart, t.price_tier)
                             for t in load_reference(ROOT / "conf").values()])
            con.execute(HANDSETS)
            wanted = [row[0] for row in con.execute("SELECT user_agent FROM wanted").fetchall()]
            agents = len(wanted)
            read = [row for part in pool.map(_read_agents, [wanted[i::threads] for i in range(threads)]) for row in part]
            con.execute("CREATE TEMP TABLE agents (user_agent VARCHAR, brand VARCHAR, model VARCHAR, os VARCHAR, "
                        "is_smart BOOLEAN, network_gen VARCHAR, price_tier VARCHAR)")
            if read:
                con.executemany("INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, ?)", read)
            con.execute(DEVICES.format(out=out))
        seconds = time.perf_counter() - started
    counts = con.execute("SELECT (SELECT count(*) FROM lines), (SELECT count(*) FROM bronze), "
                         "(SELECT count(*) FROM parsed WHERE reason IS NOT NULL)").fetchone()
    return {"seconds": seconds, "files": len(paths), "bad_files": len(paths) - len(good), "lines": counts[0],
            "bronze": counts[1], "rejected": counts[2], "threads": threads, "handsets": handsets, "agents": agents}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-handsets", dest="handsets", action="store_false",
                        help="leave out the handsets (the baseline before issue 10)")
    args = parser.parse_args()
    print(json.dumps(run(args.raw, args.out, args.threads, handsets=args.handsets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
