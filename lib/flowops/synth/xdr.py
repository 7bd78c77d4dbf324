"""One day of clean xDR records as numeric arrays (strings come later, in render.py).

A subscriber-day gets a number of sessions that grows with the log of its planned volume; each
session gets an app (identity taste, idle-time affinity, a personal favourite), a start hour
(busy profile, or the idle window for the idle share), a protocol from the app's mix, a host,
server, radio cell and a size. Sizes are then scaled so that the day's bytes, split into idle and
busy time, are exactly what the month plan asked for.

Cleartext HTTP is the only protocol whose host, URI and user agent a DPI probe can see; HTTPS and
QUIC show the SNI (QUIC sometimes none); DNS and other UDP show neither. Records whose host or SNI
is empty, or belongs to no app, are the "unknown" traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from flowops.synth import behaviour as B
from flowops.synth.catalog import UNKNOWN_CATEGORY, Apps
from flowops.synth.context import DNS_LAST_OCTET, UNKNOWN_HOSTS, UNKNOWN_IP_PREFIXES, WorkerContext

HTTP, HTTPS, QUIC, DNS, OTHER = range(5)
PROTOCOLS = ("HTTP", "HTTPS", "QUIC", "DNS", "OTHER")
# Unknown-traffic kinds and their shares: DNS lookups, other UDP, odd hosts over HTTPS or HTTP,
# QUIC without SNI, HTTPS to a bare IP.
UNK_DNS, UNK_UDP, UNK_HOST_TLS, UNK_HOST_HTTP, UNK_QUIC_NOSNI, UNK_IP_TLS = range(1, 7)
UNKNOWN_KIND_P = np.array([0.30, 0.15, 0.20, 0.10, 0.15, 0.10])
OTHER_PORTS = np.array([8000, 8080, 10012, 5222, 1935, 3478, 9000, 17500, 20000, 30000])
IMEI_FORM_P = np.array([0.92, 0.025, 0.03, 0.025])  # full, 14-digit, IMEISV, empty
MILLIS_P = 0.3
URI_LONG_P = 0.04
RAT_CDF = np.cumsum(B.RAT_MIX, axis=1)


@dataclass
class DayRecords:
    """Parallel arrays, one entry per clean record, sorted by (hour, start)."""

    sub: np.ndarray        # int32 population row
    app: np.ndarray        # int16 app row; apps.n for unknown traffic
    unk: np.ndarray        # int8 unknown kind (0 = known app)
    cat: np.ndarray        # int8 category (UNKNOWN_CATEGORY for unknown traffic)
    proto: np.ndarray      # int8
    host: np.ndarray       # int32 row of ctx.hosts_tbl (ctx.host_empty if none)
    ip_pre: np.ndarray     # int32 row of ctx.ip_tbl
    ip_last: np.ndarray    # int16
    port: np.ndarray       # int32
    uri_path: np.ndarray   # int32 row of ctx.uri_tbl (-1 if not HTTP)
    uri_tok: np.ndarray    # uint64 random token for the query
    uri_long: np.ndarray   # bool: long query that the probe truncates
    ua_col: np.ndarray     # int16 column of ctx.ua_tbl
    dev: np.ndarray        # int16 device row in use that day
    handset: np.ndarray    # int8 0 first handset, 1 after a change
    imei_form: np.ndarray  # int8
    rat: np.ndarray        # int8 2..5
    apn: np.ndarray        # int8 0 cmnet, 1 cmwap
    cell: np.ndarray       # int64
    hour: np.ndarray       # int8 hour of the file the record lands in
    start: np.ndarray      # int32 seconds from the day's midnight (negative after a late shift)
    dur: np.ndarray        # int32 seconds
    ms_start: np.ndarray   # int16 millis, 1000 = printed without millis
    ms_end: np.ndarray
    idle: np.ndarray       # bool: start in the idle window
    ul: np.ndarray         # int64
    dl: np.ndarray
    key: np.ndarray        # float64 position within the hour's file order
    lag: np.ndarray        # int8 days the record is older than its file (late arrivals)
    msisdn_form: np.ndarray  # int8 0 plain, 1 '86', 2 '+86'

    def __len__(self) -> int:
        return int(self.sub.size)

    def select(self, idx: np.ndarray) -> DayRecords:
        """A new DayRecords with the given rows."""
        return DayRecords(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _draw_cdf(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), cdf.size - 1)


def build_day(ctx: WorkerContext, day_ord: int, rng: np.random.Generator,
              busy_cdf: np.ndarray, idle_cdf: np.ndarray, records_per_day: float | None = None) -> DayRecords:
    """Generate the clean records of one day; ``busy_cdf``/``idle_cdf`` are app CDFs per profile;
    ``records_per_day`` rescales the session-count model to that mean per active subscriber-day."""
    pop, apps = ctx.pop, ctx.apps
    mp = ctx.month(ctx.month_of(day_ord))
    mb = mp.target_mb * mp.shares[:, day_ord - mp.first_ord]
    on = np.flatnonzero(mb > 0)
    subs, mb, idle_share = mp.subs[on], mb[on], mp.idle_share[on]

    heavy_idle = idle_share >= 0.3
    n_rec = 1 + rng.poisson(B.records_per_day(mb) - 1.0)
    n_rec = np.where(heavy_idle, np.maximum(n_rec, 2), n_rec)
    n_idle = rng.binomial(n_rec, idle_share)
    n_idle = np.where(heavy_idle, np.clip(n_idle, 1, n_rec - 1), n_idle)
    total = int(n_rec.sum())
    owner = np.repeat(np.arange(on.size), n_rec)          # position in this day's subscriber list
    within = np.arange(total) - np.repeat(np.cumsum(n_rec) - n_rec, n_rec)
    is_idle = within < n_idle[owner]
    sub = subs[owner].astype(np.int32)

    # Handset in use that day, and what the device can do.
    changed = (pop["dev2"][sub] >= 0) & (day_ord >= pop["change_ord"][sub])
    dev = np.where(changed, pop["dev2"][sub], pop["dev"][sub]).astype(np.int16)
    smart = ctx.devices.smart[dev]
    profile = np.where(smart, pop["identity"][sub], B.FEATURE_PROFILE).astype(np.int8)

    # Start hour and second.
    busy_h, busy_c, idle_h, idle_c = B.hour_cdfs()
    hour = np.where(is_idle, idle_h[_draw_cdf(rng, idle_c, total)],
                    busy_h[_draw_cdf(rng, busy_c, total)]).astype(np.int8)
    start = (hour.astype(np.int32) * 3600 + rng.integers(0, 3600, total)).astype(np.int32)

    # App: by profile and idle/busy; a quarter of smartphone sessions go to a favourite app.
    app = np.empty(total, dtype=np.int16)
    u = rng.random(total)
    for p in range(B.N_PROFILES):
        for flag, cdfs in ((False, busy_cdf), (True, idle_cdf)):
            rows = np.flatnonzero((profile == p) & (is_idle == flag))
            if rows.size:
                app[rows] = np.minimum(np.searchsorted(cdfs[p], u[rows], side="right"), apps.n)
    fav = smart & (rng.random(total) < 0.25) & (app < apps.n)
    app[fav] = pop["fav_app"][sub[fav]]
    known = app < apps.n
    unk = np.where(known, 0, 1 + _draw_cdf(rng, np.cumsum(UNKNOWN_KIND_P), total)).astype(np.int8)
    a = np.minimum(app, apps.n - 1)            # safe index for per-app lookups

    # Protocol.
    proto_cdf = np.cumsum(apps.proto_share, axis=1)[a]
    proto = (rng.random(total)[:, None] > proto_cdf).sum(axis=1).clip(0, 2)
    proto = np.where(~smart & known, np.where(rng.random(total) < 0.7, HTTP, HTTPS), proto)
    proto = np.select([unk == UNK_DNS, unk == UNK_UDP, unk == UNK_HOST_HTTP, unk == UNK_QUIC_NOSNI,
                       (unk == UNK_HOST_TLS) | (unk == UNK_IP_TLS)],
                      [DNS, OTHER, HTTP, QUIC, HTTPS], proto).astype(np.int8)

    # Host / SNI, server address, port.
    n_hosts = np.diff(apps.host_off)[a]
    host = apps.host_off[a] + (rng.random(total) * n_hosts).astype(np.int32)
    host = np.where(unk > 0, ctx.host_empty, host)
    odd = (unk == UNK_HOST_TLS) | (unk == UNK_HOST_HTTP)
    host = np.where(odd, ctx.unknown_host0 + rng.integers(0, len(UNKNOWN_HOSTS), total), host)
    n_ips = np.diff(apps.ip_off)[a]
    ip_pre = apps.ip_off[a] + (rng.random(total) * n_ips).astype(np.int32)
    ip_pre = np.where(unk > 0, ctx.unknown_ip0 + rng.integers(0, len(UNKNOWN_IP_PREFIXES), total),
                      ip_pre)
    dns_pick = rng.integers(0, 2, total)
    ip_pre = np.where(unk == UNK_DNS, ctx.dns_ip0 + dns_pick, ip_pre).astype(np.int32)
    ip_last = np.where(unk == UNK_DNS, np.array(DNS_LAST_OCTET)[dns_pick],
                       rng.integers(1, 255, total)).astype(np.int16)
    port = np.select([proto == HTTP, proto == DNS, proto == OTHER],
                     [np.where(rng.random(total) < 0.9, 80, 8080), 53,
                      OTHER_PORTS[rng.integers(0, OTHER_PORTS.size, total)]], 443).astype(np.int32)

    # URI (HTTP only) and user agent (HTTP only: TLS hides it).
    n_paths = np.diff(apps.uri_off)[a]
    uri_path = np.where(known, apps.uri_off[a] + (rng.random(total) * n_paths).astype(np.int32),
                        ctx.uri_generic)
    uri_path = np.where(proto == HTTP, uri_path, -1).astype(np.int32)
    ua_browser, ua_okhttp, ua_dalvik, ua_empty = apps.n, apps.n + 1, apps.n + 2, apps.n + 3
    ua_col = np.where(known, app, np.array([ua_browser, ua_okhttp, ua_dalvik])[
        rng.integers(0, 3, total)])
    ua_col = np.where(proto == HTTP, ua_col, ua_empty).astype(np.int16)

    # Radio side: RAT by handset generation, cell near home or work.
    gen = ctx.devices.gen[dev]
    rat = (2 + (rng.random(total)[:, None] > RAT_CDF[gen - 2]).sum(axis=1)).clip(2, 5)
    travel = pop["identity"][sub] == 3
    su = rng.random(total)
    site = np.where(su < np.where(travel, 0.35, 0.6), pop["site_home"][sub],
                    np.where(su < np.where(travel, 0.55, 0.9), pop["site_work"][sub],
                             rng.integers(1, 200000, total))).astype(np.int64)
    sector = rng.integers(1, 4, total)
    cell = np.select([rat == 5, rat == 4], [site * 4096 + sector, site * 256 + sector],
                     (site % 65000 + 1) * 65536 + sector * 10 + 1)
    apn = np.where(~smart & (rng.random(total) < 0.6), 1, 0).astype(np.int8)

    # Duration and millis.
    cat = np.where(known, apps.category[a], UNKNOWN_CATEGORY).astype(np.int8)
    dur = np.clip(rng.lognormal(np.log(B.DURATION_MEDIAN_S[cat]), 0.9), 0, 7200).astype(np.int32)
    dur = np.where(proto == DNS, rng.integers(0, 2, total), dur).astype(np.int32)
    has_ms = rng.random(total) < MILLIS_P
    ms_start = rng.integers(0, 1000, total)
    ms_end = np.where(dur == 0, ms_start + ((999 - ms_start) * rng.random(total)).astype(int),
                      rng.integers(0, 1000, total))
    ms_start = np.where(has_ms, ms_start, 1000).astype(np.int16)
    ms_end = np.where(has_ms, ms_end, 1000).astype(np.int16)

    ul, dl = _bytes(rng, apps, a, unk, owner, is_idle, mb, idle_share, on.size)

    rec = DayRecords(
        sub=sub, app=app, unk=unk, cat=cat, proto=proto, host=host.astype(np.int32),
        ip_pre=ip_pre, ip_last=ip_last, port=port, uri_path=uri_path,
        uri_tok=rng.integers(0, 2**48, total, dtype=np.uint64),
        uri_long=rng.random(total) < URI_LONG_P,
        ua_col=ua_col, dev=dev, handset=changed.astype(np.int8),
        imei_form=_draw_cdf(rng, np.cumsum(IMEI_FORM_P), total).astype(np.int8),
        rat=rat.astype(np.int8), apn=apn, cell=cell.astype(np.int64), hour=hour, start=start,
        dur=dur, ms_start=ms_start, ms_end=ms_end, idle=is_idle, ul=ul, dl=dl,
        key=start.astype(np.float64), lag=np.zeros(total, dtype=np.int8),
        msisdn_form=np.zeros(total, dtype=np.int8))
    if records_per_day is not None and total:
        ratio = records_per_day / (total / on.size)
        rec = _split_sessions(rng, apps, rec, ratio) if ratio >= 1 else _merge_sessions(rng, rec, ratio)
    return rec.select(np.lexsort((rec.start, rec.hour)))


def _merge_sessions(rng: np.random.Generator, rec: DayRecords, keep_share: float) -> DayRecords:
    """Fewer, longer sessions (a sparser probe, or a world generated quickly): of each subscriber's busy-time and
    idle-time sessions of the day a share is kept (at least one of each), and the others' bytes and duration are
    folded into them, so every subscriber-day's busy and idle totals are unchanged (the planted usage is the same
    at any density)."""
    n = len(rec)
    group = rec.sub.astype(np.int64) * 2 + rec.idle.astype(np.int64)
    order = np.lexsort((rng.random(n), group))
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    keep = np.repeat(np.maximum(1, np.round(sizes * keep_share).astype(np.int64)), sizes)
    receiver = order[np.repeat(starts, sizes) + rank % keep]   # the kept session each one folds into
    kept = np.sort(order[rank < keep])
    out = rec.select(kept)
    for name in ("ul", "dl", "dur"):
        folded = np.bincount(receiver, weights=getattr(rec, name)[order].astype(np.float64), minlength=n)
        setattr(out, name, np.rint(folded[kept]).astype(getattr(rec, name).dtype))
    out.dur = np.minimum(out.dur, 86_399 - np.maximum(out.start, 0)).astype(np.int32)   # ends the same day
    return out


def _split_sessions(rng: np.random.Generator, apps: Apps, rec: DayRecords, flows_per_session: float) -> DayRecords:
    """Each session as several flows, as a DPI probe records it: the same subscriber, app and radio; the app's
    hosts, servers and paths; starts spread over the session (within its hour, so the idle flag holds), its
    duration and bytes split between them (totals unchanged: the planted usage is the same at any density)."""
    total = len(rec)
    flows = 1 + rng.poisson(max(flows_per_session - 1.0, 0.0), total)
    session = np.repeat(np.arange(total), flows)
    first = np.cumsum(flows) - flows
    nth = np.arange(session.size) - first[session]
    out = rec.select(session)
    room = 3599 - out.start % 3600
    offset = np.where(nth == 0, 0, np.minimum((rng.random(session.size) * out.dur).astype(np.int32), room))
    out.start = (out.start + offset).astype(np.int32)
    out.key = out.start.astype(np.float64)
    out.dur = (out.dur // flows[session]).astype(np.int32)
    out.ms_end = np.where(out.dur == 0, np.maximum(out.ms_end, out.ms_start), out.ms_end).astype(np.int16)
    out.uri_tok = rng.integers(0, 2**48, session.size, dtype=np.uint64)
    later = (nth > 0) & (out.unk == 0)   # a known app's later flows go to its other hosts, servers and paths
    a = np.minimum(out.app, apps.n - 1)
    out.host = np.where(later, apps.host_off[a] + (rng.random(session.size) * np.diff(apps.host_off)[a]).astype(
        np.int32), out.host).astype(np.int32)
    out.ip_last = np.where(nth > 0, rng.integers(1, 255, session.size), out.ip_last).astype(np.int16)
    out.uri_path = np.where(later & (out.uri_path >= 0), apps.uri_off[a] + (
        rng.random(session.size) * np.diff(apps.uri_off)[a]).astype(np.int32), out.uri_path).astype(np.int32)
    weight = rng.random(session.size) + 0.05
    share = weight / np.bincount(session, weights=weight, minlength=total)[session]
    for name in ("ul", "dl"):
        whole = getattr(rec, name)
        part = np.floor(whole[session] * share).astype(np.int64)
        part[first] += whole - np.bincount(session, weights=part, minlength=total).astype(np.int64)
        setattr(out, name, part)
    return out


def _bytes(rng: np.random.Generator, apps: Apps, a: np.ndarray, unk: np.ndarray, owner: np.ndarray,
           is_idle: np.ndarray, mb: np.ndarray, idle_share: np.ndarray,
           n_owners: int) -> tuple[np.ndarray, np.ndarray]:
    """Session sizes scaled so each subscriber-day's idle and busy bytes match the plan exactly."""
    total = a.size
    raw = np.where(unk == 0, (apps.dl_kb[a] + apps.ul_kb[a]) * 1024.0, 0.0)
    raw = np.select([unk == UNK_DNS, unk == UNK_UDP], [300.0, 60_000.0],
                    np.where(unk > 0, 250_000.0, raw)) * rng.lognormal(0.0, 0.8, total)
    group = owner * 2 + is_idle
    has = np.bincount(group, minlength=2 * n_owners).reshape(n_owners, 2) > 0
    want = mb * 1048576.0
    idle_t = np.where(has[:, 1], np.where(has[:, 0], want * idle_share, want), 0.0)
    target = np.stack([want - idle_t, idle_t], axis=1).ravel()
    got = np.bincount(group, weights=raw, minlength=2 * n_owners)
    scale = np.where(got > 0, target / np.maximum(got, 1e-9), 0.0)
    size = np.maximum(np.floor(raw * scale[group]), 60).astype(np.int64)
    ul_share = np.where(unk == 0, apps.ul_kb[a] / (apps.ul_kb[a] + apps.dl_kb[a]), 0.4)
    ul_share = np.clip(ul_share * rng.lognormal(0.0, 0.3, total), 0.005, 0.7)
    ul = np.round(size * ul_share).astype(np.int64)
    return ul, size - ul
