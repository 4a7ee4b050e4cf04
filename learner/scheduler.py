"""The nightly learner's clock: APScheduler 3.x with a job store that survives restarts.

One job, `nightly-learn`, with an explicit id and `replace_existing=True` so restarting the
daemon re-registers rather than duplicates it; `max_instances=1` and `coalesce=True` so a slow
run never overlaps the next and a backlog of missed firings runs once; a `misfire_grace_time`
of hours, not APScheduler's default second, so a machine that was asleep at 02:00 still learns
when it wakes. The job runs `learner.run:scheduled_learn`, referenced by name so the
SQLAlchemy store can persist it. Cross-process exclusion is the learn lease in memory.db, not
the scheduler: `sdft-agent learn --now` and the nightly job can never train at the same time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

JOB_ID = "nightly-learn"
DEFAULT_CRON = "0 2 * * *"  # 02:00 local time, every night
MISFIRE_GRACE_S = 6 * 3600
JOB_REF = "learner.run:scheduled_learn"


def parse_cron(expr: str) -> CronTrigger:
    """A standard 5-field crontab expression, with an error that shows the expected shape."""
    try:
        return CronTrigger.from_crontab(expr)
    except ValueError as exc:
        raise ValueError(
            f"bad schedule {expr!r}: {exc}; use 5 crontab fields 'minute hour day month weekday', "
            f"e.g. {DEFAULT_CRON!r} for 02:00 nightly or '*/30 * * * *' for every 30 minutes"
        ) from None


def make_scheduler(home: str | Path, cron: str = DEFAULT_CRON, min_new: int = 1,
                   job_ref: str = JOB_REF) -> BackgroundScheduler:
    """A scheduler (not yet started) holding the nightly learning job for `home`."""
    home = Path(home)
    trigger = parse_cron(cron)
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{home / 'scheduler.db'}")},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_S},
    )
    scheduler.add_job(
        job_ref,
        trigger,
        id=JOB_ID,
        name="learn from new demonstrations",
        replace_existing=True,
        kwargs={"home": str(home), "min_new": min_new},
    )
    return scheduler


def next_run(scheduler: BackgroundScheduler) -> datetime | None:
    job = scheduler.get_job(JOB_ID)
    return job.next_run_time if job else None
