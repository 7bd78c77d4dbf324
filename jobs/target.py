"""spark-submit entry point: flowops target for one month.

    spark-submit --py-files flowops.zip jobs/target.py --raw RAW --lake LAKE --month 2026-03
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["target", *sys.argv[1:]]))
