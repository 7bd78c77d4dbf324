"""Safe under concurrency, leaked keys and hostile input: two ingests at once, the key never in a plan or a log,
no key no run, odd landing files, a crash between two commits."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.errors import LakeError
from flowops.ingest.rollup import usage_daily
from flowops.lake.lock import TableLock
from flowops.steps.ingest import ingest_days
from flowops.synth import generate
from tests.conftest import CONF, ROOT, make_settings

pytestmark = pytest.mark.slow
DAY = "2026-01-02"
KEY = "a-distinctive-test-key-0f3c"


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    generate(out, subscribers=40, start_month="2026-01", months=1, seed=5, bad_rate=0.02, workers=1)
    return out


def flowops(*args: str, key: str | None = KEY, conf: Path = CONF) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "FLOWOPS_PII_KEY"}
    if key is not None:
        env["FLOWOPS_PII_KEY"] = key
    return subprocess.Popen([sys.executable, "-m", "flowops.cli", *args, "--conf", str(conf), "--master", "local[2]"],
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT / "lib")}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@dataclass
class Concurrent:
    """Two ingests of the same day started together, each in its own process, with Spark's event log on."""

    lake: Path
    events: Path
    codes: list[int]
    output: list[str]


@pytest.fixture(scope="module")
def concurrent(raw, tmp_path_factory) -> Concurrent:
    tmp = tmp_path_factory.mktemp("concurrent")
    conf, events, lake = tmp / "conf", tmp / "events", tmp / "lake"
    shutil.copytree(CONF, conf)
    events.mkdir()
    text = (conf / "pipeline.yml").read_text()
    (conf / "pipeline.yml").write_text(text.replace(
        "  conf: {}", f"  conf: {{spark.eventLog.enabled: 'true', spark.eventLog.compress: 'false', "
                      f"spark.eventLog.dir: 'file://{events}'}}"))
    # The test holds bronze's lock until both ingests have parsed the day and wait for it: then they race for
    # the lock with everything read, as two ingests started together do.
    gate = TableLock(lake / "bronze" / "usage_events", "test gate", timeout_s=60, stale_after_s=60)
    gate.acquire()
    both = [flowops("ingest", "--raw", str(raw), "--lake", str(lake), "--date", DAY, conf=conf) for _ in range(2)]
    output = [[] for _ in both]
    readers = [threading.Thread(target=_collect, args=(p, o)) for p, o in zip(both, output, strict=True)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 300
    try:
        while not all(any("is being written by test gate" in line for line in o) for o in output):
            assert time.monotonic() < deadline and all(p.poll() is None for p in both), output
            time.sleep(0.2)
    finally:
        gate.release()
    codes = [p.wait(timeout=600) for p in both]
    for reader in readers:
        reader.join()
    return Concurrent(lake, events, codes, ["".join(o) for o in output])


def _collect(proc: subprocess.Popen, lines: list[str]) -> None:
    for line in proc.stderr:   # line by line: the fixture watches for the "waiting" line while it runs
        lines.append(line)
    lines.extend(proc.stdout)


def test_two_ingests_of_the_same_day_at_once_land_each_record_once(spark, concurrent):
    assert concurrent.codes == [0, 0], [o[-2000:] for o in concurrent.output]
    ctx = Context(make_settings(concurrent.lake))
    bronze = ctx.lake.read("bronze/usage_events")
    keys = ctx.lake.read("restricted/subscriber_keys")
    assert bronze.count() == bronze.select("dt", "record_id").distinct().count() > 0
    assert keys.count() == keys.select("sub_id").distinct().count() > 0
    days = sorted(r.dt for r in bronze.select("dt").distinct().collect())
    expected = usage_daily(ctx.lake.read("bronze/usage_events", partitions={"dt": days}))
    silver = ctx.lake.read("silver/usage_daily", partitions={"dt": days})
    assert silver.exceptAll(expected).count() == 0 and expected.exceptAll(silver).count() == 0
    runs = ctx.lake.read("ops/runs").where("job = 'ingest'").collect()
    assert len(runs) == 2 and all(r.status == "ok" for r in runs)
    # Both runs tell the truth: every line accepted once (by whichever ran first), nothing lost.
    for run in runs:
        assert all(f.lines_in == f.accepted + f.quarantined + f.duplicates for f in run.files)
    assert runs[0].counts["accepted"] == runs[1].counts["accepted"]


def test_the_key_never_appears_in_a_plan_a_log_or_a_table(concurrent):
    assert concurrent.codes == [0, 0]
    key = KEY.encode()
    padded = key.ljust(64, b"\0")
    forms = {"key": key, "key hex": key.hex().encode(), "key base64": base64.b64encode(key),
             "inner pad hex": bytes(b ^ 0x36 for b in padded).hex().encode(),
             "outer pad hex": bytes(b ^ 0x5C for b in padded).hex().encode(),
             "key sha256": hashlib.sha256(key).hexdigest().encode()}
    logs = finished_event_log(concurrent.events)
    assert logs and sum(p.stat().st_size for p in logs) > 100_000   # the event log holds every plan
    places = {str(p): p.read_bytes() for p in logs}
    places.update({str(p): p.read_bytes() for p in concurrent.lake.rglob("*") if p.is_file()})
    places.update({f"output of run {i}": o.encode() for i, o in enumerate(concurrent.output)})
    leaks = [(name, where) for where, content in places.items() for name, form in forms.items() if form in content]
    assert leaks == []
    plans = [line for p in logs for line in p.read_text().splitlines() if "physicalPlanDescription" in line]
    assert len(plans) > 10   # the physical plan of every query was there to leak it


def finished_event_log(folder: Path, timeout_s: float = 60) -> list[Path]:
    """The event log's files once the driver JVMs (which outlive their Python processes briefly) have closed it."""
    deadline = time.monotonic() + timeout_s
    while any("inprogress" in p.name for p in folder.rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_production_run_without_a_key_fails_in_one_clear_line(raw, tmp_path):
    proc = flowops("ingest", "--raw", str(raw), "--lake", str(tmp_path / "lake"), "--date", DAY, key=None)

    assert proc.wait(timeout=300) == 1
    lines = proc.stderr.read().strip().splitlines()
    assert lines == ["flowops ingest: error: FLOWOPS_PII_KEY is not set: the pseudonymisation key must come from "
                     "the environment (only `flowops demo` runs on the public demo key)"]
    assert not (tmp_path / "lake" / "bronze").exists()


def test_a_lake_written_with_one_key_refuses_another(spark, raw, concurrent, tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    shutil.copytree(concurrent.lake, lake)
    before = sorted(p.name for p in (lake / "bronze" / "usage_events" / "_delta_log").iterdir())
    monkeypatch.setenv("FLOWOPS_PII_KEY", "another-key")
    ctx = Context(make_settings(lake))

    with pytest.raises(LakeError, match="was pseudonymised with another key"):
        ingest_days(ctx, raw, ["2026-01-03"])

    assert sorted(p.name for p in (lake / "bronze" / "usage_events" / "_delta_log").iterdir()) == before


def test_odd_landing_files_are_read_or_quarantined_never_skipped(spark, tmp_path):
    raw = tmp_path / "raw"
    hour = raw / "usage" / f"dt={DAY}" / "hour=10"
    hour.mkdir(parents=True)
    good = "r1|13812345678|460001234567890|863456789012341|2026-01-02 10:00:00|2026-01-02 10:00:05|4G|cmnet|1|HTTPS|" \
           "1.2.3.4|443||api.weixin.qq.com|||100|200"
    names = ["with space.txt.gz", "100%.txt.gz", "[x]{y}*?.txt.gz", "流量.txt.gz"]
    for i, name in enumerate(names):
        (hour / name).write_bytes(gzip.compress(good.replace("r1", f"r{i}").encode() + b"\n"))
    (hour / "notes.csv").write_text("not an xdr file\n")
    (raw / "usage" / f"dt={DAY}" / "stray.txt.gz").write_bytes(gzip.compress(b"x\n"))
    ctx = Context(make_settings(tmp_path / "lake"))

    run = ingest_days(ctx, raw, [DAY])

    statuses = {f.source_file.rsplit("/", 1)[1]: (f.status, f.accepted, f.quarantined) for f in run.files}
    assert statuses == {**{name: ("ok", 1, 0) for name in names}, "notes.csv": ("unexpected_file", 0, 0),
                        "stray.txt.gz": ("unexpected_file", 0, 0)}
    quarantine = ctx.lake.read("bronze/quarantine").where("reason = 'unexpected_file'").collect()
    assert sorted(r.source_file for r in quarantine) == [f"usage/dt={DAY}/hour=10/notes.csv",
                                                         f"usage/dt={DAY}/stray.txt.gz"]


TABLES = ("bronze/usage_events", "restricted/usage_cells", "restricted/subscriber_keys", "bronze/quarantine",
          "silver/user_agents", "silver/usage_daily", "silver/device_daily")


def content(ctx: Context) -> dict[str, tuple[int, int]]:
    """Rows and an order-free hash of every ingest table, run ids left out."""
    out = {}
    for table in TABLES:
        df = ctx.lake.read(table)
        cols = [c for c in df.columns if c != "run_id"]
        out[table] = (df.count(), df.select(F.sum(F.pmod(F.xxhash64(*cols), F.lit(1_000_000_007)))).first()[0])
    return out


@pytest.fixture(scope="module")
def clean_run(spark, raw, tmp_path_factory) -> dict:
    ctx = Context(make_settings(tmp_path_factory.mktemp("clean")))
    ingest_days(ctx, raw, [DAY])
    return content(ctx)


@pytest.mark.parametrize("crash_before", ["restricted/usage_cells", "bronze/quarantine", "silver/user_agents",
                                          "silver/device_daily"])
def test_a_crash_between_two_commits_is_finished_by_the_rerun_and_counted_truly(spark, raw, tmp_path, monkeypatch,
                                                                                clean_run, crash_before):
    ctx = Context(make_settings(tmp_path / "lake"))
    real_write = type(ctx.lake).write

    def write_or_die(lake, df, table, **kwargs):
        if getattr(table, "name", table) == crash_before:
            raise RuntimeError(f"killed before writing {crash_before} (phone 13812345678 in the message)")
        return real_write(lake, df, table, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(type(ctx.lake), "write", write_or_die)
        with pytest.raises(RuntimeError, match="killed before writing"):
            ingest_days(ctx, raw, [DAY])
    assert ctx.lake.exists("bronze/usage_events")

    rerun = ingest_days(ctx, raw, [DAY])

    assert content(ctx) == clean_run   # nothing lost, nothing twice
    assert rerun.counts["accepted"] == rerun.counts["accepted.by_earlier_runs"] > 0
    assert rerun.counts["duplicates"] == rerun.counts["duplicates.replayed_in_delivery"]
    assert all(f.balanced for f in rerun.files)
    bronze = ctx.lake.read("bronze/usage_events")
    by_file = Counter(r.source_file for r in bronze.select("source_file").collect())
    assert {f.source_file: f.accepted for f in rerun.files if f.accepted} == dict(by_file)
    failed = ctx.lake.read("ops/runs").where("status = 'failed'").first()
    assert failed.error == f"RuntimeError: killed before writing {crash_before} (phone 138******78 in the message)"
