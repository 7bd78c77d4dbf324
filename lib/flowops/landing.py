"""The landing area (RAW): where the operator's systems drop files, and the checks that they are there.

Layout (DESIGN.md "Landing data"):
    RAW/usage/dt=YYYY-MM-DD/hour=HH/*.txt.gz
    RAW/crm/month=YYYY-MM/subscribers.csv
    RAW/billing/month=YYYY-MM/billing.csv
    RAW/orders/month=YYYY-MM/orders.csv
    RAW/feedback/month=YYYY-MM/<channel>.csv
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from pathlib import Path

from flowops.errors import LandingError

# Radio generations: the xDR `rat` values the landing contract allows, and a handset's network generation.
GENERATIONS = ("2G", "3G", "4G", "5G")
MONTHLY_FILES = {"crm": "subscribers.csv", "billing": "billing.csv", "orders": "orders.csv"}
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def parse_month(value: str) -> str:
    """Validate `YYYY-MM`."""
    if not _MONTH.match(value or ""):
        raise LandingError(f"month must be YYYY-MM, got {value!r}")
    return value


def parse_date(value: str) -> dt.date:
    """Validate `YYYY-MM-DD`."""
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise LandingError(f"date must be YYYY-MM-DD, got {value!r}") from None


def landing_day(source_file: str) -> str:
    """The day a usage file landed, from its name under RAW (`usage/dt=YYYY-MM-DD/...`)."""
    return source_file.split("dt=", 1)[1][:10]


def month_days(month: str) -> list[str]:
    """Every date of `month` as `YYYY-MM-DD`."""
    year, mon = (int(part) for part in parse_month(month).split("-"))
    return [f"{month}-{day:02d}" for day in range(1, calendar.monthrange(year, mon)[1] + 1)]


def shift_month(month: str, k: int) -> str:
    """`month` plus k months (k may be negative)."""
    year, mon = (int(part) for part in parse_month(month).split("-"))
    index = year * 12 + mon - 1 + k
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def next_month(month: str) -> str:
    """The month after `month`."""
    return shift_month(month, 1)


def previous_months(month: str, count: int) -> list[str]:
    """The `count` months before `month`, oldest first."""
    return [shift_month(month, -back) for back in range(count, 0, -1)]


def require_raw(raw: str | Path) -> Path:
    """The landing root, or a clear error when the path is wrong."""
    root = Path(raw)
    if not root.is_dir():
        raise LandingError(f"landing folder {root} not found (pass --raw RAW, the folder holding usage/, crm/...)")
    return root


XDR_FILE = re.compile(r"^hour=([01][0-9]|2[0-3])/[^/]+\.txt\.gz$")


def usage_files(raw: str | Path, day: str) -> tuple[list[Path], list[Path]]:
    """Everything landed for a day, sorted: its xDR files (`hour=HH/<name>.txt.gz`), and every other file
    under the day's folder, which ingest quarantines rather than skips. Names are matched as they are, never
    as glob patterns. A clear error when the day has landed nothing at all."""
    root = require_raw(raw)
    folder = root / "usage" / f"dt={parse_date(day).isoformat()}"
    found = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    xdr = [p for p in found if XDR_FILE.match(p.relative_to(folder).as_posix()) and _readable_name(p)]
    if not found:
        landed = available_days(root)
        hint = f"landed days run {landed[0]} .. {landed[-1]}" if landed else "no usage has landed at all"
        raise LandingError(f"no usage files for {day} under {root / 'usage'} ({hint})")
    return xdr, [p for p in found if p not in set(xdr)]


FEEDBACK_FILE = re.compile(r"^[a-z][a-z0-9_]*\.csv$")


def feedback_files(raw: str | Path, month: str) -> tuple[list[Path], list[Path]]:
    """The month's channel receipts (`feedback/month=M/<channel>.csv`, sorted; none is fine: a month without
    campaigns has none), and every other file there, which ingest quarantines rather than skips."""
    folder = require_raw(raw) / "feedback" / f"month={parse_month(month)}"
    found = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    receipts = [p for p in found if p.parent == folder and FEEDBACK_FILE.match(p.name)]
    return receipts, [p for p in found if p not in set(receipts)]


def _readable_name(path: Path) -> bool:
    """A name that is text (UTF-8): tables store it; a name of other bytes is quarantined under a readable form."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def available_days(raw: str | Path) -> list[str]:
    """Days that have a usage folder, sorted."""
    return sorted(p.name.split("=", 1)[1] for p in (Path(raw) / "usage").glob("dt=*") if p.is_dir())


def available_months(raw: str | Path, source: str) -> list[str]:
    """Months that have a folder for a monthly source (`crm`, `billing`, `orders`, `feedback`)."""
    return sorted(p.name.split("=", 1)[1] for p in (Path(raw) / source).glob("month=*") if p.is_dir())


def monthly_file(raw: str | Path, source: str, month: str) -> Path:
    """The month's file for `source`, or a clear error naming what has landed."""
    root = require_raw(raw)
    path = root / source / f"month={parse_month(month)}" / MONTHLY_FILES[source]
    if not path.is_file():
        landed = available_months(root, source)
        hint = f"landed months: {', '.join(landed)}" if landed else f"nothing has landed under {root / source}"
        raise LandingError(f"missing {source} file for {month}: {path} ({hint})")
    return path
