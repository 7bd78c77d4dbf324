"""spark-submit entry point: flowops segment for one month.

    spark-submit --py-files flowops.zip jobs/segment.py --lake LAKE --month 2026-03
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
