"""spark-submit entry point: ingest one landing day (or month) of xDR files.

    spark-submit --py-files flowops.zip jobs/ingest_usage.py --raw RAW --lake LAKE --date 2026-01-05
"""

import sys

from flowops.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
