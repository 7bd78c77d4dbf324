"""`flowops check`: every file of conf/ loaded and checked before anything runs, Spark analysis included."""

from __future__ import annotations

from flowops.context import Context
from flowops.definitions import Definitions
from flowops.scenarios.policy import check_targets
from flowops.segments import assign_stages
from flowops.tags.engine import check_expressions


def check_conf(ctx: Context) -> list[str]:
    """Load every conf file into its typed model and analyse every expression; one line per part checked.
    The first problem raises a ConfigError naming the file and the key."""
    conf_dir = ctx.settings.conf_dir
    conf = Definitions.load(conf_dir)
    apps, terminals, library, segments = conf.apps, conf.terminals, conf.library, conf.segments
    tags = check_expressions(ctx.spark, library)
    stages = assign_stages(tags, segments)
    tagged = tags.join(stages.select("sub_id", "stage", "reason", "flow_type"), "sub_id")
    check_targets(tagged, conf.scenarios, conf.catalogue, conf.channels)
    covered = sorted({s.model.stage for s in conf.scenarios})
    return [
        f"ok  pipeline.yml       lake {ctx.settings.lake.root}, engine {ctx.settings.lake.engine}",
        f"ok  apps/              {len(apps.rules)} fingerprint rules for {apps.app_count} apps",
        f"ok  terminals/         {len(terminals)} TACs",
        f"ok  tags/              {len(library.tags)} tags, every expression analysed by Spark",
        f"ok  segments.yml       {len(segments.rules)} stage rules + default, {len(segments.flow_rules)} flow types",
        f"ok  products.yml       {len(conf.catalogue.products)} products",
        f"ok  channels.yml       {len(conf.channels.channels)} channels",
        f"ok  scenarios/         {len(conf.scenarios)} scenarios covering {', '.join(covered)}; target rules analysed",
        f"ok  models.yml         churn: {len(conf.models.churn.features)} features (tags), horizon "
        f"{conf.models.churn.horizon_months} months, {conf.models.churn.learner}",
    ]

