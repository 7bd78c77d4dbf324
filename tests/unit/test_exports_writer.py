"""The export writer as a channel system sees it: one manifest per wave, written last, every channel of the wave's
scenarios listed (an empty one with 0 rows); byte-identical reruns keep the first run id; everything fsynced before
the rename; and a writer killed (`kill -9`) anywhere leaves nothing behind once the next one has run, the wave folder
being the previous one or the new one, whole."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flowops.lake import dropfolder
from flowops.lake.lock import LOCK_FILE
from flowops.scenarios.templates import load_channels
from flowops.steps.target import WaveExport, WaveScenario, write_exports
from tests.conftest import CONF, ROOT

MONTH, CAMPAIGN = "2026-03", "2026-04"
CHANNELS = load_channels(CONF)
SCENARIOS = {
    "data_no_plan": WaveScenario(dt.date(2026, 4, 5), dt.date(2026, 4, 9), ("sms", "outbound", "app")),
    "idle_no_pack": WaveScenario(dt.date(2026, 4, 3), dt.date(2026, 4, 12), ("sms", "web")),
}
COLUMNS = ["month", "sub_id", "scenario", "mode", "channel", "product_id", "family", "msisdn", "manager_id", "message",
           "trigger_event", "priority", "contact_date", "window_end", "expected_value", "cost_yuan", "care_max_cost"]


def row(sub: str, scenario: str, channel: str, msisdn: str, message: str, priority: int = 1) -> list:
    mode = CHANNELS[channel].mode
    trigger = CHANNELS[channel].trigger
    return [MONTH, sub, scenario, mode, channel, "DP_10", "data_plan", msisdn, None, message, trigger, priority,
            dt.date(2026, 4, 5), dt.date(2026, 4, 9), 1.5, 0.05, None]


def version(n: int) -> pd.DataFrame:
    """A wave's export rows; `n` changes every message. Nothing goes to outbound, app or web."""
    return pd.DataFrame([
        row("s1", "data_no_plan", "sms", "13800000001", f"套餐推荐 v{n} 回复TD退订"),
        row("s2", "data_no_plan", "sms", "13800000002", f"套餐推荐 v{n} 回复TD退订"),
        row("s3", "idle_no_pack", "sms", "13800000003", f"闲时包 v{n} 回复TD退订"),
    ], columns=COLUMNS)


def write(root: Path, rows: pd.DataFrame, run_id: str, *, month: str = MONTH, wave: int = 1,
          scenarios: dict[str, WaveScenario] = SCENARIOS) -> WaveExport:
    return write_exports(root, month, CAMPAIGN, wave, rows, CHANNELS, run_id, scenarios, lock_timeout_s=5)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def csvs_of(folder: Path) -> dict[str, bytes]:
    return {name: body for name, body in files_of(folder).items() if name.endswith(".csv")}


def hidden(root: Path) -> list[Path]:
    """Staging and old folders (and anything else hidden) anywhere under the exports."""
    return sorted(p for p in root.rglob("*") if p.name.startswith("."))


def assert_whole(folder: Path, csvs: dict[str, bytes], run_id: str) -> None:
    """The wave folder holds exactly these CSV files, as its manifests say, under one run id."""
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {f["file"]: f for channel in manifest["channels"].values() for f in channel["files"]}
    assert csvs_of(folder) == csvs
    assert set(listed) == set(csvs)
    for name, entry in listed.items():
        assert entry["sha256"] == hashlib.sha256(csvs[name]).hexdigest()
        assert entry["rows"] == csvs[name].count(b"\n") - 1
    assert manifest["run_id"] == run_id
    assert {json.loads(p.read_text())["run_id"] for p in folder.glob("channel=*/manifest.json")} == {run_id}


def test_the_wave_manifest_lists_every_channel_of_its_scenarios_an_empty_one_with_0_rows_and_is_written_last(
        tmp_path, monkeypatch):
    written: list[Path] = []
    real = dropfolder.private_write

    def recording(path: Path, body: bytes) -> None:
        written.append(path)
        real(path, body)

    monkeypatch.setattr(dropfolder, "private_write", recording)
    root = tmp_path / "exports"

    result = write(root, version(1), "R1")

    folder = root / f"month={MONTH}" / "wave=1"
    assert (result.folder, result.changed, result.run_id) == (folder, True, "R1")
    manifest = json.loads((folder / "manifest.json").read_text())
    sha = {name: hashlib.sha256(body).hexdigest() for name, body in csvs_of(folder).items()}
    assert manifest == {
        "month": MONTH, "campaign_month": CAMPAIGN, "wave": 1, "run_id": "R1",
        "contact_window": {"start": "2026-04-03", "end": "2026-04-12"},
        "scenarios": {
            "data_no_plan": {"contact_window": {"start": "2026-04-05", "end": "2026-04-09"},
                             "channels": ["sms", "outbound", "app"]},
            "idle_no_pack": {"contact_window": {"start": "2026-04-03", "end": "2026-04-12"},
                             "channels": ["sms", "web"]}},
        "channels": {
            "sms": {"mode": "active", "kind": "sms", "scenarios": ["data_no_plan", "idle_no_pack"], "rows": 3,
                    "files": [
                        {"file": "channel=sms/data_no_plan.csv", "scenario": "data_no_plan", "rows": 2,
                         "sha256": sha["channel=sms/data_no_plan.csv"]},
                        {"file": "channel=sms/idle_no_pack.csv", "scenario": "idle_no_pack", "rows": 1,
                         "sha256": sha["channel=sms/idle_no_pack.csv"]}]},
            # Channels the wave's scenarios could use and nobody was sent to: listed, 0 rows, no files, no folder.
            "outbound": {"mode": "active", "kind": "call", "scenarios": ["data_no_plan"], "rows": 0, "files": []},
            "app": {"mode": "passive", "kind": "display", "scenarios": ["data_no_plan"], "rows": 0, "files": []},
            "web": {"mode": "passive", "kind": "display", "scenarios": ["idle_no_pack"], "rows": 0, "files": []}},
        "rows": 3,
        "written_at": manifest["written_at"],
    }
    assert sorted(p.name for p in folder.iterdir()) == ["channel=sms", "manifest.json"]
    # The wave's manifest is the last file written, after every file it lists and the channels' manifests.
    staging = root / f"month={MONTH}" / ".wave=1.R1.tmp"
    assert [p.relative_to(staging).as_posix() for p in written] == [
        "channel=sms/data_no_plan.csv", "channel=sms/idle_no_pack.csv", "channel=sms/manifest.json", "manifest.json"]
    assert max(p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()) == (
        folder / "manifest.json").stat().st_mtime_ns


def test_an_empty_wave_still_gets_its_manifest_with_every_channel_at_0_rows(tmp_path):
    root = tmp_path / "exports"

    write(root, version(1).iloc[0:0], "R1")

    folder = root / f"month={MONTH}" / "wave=1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert files_of(folder).keys() == {"manifest.json"}
    assert {c: (e["rows"], e["files"]) for c, e in manifest["channels"].items()} == {
        "sms": (0, []), "outbound": (0, []), "app": (0, []), "web": (0, [])}
    assert manifest["rows"] == 0


def test_a_byte_identical_rerun_keeps_the_folder_and_the_first_run_id_a_changed_one_writes_its_own(tmp_path):
    root = tmp_path / "exports"
    folder = root / f"month={MONTH}" / "wave=1"
    write(root, version(1), "R1")
    before = files_of(folder)

    again = write(root, version(1), "R2")

    assert (again.changed, again.run_id) == (False, "R1")   # what run_target writes into ops/contact_history
    assert files_of(folder) == before
    changed = write(root, version(2), "R3")
    assert (changed.changed, changed.run_id) == (True, "R3")
    assert_whole(folder, csvs_of(folder), "R3")
    # Same CSV files, but the wave's scenarios now reach one more channel: the manifest changes, so does the folder.
    wider = {**SCENARIOS, "idle_no_pack": WaveScenario(dt.date(2026, 4, 3), dt.date(2026, 4, 12), ("sms", "kiosk"))}
    assert write(root, version(2), "R4", scenarios=wider).run_id == "R4"
    assert "kiosk" in json.loads((folder / "manifest.json").read_text())["channels"]


def test_rows_of_a_scenario_the_wave_does_not_have_are_refused_before_anything_is_written(tmp_path):
    from flowops.errors import FlowopsError

    with pytest.raises(FlowopsError, match="idle_no_pack, which wave 1 of 2026-03 does not have"):
        write(tmp_path / "exports", version(1), "R1", scenarios={"data_no_plan": SCENARIOS["data_no_plan"]})
    assert not (tmp_path / "exports" / f"month={MONTH}").exists()


def test_files_and_folders_are_owner_only_and_fsynced_before_the_wave_is_renamed_in(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the fsynced descriptors")
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, dropfolder._rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(source: Path, target: Path) -> None:
        events.append(("rename", str(source)))
        real_rename(source, target)

    root = tmp_path / "exports"
    write(root, version(1), "R1")
    monkeypatch.setattr(dropfolder.os, "fsync", fsync)
    monkeypatch.setattr(dropfolder, "_rename", rename)

    write(root, version(2), "R2")   # a replacement: two renames

    month = root / f"month={MONTH}"
    staging, folder = month / ".wave=1.R2.tmp", month / "wave=1"
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert [events[i][1] for i in renames] == [str(folder), str(staging)]
    synced_before = {path for kind, path in events[:renames[0]] if kind == "fsync"}
    written = [staging / name for name in files_of(folder)]
    folders = {staging, *(p.parent for p in written)}
    assert {str(p) for p in [*written, *folders, month]} <= synced_before
    assert ("fsync", str(month)) in events[renames[-1]:]   # the renames themselves made durable
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_every_leftover_of_a_dead_run_is_removed_and_a_wave_caught_between_the_renames_put_back(tmp_path):
    root = tmp_path / "exports"
    write(root, version(1), "R1")
    write(root, version(1), "R1", month="2026-02", wave=2)
    february = root / "month=2026-02"
    # A dead run's staging folder of another month, with phone numbers in it; a replaced wave 2 of February whose
    # new folder never arrived (the run died between the renames); an old folder whose replacement did arrive.
    dropfolder.private_dirs(february / ".wave=1.R0.tmp" / "channel=sms", root)
    (february / ".wave=1.R0.tmp" / "channel=sms" / "data_no_plan.csv").write_text("msisdn\n13800000009\n")
    (february / "wave=2").rename(february / ".wave=2.R0.old")
    kept = files_of(february / ".wave=2.R0.old")
    dropfolder.private_dirs(root / f"month={MONTH}" / ".wave=1.R0.old", root)

    result = write(root, version(3), "R5", month="2026-05")

    assert sorted(result.leftovers.removed) == [february / ".wave=1.R0.tmp", root / f"month={MONTH}" / ".wave=1.R0.old"]
    assert result.leftovers.restored == (february / "wave=2",)
    assert hidden(root) == []
    assert files_of(february / "wave=2") == kept
    assert not (root / LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------ kill -9
# The child writes version 2 as run R2 over version 1 (R1) and stops at the named point, creating `ready`; the
# parent then kills it with SIGKILL. The pause is a wrapper the child puts around the writer's own file functions.
CHILD = """
import sys, time
from pathlib import Path
from flowops.lake import dropfolder
from tests.unit.test_exports_writer import version, write

root, point, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
calls = []

def pause():
    ready.write_text(point)
    time.sleep(600)

def wrap(name, stop):
    real = getattr(dropfolder, name)
    def wrapper(path, *args):
        calls.append(name)
        if stop(Path(path)):
            pause()
        return real(path, *args)
    setattr(dropfolder, name, wrapper)

if point == "between_files":      # one CSV file written, the second not
    wrap("private_write", lambda path: calls.count("private_write") == 2)
elif point == "before_swap":      # every file written and fsynced, nothing renamed
    wrap("_rename", lambda path: True)
elif point == "mid_swap":         # the old wave folder renamed away, the new one not yet in
    wrap("_rename", lambda path: path.name.endswith(".tmp"))
elif point == "after_swap":       # the new wave in, the old one not yet removed
    wrap("_remove", lambda path: path.name.endswith(".old"))
write(root, version(2), "R2")
"""


def killed_writer(root: Path, point: str, tmp_path: Path) -> None:
    ready, errors = tmp_path / f"ready-{point}", tmp_path / f"stderr-{point}"
    with errors.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), point, str(ready)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert child.poll() is None, errors.read_text()
        assert time.monotonic() < deadline, "the child never reached " + point
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


@pytest.mark.parametrize(("point", "survivor"), [("between_files", "previous"), ("before_swap", "previous"),
                                                 ("mid_swap", "previous"), ("after_swap", "new")])
def test_a_writer_killed_anywhere_leaves_nothing_once_the_next_run_is_done_and_the_wave_whole(tmp_path, point,
                                                                                              survivor):
    root = tmp_path / "exports"
    month = root / f"month={MONTH}"
    folder = month / "wave=1"
    new = csvs_of(write(tmp_path / "elsewhere", version(2), "R2").folder)
    write(root, version(1), "R1")
    previous = csvs_of(folder)

    killed_writer(root, point, tmp_path)

    assert hidden(root), "the kill left nothing to clean up: the test killed nothing"
    assert (root / LOCK_FILE).exists()   # held by the dead child: taken over, not waited for
    assert folder.exists() == (point != "mid_swap")

    # Any later export run (here: another month's) cleans up; the wave is the previous one or the new one, whole.
    other = write(root, version(1), "R3", month="2026-04")

    assert other.leftovers.removed and hidden(root) == [] and not (root / LOCK_FILE).exists()
    if survivor == "previous":
        assert_whole(folder, previous, "R1")
    else:
        assert_whole(folder, new, "R2")
    # The rerun of the killed wave finishes it; a wave already whole and identical keeps its run id.
    rerun = write(root, version(2), "R4")
    assert rerun.run_id == ("R4" if survivor == "previous" else "R2")
    assert_whole(folder, new, rerun.run_id)
    assert hidden(root) == []
