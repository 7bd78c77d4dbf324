"""spark-submit entry point: flowops tags for one month.

    spark-submit --py-files flowops.zip jobs/tags.py --lake LAKE --month 2026-03
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["tags", *sys.argv[1:]]))
