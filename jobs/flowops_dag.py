"""Airflow 3 schedule of flowops: one DAG run per data month, one task per step, each a spark-submit of an entry
point of jobs/ (README, "Scheduling"; the equivalent crontab is there too).

    ingest --month M  ->  evaluate --month M-1  ->  train churn --month M  ->  tags --month M  ->  segment --month M
    ->  target --month M

M is the month before the run's date: the run on the 3rd at 02:00 (Asia/Shanghai, the pipeline's timezone) takes
the month that just ended, once its bills and the CRM snapshot have landed. Trigger the DAG with the param `month`
(YYYY-MM) to run another month. Every step overwrites what it wrote for its month (a rerun leaves the same tables),
so a failed task is retried, and can be cleared and rerun alone; `evaluate` is skipped (exit code 99) when M-1
exported no contacts, as in the first month, and `train churn` while fewer than two tag months are labelled (the CRM
snapshots of the months after them have not all landed: `flowops train churn` exits 99 then). Training before the
tags lets the month's churn score come from the newest champion. Runs are one at a time, in month order: tags read
the three months before M, and targeting learns from the evaluation of M-1.

Where things are comes from the Airflow workers' environment: FLOWOPS_SPARK_SUBMIT (spark-submit with this
cluster's master and options, and the wheel named .zip, see README "Running on a cluster": e.g. `spark-submit
--master yarn --py-files /opt/flowops/flowops.zip`), FLOWOPS_HOME (the folder holding jobs/ and conf/),
FLOWOPS_RAW (the landing folder), FLOWOPS_LAKE (the lake: a local or mounted path, as the writer locks need).
FLOWOPS_PII_KEY must be set for the ingest.
"""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronTriggerTimetable, Param, TriggerRule

TIMEZONE = "Asia/Shanghai"
SPARK_SUBMIT = os.environ.get("FLOWOPS_SPARK_SUBMIT", "spark-submit --py-files /opt/flowops/flowops.zip")
HOME = os.environ.get("FLOWOPS_HOME", "/opt/flowops")
RAW = os.environ.get("FLOWOPS_RAW", "/data/landing")
LAKE = os.environ.get("FLOWOPS_LAKE", "/data/lakehouse")
SKIPPED = 99   # BashOperator's exit code for "skipped"


def data_month(logical_date: dt.datetime | None) -> str:
    """YYYY-MM of the month before the run's date in the pipeline's timezone (the month that just ended)."""
    if logical_date is None:
        raise ValueError("this run has no logical date: trigger it with the param month=YYYY-MM")
    first = logical_date.astimezone(ZoneInfo(TIMEZONE)).date().replace(day=1)
    return (first - dt.timedelta(days=1)).strftime("%Y-%m")


def previous_month(month: str) -> str:
    """YYYY-MM of the month before `month`."""
    return (dt.date.fromisoformat(f"{month}-01") - dt.timedelta(days=1)).strftime("%Y-%m")


MONTH = "{{ params.month or data_month(logical_date) }}"
PREVIOUS = "{{ previous_month(params.month or data_month(logical_date)) }}"


def job(entry: str, month: str, *, raw: bool = False) -> str:
    """The spark-submit command of one entry point of jobs/ for one month."""
    landing = f" --raw {RAW}" if raw else ""
    return f"{SPARK_SUBMIT} {HOME}/jobs/{entry} --conf {HOME}/conf --lake {LAKE}{landing} --month {month}"


with DAG(
    dag_id="flowops_month",
    description="flowops: a data month end to end (ingest, evaluate last campaign, train churn, tags, segment, "
                "target)",
    schedule=CronTriggerTimetable("0 2 3 * *", timezone=TIMEZONE),
    start_date=dt.datetime(2026, 1, 1, tzinfo=ZoneInfo(TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    params={"month": Param(None, type=["null", "string"], pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                           description="the data month to run (YYYY-MM); empty: the month before the run's date")},
    user_defined_macros={"data_month": data_month, "previous_month": previous_month},
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=10),
        "execution_timeout": dt.timedelta(hours=4),
    },
    tags=["flowops"],
) as dag:
    ingest = BashOperator(
        task_id="ingest",
        bash_command=job("ingest_usage.py", MONTH, raw=True),
        depends_on_past=True,   # month M's tags read M-1's usage: months are ingested in order
    )
    evaluate = BashOperator(
        task_id="evaluate_previous_campaign",
        # Nothing to evaluate when M-1 exported no contacts (the first month): skipped, not failed.
        bash_command=(f"if [ ! -d {LAKE}/ops/contact_history/month={PREVIOUS} ]; then "
                      f"echo 'no contacts exported for {PREVIOUS}: nothing to evaluate'; exit {SKIPPED}; fi; "
                      + job("evaluate.py", PREVIOUS)),
        skip_on_exit_code=SKIPPED,
    )
    train = BashOperator(
        task_id="train_churn",
        # Until two tag months are labelled there is nothing to train on: the command exits 99, the task is skipped.
        # A new model becomes champion only when it beats the current one on the latest labelled month.
        bash_command=job("train_churn.py", MONTH),
        skip_on_exit_code=SKIPPED,
        trigger_rule=TriggerRule.NONE_FAILED,   # after the evaluation, or its skip
    )
    tags = BashOperator(
        task_id="tags",
        bash_command=job("tags.py", MONTH),
        trigger_rule=TriggerRule.NONE_FAILED,   # after the training, or its skip
    )
    segment = BashOperator(task_id="segment", bash_command=job("segment.py", MONTH))
    target = BashOperator(task_id="target", bash_command=job("target.py", MONTH))

    ingest >> evaluate >> train >> tags >> segment >> target
