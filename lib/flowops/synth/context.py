"""What a day worker needs: the population and month plans (from .npz files) and string tables.

The main process writes the arrays once into a scratch directory; each worker process loads them
once and builds its lookup tables (msisdn/IMEI forms, user agents, hosts, IPs, URIs) once, so the
per-day work is only array indexing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowops.synth.catalog import Apps, Devices, load_apps, load_devices

POP_ARRAYS = ("msisdn", "imsi", "imei1", "imei2", "svn", "dev", "dev2", "change_ord", "identity",
              "site_home", "site_work", "fav_app", "activation")
MONTH_ARRAYS = ("subs", "target_mb", "idle_share", "shares", "arch", "end_ord", "bounds")

# Hosts that belong to no app: generic CDNs, object stores, ad and tracking endpoints.
_UNKNOWN_WORDS = ("swift", "kuai", "yun", "static", "media", "res", "dl", "img", "api", "edge",
                  "cache", "push", "log", "sdk", "ads", "track")
_UNKNOWN_TLDS = ("cdn-net.cn", "cloudedge.net", "akamaized.net", "cloudfront.net", "wscdns.com",
                 "qiniucdn.com", "bcebos.com", "myqcloud.com", "aliyuncs.com", "kssws.ks-cdn.com",
                 "volcfcdndvs.com", "cdnhwc1.com")
UNKNOWN_HOSTS: tuple[str, ...] = tuple(
    f"{w}{i}.{t}" for i, w in enumerate(_UNKNOWN_WORDS) for t in _UNKNOWN_TLDS[i % 4::4])
UNKNOWN_IP_PREFIXES: tuple[str, ...] = tuple(
    f"{a}.{b}" for a in ("104.16", "23.45", "43.152", "47.246", "154.85") for b in (10, 77, 140))
DNS_SERVERS: tuple[str, ...] = ("211.136.192", "120.196.165")   # China Mobile Guangdong resolvers
DNS_LAST_OCTET = (6, 24)
UA_EXTRA = ("okhttp/4.9.3", "Dalvik/2.1.0")  # unknown-app clients besides the device browser


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays for workers (uncompressed .npz: loading is cheap and memory-mapped-friendly)."""
    np.savez(path, **arrays)


@dataclass
class MonthArrays:
    """One month's plan as seen by a day worker."""

    index: int
    first_ord: int
    last_ord: int
    subs: np.ndarray
    target_mb: np.ndarray
    idle_share: np.ndarray
    shares: np.ndarray
    arch: np.ndarray
    end_ord: np.ndarray


class WorkerContext:
    """Loaded once per worker process."""

    def __init__(self, work_dir: Path, seed: int, month_firsts: list[int]) -> None:
        self.work_dir = Path(work_dir)
        self.seed = seed
        self.month_firsts = month_firsts
        with np.load(self.work_dir / "population.npz") as z:
            self.pop = {k: z[k] for k in POP_ARRAYS}
        self.apps: Apps = load_apps()
        self.devices: Devices = load_devices()
        self.T = int(self.pop["msisdn"].size)
        self._months: dict[int, MonthArrays] = {}
        self._build_tables()

    # ---------------------------------------------------------------- month plans
    def month_of(self, ordinal: int) -> int:
        """Month index of a date ordinal (-1 before the run)."""
        return int(np.searchsorted(np.array(self.month_firsts), ordinal, side="right")) - 1

    def month(self, m: int) -> MonthArrays:
        """The plan of month ``m``, cached (a worker needs at most the current and previous)."""
        if m not in self._months:
            if len(self._months) >= 3:
                self._months.pop(min(self._months))
            with np.load(self.work_dir / f"month_{m:03d}.npz") as z:
                a = {k: z[k] for k in MONTH_ARRAYS}
            self._months[m] = MonthArrays(index=m, first_ord=int(a["bounds"][0]),
                                          last_ord=int(a["bounds"][1]),
                                          **{k: a[k] for k in MONTH_ARRAYS if k != "bounds"})
        return self._months[m]

    # ---------------------------------------------------------------- string tables
    def _build_tables(self) -> None:
        pop, apps = self.pop, self.apps
        msisdn = pa.array(pop["msisdn"].astype("U11"))
        # msisdn forms: as is, 86-prefixed, +86-prefixed (index = row + form * T).
        self.msisdn_tbl = pa.concat_arrays([
            msisdn, pc.binary_join_element_wise("86", msisdn, ""),
            pc.binary_join_element_wise("+86", msisdn, "")])
        self.imsi_tbl = pa.array(pop["imsi"].astype("U15"))
        # IMEI forms per handset: full 15, 14 (no check digit), 16 (IMEISV), empty.
        # Index = row + T * (handset * 4 + form).
        parts = []
        svn = pa.array(np.char.zfill(pop["svn"].astype("U2"), 2))
        for imei in (pop["imei1"], pop["imei2"]):
            full = pa.array(imei.astype("U15"))
            short = pc.utf8_slice_codeunits(full, 0, 14)
            parts += [full, short, pc.binary_join_element_wise(short, svn, ""),
                      pa.array([""] * self.T, pa.string())]
        self.imei_tbl = pa.concat_arrays(parts)

        self.hosts_tbl = pa.array(list(apps.hosts) + list(UNKNOWN_HOSTS) + [""])
        self.host_empty = len(self.hosts_tbl) - 1
        self.unknown_host0 = len(apps.hosts)
        self.ip_tbl = pa.array(list(apps.ip_prefixes) + list(UNKNOWN_IP_PREFIXES)
                               + list(DNS_SERVERS))
        self.unknown_ip0 = len(apps.ip_prefixes)
        self.dns_ip0 = self.unknown_ip0 + len(UNKNOWN_IP_PREFIXES)
        self.octet_tbl = pa.array([str(i) for i in range(256)])
        # Paths carry the separator for the random query that render.py appends.
        self.uri_tbl = pa.array([p + ("&r=" if "?" in p else "?r=") for p in apps.uri_paths]
                                + ["/?r="])
        self.uri_generic = len(apps.uri_paths)
        self.tod_tbl = pa.array([f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60)
                                 for s in range(60)])
        self.ms_tbl = pa.array([f".{i:03d}" for i in range(1000)] + [""])
        self.ua_tbl = self._user_agents()
        self.ua_cols = apps.n + len(UA_EXTRA) + 2   # apps, browser, extras, empty

    def _user_agents(self) -> pa.Array:
        """User agents: row = device, column = app (then browser, okhttp, Dalvik, empty)."""
        apps, dev = self.apps, self.devices
        out: list[str] = []
        for d in range(dev.n):
            code, os_ = dev.model_code[d], dev.os[d]
            aver = "12" if os_ == "HarmonyOS" else dev.os_version[d]
            build = dev.build[d] or "UNKNOWN"
            gen = f"{int(dev.gen[d])}G"
            wv = (f"Mozilla/5.0 (Linux; Android {aver}; {code} Build/{build}; wv) "
                  f"AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 "
                  f"Mobile Safari/537.36")
            fields = dict(wv=wv, ua=dev.user_agent[d], model=code, brand=dev.brand[d].replace(" ", ""), aver=aver,
                          build=build,
                          iver=dev.os_version[d].replace(".", "_"), iverd=dev.os_version[d],
                          net=gen)
            for a in range(apps.n):
                if not dev.smart[d]:
                    out.append(dev.user_agent[d])   # WAP browsers show the handset only
                elif os_ == "iOS":
                    out.append(apps.ua_ios[a].format(**fields))
                else:
                    out.append(apps.ua_android[a].format(**fields))
            dalvik = f"Dalvik/2.1.0 (Linux; U; Android {aver}; {code} Build/{build})"
            native = dalvik if dev.smart[d] and os_ != "iOS" else dev.user_agent[d]
            out += [dev.user_agent[d], UA_EXTRA[0], native, ""]
        return pa.array(out)


@functools.lru_cache(maxsize=2)
def get_context(work_dir: str, seed: int, month_firsts: tuple[int, ...]) -> WorkerContext:
    """The process's context for a run (one run per process at a time in practice)."""
    return WorkerContext(Path(work_dir), seed, list(month_firsts))
