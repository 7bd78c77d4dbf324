"""Two policies from two runs of `tests.validation.targeting` on the same world, at an equal number of contacts.

Each run saves its policies' contacts of the measured months (`contacts-uplift.csv`, `contacts-response.csv`, with
their planted incremental conversions); two runs on one world (the second with `--reuse` on a copy of the first's
`raw/`) can then compare, say, the uplift policy maximising orders with the response policy maximising value, by
the same rule the script applies within a run: each policy's best by its own weight, as many as the smaller made.

    .venv/bin/python -m tests.validation.across_runs /tmp/v107o/contacts-uplift.csv /tmp/v107v/contacts-response.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tests.validation.targeting import at_equal_contacts, by_own_weight, made_for_value


def compare(first: pd.DataFrame, second: pd.DataFrame) -> str:
    lines = []
    kinds = (("every contact", lambda f: f), ("care contacts left out", made_for_value))
    for label, keep in kinds:
        frames = {"first": by_own_weight(keep(first)), "second": by_own_weight(keep(second))}
        n, got = at_equal_contacts(frames, "true_uplift")
        made = " / ".join(f"{len(f):,}" for f in frames.values())
        value = " / ".join(f"{f['true_value'].sum():,.0f}" for f in frames.values())
        lines.append(f"{label}: {n:,} contacts each (made {made}): planted incremental conversions "
                     f"{got['first']:.1f} / {got['second']:.1f} = {got['first'] / got['second']:.2f}x; planted value "
                     f"of all made {value} yuan")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    print(compare(pd.read_csv(args.first), pd.read_csv(args.second)))


if __name__ == "__main__":
    main()
