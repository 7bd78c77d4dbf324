"""Numeric records to the 18 xDR text fields, as pyarrow string arrays (no per-record Python)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowops.synth.context import WorkerContext
from flowops.synth.strings import hex_array, int_array, join_fields, take
from flowops.synth.xdr import HTTP, PROTOCOLS, DayRecords

FIELDS: tuple[str, ...] = (
    "record_id", "msisdn", "imsi", "imei", "start_time", "end_time", "rat", "apn", "cell_id",
    "protocol", "server_ip", "server_port", "host", "sni", "uri", "user_agent", "ul_bytes",
    "dl_bytes")
F = {name: i for i, name in enumerate(FIELDS)}
RATS = pa.array(["2G", "3G", "4G", "5G"])
APNS = pa.array(["cmnet", "cmwap"])
PROTO_TBL = pa.array(list(PROTOCOLS))
URI_MAX = 256
# Seconds before/after the day's midnight covered by the time table (late arrivals, long sessions).
SPAN_BEFORE = 2 * 86400
SPAN_DAYS = 5
_MASK60 = (1 << 60) - 1
_MULT = 0x9E3779B97F4A7C15 & _MASK60 | 1


class DayRenderer:
    """Formats records of one day; holds that day's timestamp table."""

    def __init__(self, ctx: WorkerContext, day_ord: int) -> None:
        self.ctx = ctx
        first = day_ord - SPAN_BEFORE // 86400
        self.dates = pa.array([dt.date.fromordinal(first + k).isoformat() + " "
                               for k in range(SPAN_DAYS)])
        # record_id = 5 hex digits of the day + 15 hex digits of a scrambled per-day counter.
        self.rid_prefix = f"{day_ord & 0xFFFFF:05x}"
        self.rid_salt = (ctx.seed * 0x2545F4914F6CDD1D) & _MASK60

    def record_ids(self, counters: np.ndarray) -> pa.Array:
        """Globally unique ids: the scramble is a bijection of the 60-bit counter space."""
        c = np.asarray(counters, dtype=np.uint64)
        lo = (c * np.uint64(_MULT) + np.uint64(self.rid_salt)) & np.uint64(_MASK60)
        return pc.binary_join_element_wise(self.rid_prefix, hex_array(lo, 15), "")

    def times(self, seconds: np.ndarray, millis: np.ndarray) -> pa.Array:
        """Timestamps for seconds relative to the day's midnight; millis 1000 means none."""
        idx = np.clip(np.asarray(seconds, dtype=np.int64) + SPAN_BEFORE, 0,
                      SPAN_DAYS * 86400 - 1)
        return pc.binary_join_element_wise(take(self.dates, idx // 86400),
                                           take(self.ctx.tod_tbl, idx % 86400),
                                           take(self.ctx.ms_tbl, millis), "")

    def fields(self, rec: DayRecords, rows: np.ndarray, counters: np.ndarray) -> list[pa.Array]:
        """The 18 fields of ``rec[rows]`` with record ids from ``counters``."""
        ctx = self.ctx
        T = ctx.T
        r = rec.select(rows)
        http = r.proto == HTTP
        tls = (r.proto != HTTP) & (r.host != ctx.host_empty)
        host = take(ctx.hosts_tbl, np.where(http, r.host, ctx.host_empty))
        sni = take(ctx.hosts_tbl, np.where(tls, r.host, ctx.host_empty))
        return [
            self.record_ids(counters),
            take(ctx.msisdn_tbl, r.sub.astype(np.int64) + T * r.msisdn_form.astype(np.int64)),
            take(ctx.imsi_tbl, r.sub),
            take(ctx.imei_tbl, r.sub.astype(np.int64) + T * (r.handset.astype(np.int64) * 4
                                                             + r.imei_form)),
            self.times(r.start, r.ms_start),
            self.times(r.start.astype(np.int64) + r.dur, r.ms_end),
            take(RATS, r.rat - 2),
            take(APNS, r.apn),
            int_array(r.cell),
            take(PROTO_TBL, r.proto),
            pc.binary_join_element_wise(take(ctx.ip_tbl, r.ip_pre), take(ctx.octet_tbl, r.ip_last),
                                        "."),
            int_array(r.port),
            host,
            sni,
            self._uris(r, http),
            take(ctx.ua_tbl, r.dev.astype(np.int64) * ctx.ua_cols + r.ua_col),
            int_array(r.ul),
            int_array(r.dl),
        ]

    def lines(self, rec: DayRecords, rows: np.ndarray, counters: np.ndarray) -> pa.BinaryArray:
        """Clean lines for ``rec[rows]``."""
        return join_fields(self.fields(rec, rows, counters))

    def _uris(self, r: DayRecords, http: np.ndarray) -> pa.Array:
        """HTTP request URIs; long ones are cut at URI_MAX characters as probes do."""
        k = np.flatnonzero(http)
        if k.size == 0:
            return pa.array([""] * len(r), pa.string())
        tok = hex_array(r.uri_tok[k], 12)
        uri = pc.binary_join_element_wise(take(self.ctx.uri_tbl, r.uri_path[k]), tok, "")
        long = r.uri_long[k]
        if long.any():
            pad = pa.array(["&ext=" + "x" * 20 + "&trace=" + "0123456789abcdef" * 16] * k.size)
            uri = pc.if_else(pa.array(long), pc.utf8_slice_codeunits(
                pc.binary_join_element_wise(uri, pad, ""), 0, URI_MAX), uri)
        table = pa.concat_arrays([uri, pa.array([""], pa.string())])
        pos = np.full(len(r), k.size, dtype=np.int64)
        pos[k] = np.arange(k.size)
        return take(table, pos)
