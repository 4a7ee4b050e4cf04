"""The nightly scheduler: persistent job store, one job, sane misfire handling."""

import pytest

from learner.scheduler import JOB_ID, MISFIRE_GRACE_S, make_scheduler, next_run, parse_cron


def test_job_is_persisted_once_across_restarts(home):
    home.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a restarted daemon re-registers instead of duplicating
        s = make_scheduler(home, "0 2 * * *", min_new=4)
        s.start(paused=True)
        jobs = s.get_jobs()
        assert [j.id for j in jobs] == [JOB_ID]
        job = jobs[0]
        assert (job.next_run_time.hour, job.next_run_time.minute) == (2, 0)
        assert job.max_instances == 1 and job.coalesce is True
        assert job.misfire_grace_time == MISFIRE_GRACE_S
        assert job.kwargs == {"home": str(home), "min_new": 4}
        assert next_run(s) == job.next_run_time
        s.shutdown(wait=False)
    assert (home / "scheduler.db").is_file()


def test_bad_cron_names_the_expected_shape():
    with pytest.raises(ValueError, match="5 crontab fields 'minute hour day month weekday'"):
        parse_cron("every night")
