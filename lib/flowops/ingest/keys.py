"""restricted/subscriber_keys: the one place phone numbers are kept, appended to by every source."""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from flowops.context import Context
from flowops.runs import Run
from flowops.tables import SUBSCRIBER_KEYS


def append_new_keys(ctx: Context, run: Run, keys: DataFrame) -> int:
    """Append the `sub_id, msisdn, first_seen, source` rows whose sub_id is not yet known; returns how many."""
    if ctx.lake.exists(SUBSCRIBER_KEYS.name):
        keys = keys.join(ctx.lake.read(SUBSCRIBER_KEYS.name).select("sub_id"), on="sub_id", how="left_anti")
    keys = keys.persist(StorageLevel.MEMORY_AND_DISK)
    count = keys.count()
    if count:
        run.wrote(SUBSCRIBER_KEYS.name, ctx.lake.write(keys, SUBSCRIBER_KEYS, mode="append",
                                                       metadata={"flowops.runId": run.run_id, "flowops.job": run.job}))
    keys.unpersist()
    return count
