"""Subcommands of `flowops`: each registers its parser and a handler that calls into the package."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from flowops.context import Context
from flowops.errors import FlowopsError, LakeError

log = logging.getLogger("flowops")
Sub = Any  # argparse's private _SubParsersAction


def add_generate(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="write synthetic landing data with planted truth",
                       description="Write a synthetic operator's landing data (xDR, CRM, billing, orders) and "
                                   "the planted truth under RAW/_truth/.")
    p.add_argument("--out", required=True, metavar="RAW", help="landing folder to write")
    p.add_argument("--subscribers", type=int, default=2000, metavar="N")
    p.add_argument("--start-month", required=True, metavar="YYYY-MM")
    p.add_argument("--months", type=int, default=1, metavar="K")
    p.add_argument("--seed", type=int, default=7, metavar="S")
    p.add_argument("--bad-rate", type=float, default=0.0, metavar="R",
                   help="share of xDR lines that are dirty, of every kind (default 0)")
    p.add_argument("--records-per-day", type=float, default=None, metavar="N",
                   help="mean xDR records per active subscriber-day (default: about 25; real handsets: hundreds)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from flowops.synth import generate

    try:
        result = generate(args.out, subscribers=args.subscribers, start_month=args.start_month,
                          months=args.months, seed=args.seed, bad_rate=args.bad_rate, workers=args.workers,
                          records_per_day=args.records_per_day)
    except ValueError as exc:
        raise FlowopsError(str(exc)) from None
    print(result.summary())
    return 0


def write_document(path: str, text: str) -> Path:
    """Write a generated document (a catalogue) as UTF-8, creating its folder; returns where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def add_show(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("show", parents=[common], help="print a lake table",
                       description="Print rows of a lake table (layer/name, e.g. ops/runs), or its history.")
    p.add_argument("table", help="layer/name, e.g. silver/usage_daily")
    p.add_argument("--where", metavar="SQL", help="a Spark SQL filter, e.g. \"dt = '2026-01-05'\"")
    p.add_argument("--limit", type=int, default=20, metavar="N")
    p.add_argument("--columns", metavar="A,B,...", help="only these columns")
    p.add_argument("--version", type=int, dest="table_version", metavar="V", help="time travel to version V")
    p.add_argument("--history", action="store_true", help="print the table's commits instead of rows")
    p.add_argument("--vertical", action="store_true", help="one field per line")
    p.add_argument("--personal-data", action="store_true",
                   help="required to print a restricted/ table (phone numbers): you are printing personal data")
    p.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace) -> int:
    from flowops.tags.definitions import unsafe_sql

    restricted = args.table.split("/", 1)[0] == "restricted"
    if restricted and not args.personal_data and not args.history:
        raise FlowopsError(f"{args.table} holds personal data (phone numbers): add --personal-data to print it")
    if args.where and (reason := unsafe_sql(args.where)):
        raise FlowopsError(f"--where refused: {reason}")
    if restricted and not args.history:
        print(f"flowops show: printing personal data from {args.table}", file=sys.stderr)
    ctx = Context.from_args(args, app_name="flowops-show")
    lake = ctx.lake
    if args.history:
        for entry in lake.history(args.table, args.limit):
            extra = {k: v for k, v in entry.items() if k.startswith("flowops.")}
            print(f"v{entry['version']:<4} {entry.get('operation', ''):<13} "
                  f"{entry.get('operationParameters', {})} {extra}")
        return 0
    df = lake.read(args.table, version=args.table_version)
    try:
        if args.where:
            df = df.where(args.where)
        if args.columns:
            df = df.select(*[c.strip() for c in args.columns.split(",")])
        total = df.count()
    except Exception as exc:  # noqa: BLE001 - Spark's AnalysisException is not importable without a JVM
        if type(exc).__name__ in ("AnalysisException", "ParseException"):
            raise LakeError(f"cannot apply --where/--columns to {args.table}: "
                            f"{str(exc).strip().splitlines()[0]}") from None
        raise
    df.show(args.limit, truncate=60, vertical=args.vertical)
    print(f"{args.table}: {total:,} rows{' matching' if args.where else ''}, showing up to {args.limit}")
    return 0


def add_demo(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="generate a small dataset and run the pipeline on it",
                       description="Generate a small synthetic month and run every pipeline step that exists, "
                                   "then print a summary of what landed where.")
    p.add_argument("--out", default="demo", metavar="DIR", help="demo folder: DIR/raw and DIR/lakehouse")
    # Thousands of subscribers, so that campaigns measured against 10% control groups give intervals that mean
    # something at realistic conversion rates; few records each, since a run's time is mostly Spark's fixed cost.
    p.add_argument("--subscribers", type=int, default=4000, metavar="N")
    p.add_argument("--records-per-day", type=float, default=2, metavar="R",
                   help="xDR records per active subscriber-day (default 2; real probes write hundreds)")
    p.add_argument("--month", default="2026-03", metavar="YYYY-MM", help="the month the pipeline runs for")
    p.add_argument("--seed", type=int, default=7, metavar="S")
    p.add_argument("--bad-rate", type=float, default=0.01, metavar="R")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from flowops.demo import run_demo as demo

    out = Path(args.out)
    if not args.lake:
        args.lake = str(out / "lakehouse")
        _fresh_demo_lake(Path(args.lake))
    ctx = Context.from_args(args, app_name="flowops-demo", demo=True)
    print(demo(ctx, out=out, subscribers=args.subscribers, month=args.month, seed=args.seed,
               bad_rate=args.bad_rate, records_per_day=args.records_per_day))
    print(quality_line(ctx, args.month))
    return 0


def _fresh_demo_lake(lake: Path) -> None:
    """The demo regenerates its landing data, so a lake left by an earlier demo (records of other files under the
    same names) would fail reconciliation, as it should: the demo's own lake is replaced. A folder that is not a
    lake is refused."""
    import shutil

    if not lake.exists() or not any(lake.iterdir()):
        return
    if not (lake / "ops" / "runs" / "_delta_log").is_dir():
        raise FlowopsError(f"{lake} is not empty and is not a flowops lake: refusing to replace it (use --out)")
    log.info("demo: replacing the lake of an earlier demo run at %s", lake)
    shutil.rmtree(lake)


def add_ingest(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ingest", parents=[common], help="clean, identify and compress a day (or month) of xDR",
                       description="Parse and validate landed xDR files, quarantine bad lines and files, dedupe, "
                                   "pseudonymise, identify apps and handsets, and roll up into silver.")
    p.add_argument("--raw", required=True, metavar="RAW", help="landing folder")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", metavar="YYYY-MM-DD", help="one landing day")
    when.add_argument("--month", metavar="YYYY-MM", help="every landed day of the month")
    p.set_defaults(handler=run_ingest)


def run_ingest(args: argparse.Namespace) -> int:
    from flowops.steps.ingest import ingest

    ctx = Context.from_args(args, app_name="flowops-ingest")
    for run in ingest(ctx, args.raw, date=args.date, month=args.month):
        accepted = sum(f.accepted for f in run.files)
        quarantined = sum(f.quarantined for f in run.files)
        duplicates = sum(f.duplicates for f in run.files)
        print(f"{run.job} {args.date or args.month}: {run.rows_in:,} lines in = {accepted:,} accepted + "
              f"{quarantined:,} quarantined + {duplicates:,} duplicates in {len(run.files):,} files (run {run.run_id})")
    return 0


def _match_command(sub: Sub, common: argparse.ArgumentParser, name: str, summary: str,
                   description: str) -> argparse.ArgumentParser:
    """`flowops NAME match ...`: the rule-checking commands for data engineers."""
    parser = sub.add_parser(name, parents=[common], help=summary, description=description)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    return verbs.add_parser("match", parents=[common], help=summary, description=description)


def add_apps(sub: Sub, common: argparse.ArgumentParser) -> None:
    match = _match_command(sub, common, "apps", "resolve hosts (or a user agent) to apps",
                           "Check conf/apps rules: which app a host (or user agent) resolves to.")
    match.add_argument("hosts", nargs="*", metavar="HOST", help="HTTP hosts or TLS SNIs")
    match.add_argument("--ua", metavar="USER_AGENT", help="also match this user agent")
    match.set_defaults(handler=run_apps_match)


def run_apps_match(args: argparse.Namespace) -> int:
    from flowops.config import load_settings
    from flowops.ingest.apps import AppRules

    rules = AppRules.load(load_settings(args.conf).conf_dir)
    queries = [(host, args.ua) for host in args.hosts] or [(None, args.ua)]
    if not args.hosts and not args.ua:
        raise FlowopsError("give at least one HOST or --ua USER_AGENT")
    for host, agent in queries:
        match = rules.match(host, user_agent=agent)
        shown = host if host is not None else f"ua={agent!r}"
        if match.app_id == "unknown":
            print(f"{shown}\tunknown")
        else:
            print(f"{shown}\t{match.app_id}\t{match.app_name}\t{match.category}\trule={match.rule_id}\t"
                  f"confidence={match.confidence:.2f}")
    return 0


def add_terminals(sub: Sub, common: argparse.ArgumentParser) -> None:
    match = _match_command(sub, common, "terminals", "identify a handset by TAC or user agent; import GSMA TACs",
                           "Check conf/terminals: which handset a TAC or a user agent is.")
    match.add_argument("--tac", metavar="TAC", help="8-digit TAC (or a full IMEI)")
    match.add_argument("--ua", metavar="USER_AGENT", help="user agent, used when the TAC is unknown")
    match.set_defaults(handler=run_terminals_match)
    verbs = next(a for a in sub.choices["terminals"]._actions if isinstance(a, argparse._SubParsersAction))
    load = verbs.add_parser("import", parents=[common], help="load a GSMA TAC database export into conf/terminals",
                            description="Load an export of the GSMA TAC database (GSMA's column layout) into the "
                                        "terminal reference, each row validated; rejected rows are listed with "
                                        "their reasons.")
    load.add_argument("--gsma", required=True, metavar="FILE", help="the GSMA export (| , or tab separated)")
    load.add_argument("--out", metavar="FILE", help="reference file to write (default: CONF/terminals/gsma.csv)")
    load.set_defaults(handler=run_terminals_import)


def run_terminals_import(args: argparse.Namespace) -> int:
    from flowops.config import load_settings
    from flowops.ingest.gsma import read_gsma, write_reference
    from flowops.ingest.terminals import HandsetClasses, load_reference

    conf = load_settings(args.conf).conf_dir
    out = Path(args.out) if args.out else Path(conf) / "terminals" / "gsma.csv"
    source = Path(args.gsma)
    if not source.is_file():
        raise FlowopsError(f"no GSMA export at {source}")
    others = set(load_reference(conf, skip=out))
    result = read_gsma(source, HandsetClasses.load(conf), others)
    write_reference(result.terminals, out)
    if out.resolve().parent == (Path(conf) / "terminals").resolve():
        load_reference(conf)   # the whole reference still loads (one TAC per row across the files)
    print(f"terminals import: {len(result.terminals):,} TACs written to {out}, {result.skipped:,} left to the "
          f"operator's other reference files, {len(result.rejected):,} rejected")
    for line, reason, detail in result.rejected[:50]:
        print(f"  line {line}: {reason}: {detail}")
    if len(result.rejected) > 50:
        print(f"  ... and {len(result.rejected) - 50:,} more")
    return 0


def run_terminals_match(args: argparse.Namespace) -> int:
    from flowops.config import load_settings
    from flowops.ingest.terminals import HandsetClasses, load_reference, lookup

    if not args.tac and not args.ua:
        raise FlowopsError("give --tac TAC and/or --ua USER_AGENT")
    conf = load_settings(args.conf).conf_dir
    found = lookup(load_reference(conf), (args.tac or "")[:8] or None, args.ua, HandsetClasses.load(conf))
    for label, value in (("brand", found.brand), ("model", found.model), ("os", found.os),
                         ("network_gen", found.network_gen), ("smart", found.is_smart),
                         ("price_tier", found.price_tier), ("source", found.source)):
        print(f"{label:<12}{'-' if value is None else value}")
    return 0


def add_tags(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tags", parents=[common], help="compute subscriber tags for a month (or show the catalogue)",
                       description="Compute every tag of conf/tags/*.yml for the subscribers of a month into "
                                   "gold/subscriber_tags, from silver (the month and the three before it).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--month", metavar="YYYY-MM", help="the month to tag")
    what.add_argument("--catalog", action="store_true", help="print the tag catalogue and write it as markdown")
    what.add_argument("--check", action="store_true", help="check the tag definitions and segment rules only")
    p.add_argument("--raw", metavar="RAW", help="landing folder (not read by this step; accepted for symmetry)")
    p.add_argument("--out", default="docs/tags.md", metavar="FILE",
                   help="where --catalog writes the markdown (default: docs/tags.md)")
    p.set_defaults(handler=run_tags)


def run_tags(args: argparse.Namespace) -> int:
    from flowops.segments import load_segments
    from flowops.tags.catalogue import catalogue_markdown
    from flowops.tags.definitions import load_library

    ctx = Context.from_args(args, app_name="flowops-tags")  # Spark starts only when a step needs it
    if args.catalog or args.check:
        conf_dir = ctx.settings.conf_dir
        library = load_library(conf_dir)
        segments = load_segments(conf_dir, library)
        if args.catalog:
            text = catalogue_markdown(library)
            print(text)
            print(f"(written to {write_document(args.out, text)})")
            return 0
        from flowops.segments import assign_stages
        from flowops.tags.engine import check_expressions

        assign_stages(check_expressions(ctx.spark, library), segments).schema  # noqa: B018 - analysis only
        print(f"ok: {len(library.tags)} tags in {len({t.group for t in library.tags})} groups, "
              f"{len(segments.rules)} stage rules + default, {len(segments.flow_rules)} flow-type rules")
        return 0
    from flowops.steps.tags import run_tags as tags_job

    run = tags_job(ctx, args.month)
    print(f"tags {args.month}: {run.counts['tags']} tags for {run.counts['subscribers']:,} subscribers "
          f"-> gold/subscriber_tags v{run.table_versions['gold/subscriber_tags']} (run {run.run_id})")
    return 0


def add_segment(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("segment", parents=[common], help="assign each subscriber one of the six flow stages",
                       description="Apply the ordered rules of conf/segments.yml to gold/subscriber_tags of a month "
                                   "and write gold/flow_stages (stage, reason, evidence, flow customer type).")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month to segment")
    p.add_argument("--raw", metavar="RAW", help="landing folder (not read by this step; accepted for symmetry)")
    p.set_defaults(handler=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    from flowops.segments import format_stages
    from flowops.steps.segment import run_segment as segment_job

    ctx = Context.from_args(args, app_name="flowops-segment")
    run, sizes = segment_job(ctx, args.month)
    print(f"segment {args.month}: {format_stages(sizes)} (run {run.run_id})")
    return 0


def add_report(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common], help="write a month's run report (one self-contained HTML page)",
                       description="Write LAKE/reports/month=M/index.html: stage sizes and transitions, contacts and "
                                   "suppressions, funnels, uplift with intervals, cost against incremental revenue, "
                                   "top apps, unknown-app share, quarantine, step timings and data quality, each "
                                   "chart with its numbers and the table they came from.")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month to report")
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from flowops.steps.report import run_report as report_job

    ctx = Context.from_args(args, app_name="flowops-report")
    print(f"report {args.month}: {report_job(ctx, args.month)}")
    return 0


def add_target(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("target", parents=[common], help="match scenarios and write per-channel target lists",
                       description="Match every scenario of conf/scenarios to month M's tags and stages, decide each "
                                   "candidate under the contact policy of conf/channels.yml, and write "
                                   "gold/scenario_targets, the channels' export files and ops/contact_history.")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the data month (contacts fall in the next)")
    p.add_argument("--wave", type=int, default=1, metavar="W", help="the wave to target (default 1)")
    p.add_argument("--raw", metavar="RAW", help="landing folder (not read by this step; accepted for symmetry)")
    p.set_defaults(handler=run_target)


def run_target(args: argparse.Namespace) -> int:
    from flowops.steps.target import run_target as target_job

    ctx = Context.from_args(args, app_name="flowops-target")
    print(format_targets(target_job(ctx, args.month, args.wave)))
    return 0


def format_counts(counts: Any) -> str:
    """`reason n, ...`, largest first."""
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def format_targets(result: Any) -> str:
    """Targets per scenario x channel, control and suppressed counts, and where the exports are."""
    lines = [f"target {result.month} wave {result.wave}: {sum(result.targeted.values()):,} contacts, "
             f"{sum(result.control.values()):,} in control groups (run {result.run.run_id})"]
    for (scenario, channel), n in sorted(result.targeted.items()):
        lines.append(f"  {scenario:<28}{channel:<10}{n:>8,}")
    if result.suppressed:
        lines.append(f"  suppressed: {format_counts(result.suppressed)}")
    state = "written" if result.changed else "unchanged (identical to the files already there)"
    lines.append(f"  exports {result.exports}/  {state}")
    return "\n".join(lines)


def add_evaluate(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="measure a month's campaign against its control groups",
                       description="Attribute the campaign month's orders to month M's contacts, count the funnel "
                                   "per scenario x wave x channel (addressable, pushed, delivered, reached, "
                                   "converted, satisfaction), measure uplift against the control groups with 95% "
                                   "intervals, cost and ROI into gold/campaign_results, and record each contact's "
                                   "outcome in ops/contact_history for next month's targeting.")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the data month of the targets")
    p.add_argument("--raw", metavar="RAW", help="landing folder (not read by this step; accepted for symmetry)")
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from flowops.steps.evaluate import run_evaluate as evaluate_job

    ctx = Context.from_args(args, app_name="flowops-evaluate")
    print(format_evaluation(evaluate_job(ctx, args.month)))
    return 0


def format_evaluation(result: Any, channels: bool = True) -> str:
    """The funnel and uplift per scenario and wave (and, with `channels`, per channel)."""
    lines = [f"evaluate {result.month} (campaign {result.campaign_month}, run {result.run.run_id}): "
             f"{result.receipts:,} receipts" + (f", {result.unmatched_receipts:,} matching no contact"
                                                if result.unmatched_receipts else ""),
             f"  {'scenario':<26}{'w':>2} {'channel':<10}{'addr':>6}{'push':>6}{'deliv':>6}{'reach':>6}{'conv':>6}"
             f"{'sat':>5}{'ctrl':>6}{'c.conv':>7}  {'uplift [95% CI]':<24}{'incr':>6}{'ROI':>7}"]
    if any(r["wave"] == 0 for r in result.rows):
        lines.append("  (uplift per contact: the treated arm against the control group, over the share contacted; "
                     "wave 0: the whole campaign, wave 1's arms converted in any wave; a wave-2 row: its contacts "
                     "against its own holdout among wave 1's non-converters)")
    for r in result.rows:
        if not channels and r["channel"] != "all":
            continue
        def pct(v: float) -> str:
            return f"{v * 100:+.1f}"
        uplift = (f"{pct(r['uplift'])}pp [{pct(r['uplift_low'])}, {pct(r['uplift_high'])}]"
                  if r["uplift_low"] is not None else "no control group" if r["pushed"] else "nobody contacted")
        sat = f"{r['satisfaction']:.1f}" if r["satisfaction"] is not None else "-"
        incr = f"{r['incremental_orders']:.1f}" if r["incremental_orders"] is not None else "-"
        roi = f"{r['roi']:.2f}" if r["roi"] is not None else "-"
        lines.append(f"  {r['scenario']:<26}{r['wave']:>2} {r['channel']:<10}{r['addressable']:>6}{r['pushed']:>6}"
                     f"{r['delivered']:>6}{r['reached']:>6}{r['converted']:>6}{sat:>5}{r['control']:>6}"
                     f"{r['control_converted']:>7}  {uplift:<24}{incr:>6}{roi:>7}")
    return "\n".join(lines)


def add_simulate(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("simulate", parents=[common], help="DEMO/TESTS ONLY: simulate channel receipts and orders",
                       description="Stand in for the channels and the order system (demo and tests only): answer "
                                   "month M's exported wave from the generator's planted propensities and land "
                                   "receipts and orders under RAW for the campaign month, labelled simulated, with "
                                   "the planted effect per scenario under RAW/_truth/simulated/.")
    p.add_argument("--raw", required=True, metavar="RAW", help="landing folder written by `flowops generate`")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the data month of the targets")
    p.add_argument("--wave", type=int, default=1, metavar="W")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from flowops.steps.simulate import run_simulate as simulate_job

    ctx = Context.from_args(args, app_name="flowops-simulate")
    result = simulate_job(ctx, args.raw, args.month, args.wave, args.seed)
    print(f"simulate {args.month} wave {args.wave}: SIMULATED {result.receipts:,} receipts, {result.orders:,} orders, "
          f"{result.unsubscribes:,} unsubscribe replies; planted effects in {result.truth}/planted_effects.csv")
    return 0


def add_run(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="every step of a month: ingest, tags, segment, target",
                       description="Run ingest -> tags -> segment -> target for a month, skipping each step whose "
                                   "output is already current (a rerun after a crash resumes where it stopped).")
    p.add_argument("--raw", required=True, metavar="RAW", help="landing folder")
    p.add_argument("--month", required=True, metavar="YYYY-MM")
    p.add_argument("--force", action="store_true", help="run every step, current or not")
    p.set_defaults(handler=run_month)


def run_month(args: argparse.Namespace) -> int:
    from flowops.steps.run import run_month as month_job

    ctx = Context.from_args(args, app_name="flowops-run")
    result = month_job(ctx, args.raw, args.month, force=args.force)
    print(f"run {args.month}: ran {', '.join(result.ran) or 'nothing'}; current already: "
          f"{', '.join(result.skipped) or 'nothing'}")
    if result.targets:
        print(format_targets(result.targets))
    print(quality_line(ctx, args.month))
    print(f"report: {result.report}")
    return 0


def add_scenarios(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scenarios", parents=[common], help="check the scenario templates and write their catalogue",
                       description="Load and check conf/scenarios and conf/channels.yml; with --catalog write the "
                                   "scenario catalogue as markdown.")
    p.add_argument("--catalog", action="store_true", help="write the catalogue (default: docs/scenarios.md)")
    p.add_argument("--out", default="docs/scenarios.md", metavar="FILE")
    p.set_defaults(handler=run_scenarios)


def run_scenarios(args: argparse.Namespace) -> int:
    from flowops.config import load_settings
    from flowops.definitions import Definitions
    from flowops.scenarios.catalog import catalog_markdown

    conf = Definitions.load(load_settings(args.conf).conf_dir)
    if not args.catalog:
        for s in conf.scenarios:
            print(f"{s.id:<28}{s.model.stage:<9}{s.model.name}")
        print(f"{len(conf.scenarios)} scenarios, {len(conf.channels.channels)} channels")
        return 0
    out = write_document(args.out, catalog_markdown(conf.scenarios, conf.channels))
    print(f"{len(conf.scenarios)} scenarios written to {out}")
    return 0


def add_check(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check", parents=[common], help="validate all of conf/ before anything runs",
                       description="Load and check every file of conf/: pipeline settings, apps, terminals, "
                                   "tags (with Spark's analysis of each expression), segments, products, channels "
                                   "and scenarios (with Spark's analysis of each target rule).")
    p.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    from flowops.checks import check_conf

    ctx = Context.from_args(args, app_name="flowops-check")
    for line in check_conf(ctx):
        print(line)
    print(check_quality_conf(args.conf)[-1])
    return 0


def add_train(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a model on the lake and register it in MLflow",
                       description="Train a model of conf/models.yml on the lake's labelled months, measure it on the "
                                   "latest of them against the rule and the current champion, log and register it "
                                   "in MLflow, and make it champion when it beats the current one.")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    churn = models.add_parser("churn", parents=[common], help="the churn model (leaves within the horizon)",
                              description="Train the churn model at month M: fitted on the labelled tag months "
                                          "before the latest one (a tag month T is labelled once the CRM snapshots "
                                          "of T+1 .. T+horizon landed), measured on the latest; registered as "
                                          "flowops-churn, alias champion when it beats the current champion there.")
    churn.add_argument("--month", required=True, metavar="YYYY-MM", help="the month training runs at")
    churn.add_argument("--raw", metavar="RAW", help="landing folder (not read by this step; accepted for symmetry)")
    churn.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from flowops.steps.train import run_train_churn

    ctx = Context.from_args(args, app_name="flowops-train")
    print(format_training(run_train_churn(ctx, args.month)))
    return 0


def format_training(result: Any) -> str:
    """The model's, the rule's (and the champion's) measures on the validation month, the calibration table and
    what happened in the registry."""
    lines = [f"train churn {result.month}: fitted on {', '.join(result.fit_months)}, validated on "
             f"{result.validation_month} ({result.model.rows:,} subscribers, {result.model.positives:,} churners; "
             f"run {result.run.run_id})",
             f"  {'score':<22}{'ROC-AUC':>9}{'PR-AUC':>9}{'top-10% lift':>14}{'Brier':>9}"]
    shown = [("model (new)", result.model), ("rule (churn_rule_score)", result.rule)]
    if result.champion is not None:
        shown.append((f"champion (v{result.champion_version})", result.champion))
    for name, measured in shown:
        m = measured.metrics
        lines.append(f"  {name:<22}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['top_decile_lift']:>14.2f}"
                     f"{m['brier']:>9.4f}")
    lines.append("  calibration of the new model on the validation month (deciles of its score, highest first):")
    table = result.model.calibration
    for row in table.itertuples(index=False):
        lines.append(f"    decile {row.decile:>2}: {row.rows:>8,.0f} rows  mean score {row.mean_score:.4f}  "
                     f"observed {row.observed_rate:.4f}  gap {row.gap:+.4f}")
    if result.version is None:
        lines.append("  not registered: MLflow tracking is off (mlflow.enabled / FLOWOPS_TRACKING)")
    elif result.is_champion:
        lines.append(f"  registered flowops-churn v{result.version}: champion now (flowops tags scores with it)")
    else:
        lines.append(f"  registered flowops-churn v{result.version}: not champion (v{result.champion_version} "
                     "stays: it scores as well or better on this validation month)")
    return "\n".join(lines)


def add_jvm_archive(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("jvm-archive", parents=[common], help="make each embedded Spark start faster (make setup)",
                       description="Run a small Spark workload whose JVM writes the classes it loaded as a class-data "
                                   "archive in the virtualenv. Every later embedded Spark of this Java and these "
                                   "Spark jars maps it instead of loading the classes again: about 2 s less per "
                                   "start. Run it again after changing Java.")
    p.set_defaults(handler=run_jvm_archive)


def run_jvm_archive(args: argparse.Namespace) -> int:
    from flowops.config import load_settings
    from flowops.spark import write_class_archive

    path = write_class_archive(load_settings(args.conf, master=getattr(args, "master", None)))
    print(f"JVM class-data archive written: {path} ({path.stat().st_size >> 20} MB)")
    return 0


def add_quality(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("quality", parents=[common], help="check conf/expectations, or print a month's quality results",
                       description="Data-quality gates (conf/expectations/*.yml). --check loads and checks every "
                                   "expectation (unknown expectation, unknown column, an argument GX refuses), naming "
                                   "the file and the key. --month prints the month's rows of ops/quality_results and "
                                   "where the Data Docs site is (LAKE/_quality; its pages load their styles from the "
                                   "internet, ops/quality_results is the offline view).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="check conf/expectations only")
    what.add_argument("--month", metavar="YYYY-MM", help="print the results of the checks of this month's data")
    p.add_argument("--failed", action="store_true", help="with --month: only the failed expectations")
    p.set_defaults(handler=run_quality)


def run_quality(args: argparse.Namespace) -> int:
    if args.check:
        for line in check_quality_conf(args.conf):
            print(line)
        return 0
    from pyspark.sql import functions as F

    from flowops.lake.tables import QUALITY_RESULTS
    from flowops.landing import parse_month
    from flowops.steps.quality import docs_index

    parse_month(args.month)
    ctx = Context.from_args(args, app_name="flowops-quality")
    lake = ctx.lake
    if not lake.exists(QUALITY_RESULTS.name):
        raise LakeError(f"no quality results in {lake.root}: no gated step has run there yet")
    of_month = F.col("partition").startswith(args.month) | F.col("partition").contains(f"..{args.month}")
    rows = lake.read(QUALITY_RESULTS.name).where(of_month & (~F.col("success") if args.failed else F.lit(True)))
    shown = rows.orderBy("checked_at", "table", "expectation").collect()
    for r in shown:
        status = "ok  " if r.success else ("FAIL" if r.severity == "critical" else "warn")
        failed = (f"{r.unexpected_count:,} of {r.element_count:,} rows failed" if r.unexpected_count is not None
                  else f"observed {r.observed_value}")
        examples = f"  e.g. {'; '.join(r.examples)}" if r.examples and not r.success else ""
        print(f"{status} {r.table:<24}{r.partition:<26}{r.expectation}({r.column or ''}): {failed}  run {r.run_id}"
              f"{examples}")
    print(f"{len(shown):,} results for {args.month} in {lake.root}/{QUALITY_RESULTS.name}")
    docs = docs_index(lake.root, ctx.settings)
    if docs and Path(docs).is_file():
        print(f"Data Docs: {docs} (its pages load their styles from CDNs; offline, read the lines above)")
    return 0


def check_quality_conf(conf: str) -> list[str]:
    """conf/expectations loaded and checked against the tables' schemas and the tag library; one line per table."""
    from flowops.config import load_settings
    from flowops.quality.suites import known_columns, load_suites
    from flowops.tags.definitions import load_library

    conf_dir = load_settings(conf).conf_dir
    suites = load_suites(conf_dir, known_columns(load_library(conf_dir).names))
    lines = [f"ok  {table:<24}{len(checks)} expectations ({sum(c.severity == 'critical' for c in checks)} critical)"
             for table, checks in suites.checks.items()]
    return [*lines, f"ok  expectations/       {suites.count} expectations on {len(suites.checks)} tables, arguments "
                    "checked by GX"]


def quality_line(ctx: Context, month: str) -> str:
    """The quality gates' line of a command's output: what its gates checked, the failures, where the results and
    the Data Docs are (built here, once per command, for the validations it ran)."""
    from flowops.lake.tables import QUALITY_RESULTS
    from flowops.steps.quality import build_docs, tally

    lake = ctx.lake
    docs = build_docs(lake.root, ctx.settings)
    counts = tally(lake.root)
    if not counts["checked"]:
        return "  quality        no gated step ran"
    shown = f"Data Docs {docs} (its pages load their styles from CDNs)" if docs else "Data Docs off"
    return (f"  quality        {counts['checked']:,} expectation results written to {QUALITY_RESULTS.name}: "
            f"{counts['warn']:,} warn and {counts['critical']:,} critical failures "
            f"(flowops quality --month {month} --lake {lake.root}); "
            f"{shown}")


REGISTRARS = [add_generate, add_ingest, add_tags, add_segment, add_target, add_evaluate, add_run, add_demo,
              add_simulate, add_show, add_apps, add_terminals, add_scenarios, add_check, add_jvm_archive, add_train,
              add_quality, add_report]
