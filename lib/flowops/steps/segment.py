"""`flowops segment --month M`: the six-stage assignment of month M's subscribers into gold/flow_stages.

Reads: gold/subscriber_tags (M), through its quality gate (the first step to read the tags). Writes: gold/flow_stages
(one overwrite of the month's partition, after its quality gate passed).
"""

from __future__ import annotations

from collections import Counter

from pyspark import StorageLevel
from pyspark.sql import functions as F

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.errors import LakeError
from flowops.lake.tables import FLOW_STAGES, SUBSCRIBER_TAGS
from flowops.landing import parse_month, previous_months
from flowops.runs import Run, recorded_run
from flowops.segments import STAGES, assign_stages
from flowops.steps.quality import gate, gate_read


def run_segment(ctx: Context, month: str, definitions: Definitions | None = None) -> tuple[Run, dict[str, int]]:
    """`flowops segment --month M`: six-stage assignment of month M into gold/flow_stages; returns stage sizes."""
    parse_month(month)
    segments = (definitions or Definitions.load(ctx.settings.conf_dir)).segments
    lake = ctx.lake
    if month not in lake.partition_values(SUBSCRIBER_TAGS, "month"):
        raise LakeError(f"{SUBSCRIBER_TAGS} has nothing for {month}: run `flowops tags --month {month}` first")
    with recorded_run(lake, "segment", {"month": month}) as run:
        with run.step("assign") as counts:
            tags_df = lake.read(SUBSCRIBER_TAGS, partitions={"month": [month]})
            gate_read(lake, ctx.settings, run, SUBSCRIBER_TAGS, tags_df, month,
                      previous=(SUBSCRIBER_TAGS, {"month": previous_months(month, 1)}))
            stages_df = assign_stages(tags_df, segments).persist(StorageLevel.MEMORY_AND_DISK)
            gate(lake, ctx.settings, run, FLOW_STAGES.name, stages_df, month)
            version = lake.write(stages_df, FLOW_STAGES, mode="overwrite", partitions={"month": [month]},
                                 metadata={"flowops.runId": run.run_id})
            run.wrote(FLOW_STAGES.name, version)
            stages_df.unpersist()
            written = lake.read(FLOW_STAGES.name, partitions={"month": [month]})
            sizes = Counter({r["stage"]: r["n"] for r in written.groupBy("stage").agg(F.count("*").alias("n"))
                             .collect()})
            counts.update({stage: sizes.get(stage, 0) for stage in STAGES})
        for stage in STAGES:
            run.count(f"stage.{stage}", sizes.get(stage, 0))
        run.rows_out = sum(sizes.values())
    return run, {stage: sizes.get(stage, 0) for stage in STAGES}
