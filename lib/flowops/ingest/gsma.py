"""The operator's licensed GSMA TAC database, as an export, into the terminal reference (conf/terminals/).

GSMA's export has one row per TAC with, among others, `TAC`, `Marketing Name`, `Manufacturer (or) Applicant`,
`Bands`, `5G Bands`, `Brand Name`, `Model Name`, `Operating System` and `Device Type` (column names are matched
ignoring case, spaces and punctuation; other columns are ignored; `|`, tab or comma separated). Each row becomes a
reference row: brand (Brand Name, else the manufacturer), model (Marketing Name, else Model Name), OS, the
highest network generation its bands support, smart or not (device type, else OS) and a price tier from the
brand-line rules of conf/terminals/classes.yml (GSMA has no prices). A row that cannot be used is rejected with
its reason, never dropped silently; a TAC the operator's other reference files already list is left to them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from flowops.errors import ConfigError
from flowops.ingest.terminals import COLUMNS, SMART_OS, HandsetClasses, Terminal, normal_brand

REQUIRED = ("tac", "operating_system", "device_type", "bands")
SMART_TYPES = ("smartphone", "tablet")
# Band names in GSMA's lists, by generation (NR = 5G, LTE = 4G, WCDMA / TD-SCDMA / CDMA2000 = 3G, GSM / CDMA = 2G).
_GENERATION = (("5G", re.compile(r"\bNR\b|5G", re.I)), ("4G", re.compile(r"LTE|E-UTRA", re.I)),
               ("3G", re.compile(r"WCDMA|UMTS|HSPA|TD-SCDMA|CDMA ?2000|EV-?DO", re.I)),
               ("2G", re.compile(r"GSM|CDMA|DCS|PCS", re.I)))


@dataclass
class Imported:
    terminals: list[Terminal] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)   # (line, reason, detail)
    skipped: int = 0   # TACs the operator's other reference files already list


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def generation(bands: str, bands_5g: str = "") -> str | None:
    """The highest generation a band list supports (None when it names no known band)."""
    if bands_5g.strip():
        return "5G"
    return next((gen for gen, pattern in _GENERATION if pattern.search(bands)), None)


def read_gsma(path: Path, classes: HandsetClasses, existing: set[str] = frozenset()) -> Imported:
    """Every row of a GSMA export as a reference row, or rejected with its reason."""
    text = path.read_text(encoding="utf-8-sig", errors="strict")
    first = text.splitlines()[0] if text else ""
    delimiter = max("|\t,", key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [_key(h) for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if "brand_name" not in header and "manufacturer_or_applicant" not in header:
        missing.append("brand_name (or manufacturer_or_applicant)")
    if "marketing_name" not in header and "model_name" not in header:
        missing.append("marketing_name (or model_name)")
    if missing:
        raise ConfigError(f"{path}: not a GSMA TAC export: no column {', '.join(missing)} (found: {', '.join(header)})")
    out = Imported()
    seen: set[str] = set()
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            out.rejected.append((line, "wrong_field_count", f"{len(values)} fields, header has {len(header)}"))
            continue
        row = {k: v.strip() for k, v in zip(header, values, strict=True)}
        tac = row["tac"]
        brand = normal_brand(row.get("brand_name") or row.get("manufacturer_or_applicant"))
        model = row.get("marketing_name") or row.get("model_name")
        gen = generation(row["bands"], row.get("5g_bands", ""))
        reason = ("bad_tac", tac) if not re.fullmatch(r"\d{8}", tac) else \
            ("duplicate_tac", tac) if tac in seen else \
            ("no_brand", "Brand Name and Manufacturer are empty") if not brand else \
            ("no_model", "Marketing Name and Model Name are empty") if not model else \
            ("no_known_band", row["bands"][:60] or "Bands is empty") if not gen else None
        if reason:
            out.rejected.append((line, *reason))
            continue
        seen.add(tac)
        if tac in existing:
            out.skipped += 1
            continue
        os_name = row["operating_system"] or None
        smart = row["device_type"].lower() in SMART_TYPES or (os_name in SMART_OS)
        _, tier = classes.classify(brand, model, os_name, smart)
        out.terminals.append(Terminal(tac, brand, model, os_name or "unknown", gen, smart, tier or "mid", "tac"))
    return out


def write_reference(terminals: list[Terminal], path: Path) -> None:
    """The rows in the reference's columns (conf/terminals/README.md), sorted by TAC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for t in sorted(terminals, key=lambda t: t.tac or ""):
            writer.writerow([t.tac, t.brand, t.model, t.os, t.network_gen, str(t.is_smart).lower(), t.price_tier])
