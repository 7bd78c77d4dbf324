"""spark-submit entry point: flowops run for one month.

    spark-submit --py-files flowops.zip jobs/run.py --raw RAW --lake LAKE --month 2026-03
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
