"""spark-submit entry point: flowops evaluate for one month's campaign (the data month of its targets).

    spark-submit --py-files flowops.zip jobs/evaluate.py --lake LAKE --month 2026-03
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
