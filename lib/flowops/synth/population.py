"""Who the subscribers are: identities, numbers, handsets, home archetypes. Deterministic per seed.

``subscribers`` (the CLI argument) is the size of the first month's base, including that month's
new activations; every later month adds about ``NEW_SHARE`` more new subscribers, so the
population holds everyone who exists at some point of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowops.synth import archetypes as A
from flowops.synth.catalog import Devices, load_devices
from flowops.synth.strings import digit_matrix, luhn_check_digit

IDENTITIES: tuple[str, ...] = (
    "student", "white_collar", "farmer", "business_traveller", "individual_merchant", "other")
IDENTITY_SHARES = (0.14, 0.28, 0.16, 0.08, 0.12, 0.22)
AGE_BANDS: tuple[str, ...] = ("16-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_BY_IDENTITY = np.array([
    [0.88, 0.12, 0.00, 0.00, 0.00, 0.00],
    [0.06, 0.50, 0.32, 0.12, 0.00, 0.00],
    [0.03, 0.10, 0.22, 0.32, 0.25, 0.08],
    [0.02, 0.33, 0.43, 0.20, 0.02, 0.00],
    [0.03, 0.25, 0.40, 0.26, 0.06, 0.00],
    [0.08, 0.18, 0.20, 0.20, 0.20, 0.14],
])
# A handful of Guangdong cities: (name, share of subscribers, share living in rural areas).
CITIES: tuple[tuple[str, float, float], ...] = (
    ("Guangzhou", 0.22, 0.08), ("Shenzhen", 0.22, 0.02), ("Dongguan", 0.12, 0.15),
    ("Foshan", 0.12, 0.12), ("Huizhou", 0.06, 0.30), ("Zhongshan", 0.05, 0.20),
    ("Shantou", 0.06, 0.35), ("Zhanjiang", 0.07, 0.50), ("Maoming", 0.05, 0.55),
    ("Meizhou", 0.03, 0.60),
)
# China Mobile number blocks with rough weights.
MSISDN_PREFIXES = (134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 157, 158, 159, 172, 178,
                   182, 183, 184, 187, 188, 195, 197, 198)
PREFIX_WEIGHTS = np.array([3, 6, 6, 6, 7, 7, 1, 4, 3, 3, 2, 4, 4, 1, 2, 3, 2, 1, 4, 4, 1, 1, 3],
                          dtype=float)
IMSI_MNC = ("00", "02", "07")
# Affinity of each identity for price tiers low/mid/high/flagship.
TIER_AFFINITY = np.array([
    [1.0, 1.2, 0.6, 0.3], [0.5, 1.0, 1.0, 0.8], [1.5, 0.6, 0.2, 0.1],
    [0.2, 0.6, 1.0, 1.5], [0.5, 1.0, 1.0, 0.8], [1.0, 1.0, 0.6, 0.4],
])
VOICE_MOU_MEDIAN = np.array([60.0, 220.0, 120.0, 500.0, 420.0, 150.0])
HANDSET_CHANGE_SHARE = 0.04
FEATURE_HOMES = (A.ZERO_FEATURE, A.LOW_FEATURE)


@dataclass
class Population:
    """Static per-subscriber attributes as parallel arrays (index = subscriber number)."""

    msisdn: np.ndarray        # S11
    imsi: np.ndarray          # S15
    identity: np.ndarray      # int8 into IDENTITIES
    age_band: np.ndarray      # int8 into AGE_BANDS
    city: np.ndarray          # int8 into CITIES
    rural: np.ndarray         # bool
    activation: np.ndarray    # int32 date ordinal
    join_month: np.ndarray    # int16: -1 existed before the run, else month index of activation
    home: np.ndarray          # int8 home archetype (for joiners: the one after their first month)
    dev: np.ndarray           # int16 device row of the first handset
    dev2: np.ndarray          # int16 device row after a handset change, -1 if none
    change_ord: np.ndarray    # int32 ordinal from which dev2 is used (huge if none)
    imei1: np.ndarray         # S15
    imei2: np.ndarray         # S15 (empty if no change)
    svn: np.ndarray           # int8 software version number for IMEISV forms
    handset_from: np.ndarray  # int32 ordinal the first handset has been used since
    site_home: np.ndarray     # int32 radio site numbers, for cell ids
    site_work: np.ndarray
    voice_mou: np.ndarray     # float64 typical monthly minutes
    fav_app: np.ndarray       # int16 favourite app row
    level_u: np.ndarray       # float64 uniform draw fixing where in its range the usage sits

    @property
    def n(self) -> int:
        return int(self.msisdn.size)


def _choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(p.size, size=size, p=p / p.sum())


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(probs.shape[0])[:, None]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


def _exact_shares(rng: np.random.Generator, shares: dict[int, float], n: int) -> np.ndarray:
    """Codes in exactly the given proportions (rounded; the last code takes the rest), shuffled.

    Exact rather than drawn so that small test populations still hold every archetype.
    """
    codes = list(shares)
    counts = [int(round(shares[c] * n)) for c in codes[:-1]]
    counts.append(max(0, n - sum(counts)))
    return rng.permutation(np.repeat(np.array(codes, dtype=np.int8), counts)[:n])


def _imeis(devices: Devices, dev: np.ndarray, serial: np.ndarray) -> np.ndarray:
    """15-digit IMEIs: TAC + 6-digit serial + Luhn check digit."""
    tac = np.array([int(t) for t in devices.tac], dtype=np.int64)[dev]
    payload = tac * 1_000_000 + serial
    digits = digit_matrix(payload, 14)
    full = np.concatenate([digits, luhn_check_digit(digits)[:, None]], axis=1) + ord("0")
    return full.view("S15").ravel() if full.size else np.array([], dtype="S15")


def pick_devices(rng: np.random.Generator, devices: Devices, identity: np.ndarray,
                 feature: np.ndarray, max_gen: np.ndarray, min_gen: np.ndarray) -> np.ndarray:
    """Draw a handset per subscriber: class (smart/feature), generation range, price taste."""
    base = devices.popularity[None, :] * TIER_AFFINITY[identity][:, devices.tier]
    ok = ((devices.smart[None, :] != feature[:, None])
          & (devices.gen[None, :] <= max_gen[:, None]) & (devices.gen[None, :] >= min_gen[:, None]))
    w = np.where(ok, base, 0.0)
    empty = w.sum(axis=1) == 0
    w[empty] = np.where(devices.smart[None, :] != feature[empty, None], base[empty], 0.0)
    return _choice_rows(rng, w).astype(np.int16)


def build_population(rng: np.random.Generator, n_first: int, months: int,
                     start_ord: int, month_bounds: list[tuple[int, int]], app_weights: np.ndarray,
                     ) -> Population:
    """Draw every subscriber of the run.

    Args:
        rng: generator for the population stream.
        n_first: subscribers in the first month (existing ones plus that month's activations).
        months: months in the run.
        start_ord: ordinal of the run's first day.
        month_bounds: (first ordinal, last ordinal) per month.
        app_weights: (len(IDENTITIES), n_apps) app popularity per identity, for favourite apps.
    """
    devices = load_devices()
    n_new_first = max(1, round(A.NEW_SHARE * n_first)) if n_first >= 10 else 0
    n_new_later = round(A.NEW_SHARE * n_first)
    join = np.concatenate([
        np.full(n_first - n_new_first, -1), np.zeros(n_new_first),
        np.repeat(np.arange(1, months), n_new_later)]).astype(np.int16)
    n = join.size

    prefix = np.array(MSISDN_PREFIXES)[_choice(rng, PREFIX_WEIGHTS, n)]
    suffix = rng.choice(10**8, size=n, replace=False)
    msisdn = np.char.encode((prefix * 10**8 + suffix).astype("U11"), "ascii")
    mnc = np.array([m.encode() for m in IMSI_MNC])[rng.integers(0, 3, n)]
    tail = rng.choice(10**10, size=n, replace=False).astype("U10")
    imsi_tail = np.char.encode(np.char.zfill(tail, 10), "ascii")
    imsi = np.char.add(np.char.add(b"460", mnc), imsi_tail)

    identity = _choice(rng, np.array(IDENTITY_SHARES), n).astype(np.int8)
    age_band = _choice_rows(rng, AGE_BY_IDENTITY[identity]).astype(np.int8)
    city = _choice(rng, np.array([c[1] for c in CITIES]), n).astype(np.int8)
    rural_p = np.array([c[2] for c in CITIES])[city]
    rural_p = np.where(identity == IDENTITIES.index("farmer"), 0.9, rural_p)
    rural = rng.random(n) < rural_p

    # Tenure of existing subscribers: a mix of recent, growing, mature and very old lines.
    u = rng.random(n)
    tenure_days = np.select(
        [u < 0.15, u < 0.40, u < 0.75],
        [rng.integers(31, 365, n), rng.integers(365, 3 * 365, n),
         rng.integers(3 * 365, 8 * 365, n)],
        rng.integers(8 * 365, 15 * 365, n))
    activation = (start_ord - tenure_days).astype(np.int32)
    is_new = join >= 0
    m_first = np.array([b[0] for b in month_bounds])[np.maximum(join, 0)]
    m_last = np.array([b[1] for b in month_bounds])[np.maximum(join, 0)]
    activation[is_new] = rng.integers(m_first[is_new], m_last[is_new] + 1)

    home = np.empty(n, dtype=np.int8)
    home[~is_new] = _exact_shares(rng, A.HOME_SHARES, int((~is_new).sum()))
    # Joiners settle into one of a few ordinary homes after their first month.
    home[is_new] = _exact_shares(rng, {A.STEADY: 0.55, A.LOW_SMART: 0.20, A.ZERO_SMART: 0.15,
                                       A.ZERO_FEATURE: 0.05, A.LOW_FEATURE: 0.05},
                                 int(is_new.sum()))
    feature = np.isin(home, FEATURE_HOMES)
    # no_plan_usage holders keep a 0-MB plan, which exists only up to 4G: keep their handsets <= 4G.
    max_gen = np.where(home == A.NO_PLAN, 4, 5).astype(np.int8)
    min_gen = np.where(home == A.NO_PLAN, 3, 2).astype(np.int8)
    dev = pick_devices(rng, devices, identity, feature, max_gen, min_gen)

    # Handset changes: same class and generation (so the plan still fits), on a day in the run.
    run_first, run_last = month_bounds[0][0], month_bounds[-1][1]
    change = (rng.random(n) < HANDSET_CHANGE_SHARE) & (run_last - run_first >= 2)
    change_day = rng.integers(run_first + 1, max(run_first + 2, run_last + 1), n)
    change &= change_day > activation + 7
    gen = devices.gen[dev]
    dev2 = pick_devices(rng, devices, identity, feature, gen, gen)
    same = dev2 == dev
    dev2[same] = pick_devices(rng, devices, identity[same], feature[same], gen[same], gen[same])
    dev2 = np.where(change, dev2, -1).astype(np.int16)
    change_ord = np.where(change, change_day, np.iinfo(np.int32).max).astype(np.int32)
    # Serials drawn without replacement: no two handsets share an IMEI (up to 500k subscribers).
    serial = rng.choice(10**6, size=2 * n, replace=False) if 2 * n <= 10**6 \
        else rng.integers(0, 10**6, 2 * n)
    imei1 = _imeis(devices, dev, serial[:n])
    imei2 = np.where(change, _imeis(devices, np.maximum(dev2, 0), serial[n:]), b"")
    handset_from = np.maximum(activation, start_ord - rng.integers(30, 3 * 365, n)).astype(np.int32)

    fav = _choice_rows(rng, app_weights[identity]).astype(np.int16)
    return Population(
        msisdn=msisdn, imsi=imsi, identity=identity, age_band=age_band, city=city, rural=rural,
        activation=activation, join_month=join, home=home, dev=dev, dev2=dev2,
        change_ord=change_ord, imei1=imei1, imei2=imei2.astype("S15"),
        svn=rng.integers(1, 100, n).astype(np.int8), handset_from=handset_from,
        site_home=(city.astype(np.int32) * 20000 + rng.integers(1, 20000, n)).astype(np.int32),
        site_work=(city.astype(np.int32) * 20000 + rng.integers(1, 20000, n)).astype(np.int32),
        voice_mou=VOICE_MOU_MEDIAN[identity] * rng.lognormal(0.0, 0.45, n),
        fav_app=fav, level_u=rng.random(n),
    )
