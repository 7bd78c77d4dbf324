"""spark-submit entry point: flowops train churn at one month.

    spark-submit --py-files flowops.zip jobs/train_churn.py --lake LAKE --month 2026-03
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "churn", *sys.argv[1:]]))
