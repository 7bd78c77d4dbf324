"""Dirty data: which lines of a day go bad, and how each kind of damage is made.

At bad rate R, bad lines are *added* to the clean records (R = bad / all lines), so the planted
usage stays exactly what the archetypes need, whatever R. Kinds:

* bad lines, each a damaged copy of a clean record with a fresh record_id, quarantine-bound:
  wrong_field_count, bad_number, negative_bytes, end_before_start, bad_timestamp, invalid_msisdn,
  invalid_imei, bad_encoding; plus duplicate (an exact replay of a clean line, same record_id,
  later in the same hour's file or in the next hour's). These nine share R equally.
* legitimate variants of clean records, counted but accepted after normalisation: late_arrival
  (a record of day D-1 or D-2 inside day D's files; about R/3 of eligible records) and
  msisdn_prefixed (86 / +86 before the number; about R/3 of records).
* file kinds, each on about one day in five: empty_file (a 0-byte file or a valid gzip with no
  content, added to an hour) and truncated_gzip (an hour's first file cut short; all its lines
  count as lost and are left out of the usage truth).

Every kind appears at least once per run when R > 0 (forced on the run's first day, late_arrival
on the second), provided the day has records at all. One hour per day may be the truncated one;
nothing else (bad lines, duplicates, late or prefixed records) is planted in it, so what is lost
there is only clean data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowops.synth.context import WorkerContext
from flowops.synth.render import FIELDS, DayRenderer, F
from flowops.synth.strings import ascii_matrix_to_array, join_fields, take
from flowops.synth.xdr import DayRecords

KINDS: tuple[str, ...] = (
    "wrong_field_count", "bad_number", "negative_bytes", "end_before_start", "bad_timestamp",
    "invalid_msisdn", "invalid_imei", "bad_encoding", "late_arrival", "duplicate",
    "msisdn_prefixed", "empty_file", "truncated_gzip")
BAD_LINE_KINDS = KINDS[:8]
DUPLICATE = KINDS.index("duplicate")
FILE_KIND_P = 0.2
BAD_NUMBERS = ("12a3", "-", "1e9x", "N/A", "0x1F", "3.5.1")
BAD_TIMES = ("0000-00-00 00:00:00", "2026-02-30 12:61:00", "N/A", "", "24/13/2026 10:00")
IMPLAUSIBLE_DATES = ("1970-01-01 ", "2099-12-31 ")
# Chinese user agents as a GBK-encoding device would send them: invalid as UTF-8.
GBK_USER_AGENTS: tuple[bytes, ...] = (
    "Mozilla/5.0 (Linux; U; Android 9; zh-cn; 红米Note7 Build/PKQ1) 华为浏览器/1.0".encode("gbk"),
    "移动手机浏览器 中文版/2.0 (天语 T3)".encode("gbk"),
    "QQ浏览器/10.2 (诺基亚 105; 中国移动)".encode("gbk"),
)
for _ua in GBK_USER_AGENTS:   # the damage must be detectable and must not split the line
    try:
        _ua.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # pragma: no cover - guards the constant table above
        raise AssertionError(f"GBK sample decodes as UTF-8: {_ua!r}")
    assert b"|" not in _ua and b"\n" not in _ua and b"\r" not in _ua


@dataclass
class DirtyPlan:
    """What to damage in one day. Row numbers index the day's DayRecords."""

    bad_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bad_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    bad_variant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dup_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    dup_hour: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    dup_key: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trunc_hour: int = -1
    empty_files: list[tuple[int, int]] = field(default_factory=list)   # (hour, 0 bytes | 1 gzip)


def plan_dirty(rec: DayRecords, ctx: WorkerContext, rng: np.random.Generator, bad_rate: float,
               day_ord: int, run_index: int, run_first_ord: int) -> DirtyPlan:
    """Decide the day's damage; marks late and prefixed records in ``rec`` in place."""
    plan = DirtyPlan()
    n = len(rec)
    if bad_rate <= 0 or n == 0:
        return plan
    first_day = run_index == 0
    hours = np.flatnonzero(np.bincount(rec.hour, minlength=24))
    if first_day or rng.random() < FILE_KIND_P:
        plan.trunc_hour = int(rng.choice(hours))
    if first_day:
        plan.empty_files = [(int(rng.integers(0, 24)), 0), (int(rng.integers(0, 24)), 1)]
    elif rng.random() < FILE_KIND_P:
        plan.empty_files = [(int(rng.integers(0, 24)), int(rng.integers(0, 2)))]

    usable = np.flatnonzero(rec.hour != plan.trunc_hour)
    if usable.size == 0:
        return plan
    # Legitimate variants first, on disjoint records.
    late = _pick_late(rec, ctx, rng, usable, bad_rate, day_ord, run_first_ord, run_index == 1)
    taken = np.zeros(n, dtype=bool)
    taken[late] = True
    rest = usable[~taken[usable]]
    k = max(int(rng.binomial(rest.size, bad_rate / 3)), 1 if first_day else 0)
    pref = rng.choice(rest, size=min(k, rest.size), replace=False)
    rec.msisdn_form[pref] = rng.integers(1, 3, pref.size)
    taken[pref] = True
    plain = usable[~taken[usable]]

    # Bad lines and duplicates: R of all lines, split equally over nine kinds.
    n_bad = int(round(n * bad_rate / (1.0 - bad_rate)))
    counts = rng.multinomial(n_bad, np.full(9, 1 / 9))
    if first_day:
        counts = np.maximum(counts, 1)
    n_dup = int(counts[8])
    plan.bad_kind = np.repeat(np.arange(8, dtype=np.int8), counts[:8])
    plan.bad_rows = rng.choice(usable, size=plan.bad_kind.size, replace=True)
    plan.bad_variant = rng.integers(0, 1 << 30, plan.bad_kind.size)
    if plain.size and n_dup:
        src = np.sort(rng.choice(plain, size=n_dup, replace=True))
        nxt = rec.hour[src] + 1
        to_next = (rng.random(n_dup) < 0.5) & (nxt <= 23) & (nxt != plan.trunc_hour)
        plan.dup_rows = src
        plan.dup_hour = np.where(to_next, nxt, rec.hour[src]).astype(np.int8)
        plan.dup_key = np.where(to_next, nxt * 3600.0 + rng.random(n_dup) * 3600.0,
                                rec.key[src] + 0.5)
    return plan


def _pick_late(rec: DayRecords, ctx: WorkerContext, rng: np.random.Generator, usable: np.ndarray,
               bad_rate: float, day_ord: int, run_first_ord: int, force: bool) -> np.ndarray:
    """Shift some records back 1 or 2 days, where the subscriber had data on that day's month."""
    lag = rng.integers(1, 3, usable.size)
    target = day_ord - lag
    # Not across a handset change: the record must carry the handset of the day it belongs to.
    change = ctx.pop["change_ord"][rec.sub[usable]]
    ok = (target >= run_first_ord) & ~((change > target) & (change <= day_ord))
    for m in np.unique([ctx.month_of(int(t)) for t in np.unique(target[ok])]):
        mp = ctx.month(int(m))
        in_m = ok & (target >= mp.first_ord) & (target <= mp.last_ord)
        subs = rec.sub[usable]
        pos = np.clip(np.searchsorted(mp.subs, subs), 0, max(mp.subs.size - 1, 0))
        found = (mp.subs.size > 0) & (mp.subs[pos] == subs)
        good = found & (mp.target_mb[pos] > 0) & (target <= mp.end_ord[pos]) \
            & (target >= ctx.pop["activation"][subs])
        ok = np.where(in_m, good, ok)
    cand = np.flatnonzero(ok)
    k = max(int(rng.binomial(cand.size, bad_rate / 3)), 1 if force and cand.size else 0)
    pick = rng.choice(cand, size=min(k, cand.size), replace=False)
    rows = usable[pick]
    rec.lag[rows] = lag[pick]
    rec.start[rows] -= lag[pick].astype(np.int32) * 86400
    return rows


# ---------------------------------------------------------------------------- damage
def bad_lines(renderer: DayRenderer, rec: DayRecords, rows: np.ndarray, kinds: np.ndarray,
              variants: np.ndarray, counters: np.ndarray) -> pa.BinaryArray:
    """Damaged lines, in the order of ``rows``; record ids come from ``counters``."""
    pieces: list[tuple[np.ndarray, pa.BinaryArray]] = []
    for kind in np.unique(kinds):
        sel = np.flatnonzero(kinds == kind)
        sub = rec.select(rows[sel])
        sub.msisdn_form[:] = 0
        cols = renderer.fields(sub, np.arange(sel.size), counters[sel])
        pieces += _DAMAGE[BAD_LINE_KINDS[kind]](renderer, sub, cols, variants[sel], sel)
    order = np.argsort(np.concatenate([p[0] for p in pieces]), kind="stable")
    return pa.concat_arrays([p[1] for p in pieces]).take(pa.array(order))


def _replace(col: pa.Array, mask: np.ndarray, values: pa.Array) -> pa.Array:
    return pc.if_else(pa.array(mask), values, col)


def _wrong_field_count(_r, _rec, cols, v, sel):
    out = []
    drop = v % 2 == 0
    for j in range(1, len(FIELDS)):
        rows = np.flatnonzero(drop & ((v // 2) % (len(FIELDS) - 1) + 1 == j))
        if rows.size:
            out.append((sel[rows], join_fields([c.take(pa.array(rows)) for i, c in enumerate(cols)
                                                if i != j])))
    rows = np.flatnonzero(~drop)
    if rows.size:
        extra = take(pa.array(["", "0", "cmnet"]), (v[rows] // 2) % 3)
        out.append((sel[rows], join_fields([c.take(pa.array(rows)) for c in cols] + [extra])))
    return out


def _bad_number(_r, _rec, cols, v, sel):
    field_no = np.array([F["ul_bytes"], F["dl_bytes"], F["server_port"]])[v % 3]
    token = take(pa.array(BAD_NUMBERS), (v // 3) % len(BAD_NUMBERS))
    for f in np.unique(field_no):
        cols[f] = _replace(cols[f], field_no == f, token)
    return [(sel, join_fields(cols))]


def _negative_bytes(_r, _rec, cols, v, sel):
    for f, mask in ((F["ul_bytes"], v % 2 == 0), (F["dl_bytes"], v % 2 == 1)):
        cols[f] = _replace(cols[f], mask, pc.binary_join_element_wise("-", cols[f], ""))
    return [(sel, join_fields(cols))]


def _end_before_start(r, rec, cols, v, _sel):
    back = 1 + v % 3600
    cols[F["end_time"]] = r.times(rec.start.astype(np.int64) - back, rec.ms_end)
    return [(_sel, join_fields(cols))]


def _bad_timestamp(_r, rec, cols, v, sel):
    n_bad = len(BAD_TIMES)
    choice = v % (n_bad + len(IMPLAUSIBLE_DATES))
    junk = choice < n_bad
    cols[F["start_time"]] = _replace(cols[F["start_time"]], junk,
                                     take(pa.array(BAD_TIMES), np.minimum(choice, n_bad - 1)))
    epoch = ~junk
    if epoch.any():
        date = take(pa.array(IMPLAUSIBLE_DATES), np.maximum(choice - n_bad, 0))
        tod = _r.ctx.tod_tbl
        s = np.mod(rec.start, 86400)
        e = np.minimum(s + rec.dur, 86399)
        cols[F["start_time"]] = _replace(cols[F["start_time"]], epoch,
                                         pc.binary_join_element_wise(date, take(tod, s), ""))
        cols[F["end_time"]] = _replace(cols[F["end_time"]], epoch,
                                       pc.binary_join_element_wise(date, take(tod, e), ""))
    return [(sel, join_fields(cols))]


def _invalid_msisdn(_r, _rec, cols, v, sel):
    m = cols[F["msisdn"]]
    forms = [
        pc.utf8_slice_codeunits(m, 0, 10),                                        # too short
        pc.binary_join_element_wise(m, take(pa.array(list("0123456789")), v % 10), ""),  # too long
        pc.binary_join_element_wise(pc.utf8_slice_codeunits(m, 0, 5), "A",
                                    pc.utf8_slice_codeunits(m, 6, 11), ""),        # a letter
        pc.binary_join_element_wise(take(pa.array(["10", "11", "12"]), v % 3),
                                    pc.utf8_slice_codeunits(m, 2, 11), ""),       # not mobile
        pc.binary_join_element_wise("020", pc.utf8_slice_codeunits(m, 3, 11), ""),  # landline
    ]
    pick = (v // 10) % len(forms)
    for i, form in enumerate(forms):
        m = _replace(m, pick == i, form)
    cols[F["msisdn"]] = m
    return [(sel, join_fields(cols))]


def _invalid_imei(r, rec, cols, v, sel):
    pop = r.ctx.pop
    full = np.where(rec.handset == 1, pop["imei2"][rec.sub], pop["imei1"][rec.sub]).astype("S15")
    d = np.frombuffer(full.tobytes(), dtype=np.uint8).reshape(-1, 15)
    letters = d.copy()
    letters[:, 8:10] = (ord("A"), ord("B"))
    bad_luhn = d.copy()
    bad_luhn[:, 14] = (bad_luhn[:, 14] - ord("0") + 1) % 10 + ord("0")
    forms = [
        ascii_matrix_to_array(letters),                                           # letters
        ascii_matrix_to_array(d[:, :13]),                                         # 13 digits
        ascii_matrix_to_array(np.hstack([d, np.full((d.shape[0], 2), ord("0"), np.uint8)])),
        ascii_matrix_to_array(np.full_like(d, ord("0"))),                         # all zeros
        ascii_matrix_to_array(bad_luhn),                                          # bad Luhn
    ]
    pick = v % len(forms)
    imei = cols[F["imei"]]
    for i, form in enumerate(forms):
        imei = _replace(imei, pick == i, form)
    cols[F["imei"]] = imei
    return [(sel, join_fields(cols))]


def _bad_encoding(_r, _rec, cols, v, sel):
    gbk = pa.array([GBK_USER_AGENTS[i] for i in v % len(GBK_USER_AGENTS)], pa.binary())
    stray = pc.binary_join_element_wise(pc.cast(cols[F["user_agent"]], pa.binary()),
                                        pa.scalar(b"\xff"), pa.scalar(b""))
    cols[F["user_agent"]] = pc.if_else(pa.array((v // 8) % 2 == 0), gbk, stray)
    return [(sel, join_fields(cols))]


_DAMAGE = {
    "wrong_field_count": _wrong_field_count, "bad_number": _bad_number,
    "negative_bytes": _negative_bytes, "end_before_start": _end_before_start,
    "bad_timestamp": _bad_timestamp, "invalid_msisdn": _invalid_msisdn,
    "invalid_imei": _invalid_imei, "bad_encoding": _bad_encoding,
}
