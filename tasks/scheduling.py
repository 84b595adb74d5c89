"""The scheduler process: periodic jobs declared here, one-offs stored in Redis."""

from __future__ import annotations

from taskiq import AsyncBroker, ScheduledTask, TaskiqScheduler

from config.logging import exit_with_error, setup_logging
from config.settings import ConfigError, Settings, load_settings
from config.tracing import setup_tracing
from tasks.schedules import RedisScheduleSource
from tasks.worker import CLEANUP, DAILY_REPORT, SWEEP_EXPIRED, build_worker_broker
from verification.connections import open_redis
from verification.keys import Layout


def periodic_jobs() -> list[ScheduledTask]:
    """Jobs that run on a clock; their ids are stable, so each run fires once."""

    def job(schedule_id: str, task_name: str, cron: str) -> ScheduledTask:
        return ScheduledTask(
            task_name=task_name, labels={}, args=[], kwargs={}, schedule_id=schedule_id, cron=cron
        )

    return [
        # Expired verifications get their status and event without anyone asking.
        job("sweep-expired", SWEEP_EXPIRED, "* * * * *"),
        job("cleanup", CLEANUP, "17 * * * *"),
        # Yesterday's numbers to the admins, at 08:00 UTC.
        job("daily-report", DAILY_REPORT, "0 8 * * *"),
    ]


def schedule_source(
    settings: Settings, broker: AsyncBroker, *, dispatch: bool
) -> RedisScheduleSource:
    """The Redis schedule store; ``dispatch`` runs its on-time sender (schedulers only)."""
    redis = open_redis(settings)
    return RedisScheduleSource(
        redis, Layout.for_settings(settings), broker, periodic_jobs(), dispatch=dispatch
    )


def build_scheduler(settings: Settings) -> TaskiqScheduler:
    """A scheduler over the Redis schedule store and the periodic jobs."""
    broker, _ = build_worker_broker(settings)
    return TaskiqScheduler(broker, sources=[schedule_source(settings, broker, dispatch=True)])


def create_scheduler() -> TaskiqScheduler:
    """Factory for ``taskiq scheduler tasks.scheduling:create_scheduler``."""
    from tasks.ops import attach_scheduler_ops

    try:
        settings = load_settings()
    except ConfigError as exc:
        exit_with_error(str(exc))
    setup_logging(settings)
    setup_tracing("scheduler")
    scheduler = build_scheduler(settings)
    # Here, not in build_scheduler: the in-process scheduler of `tidings dev` has no ops port.
    sources = [s for s in scheduler.sources if isinstance(s, RedisScheduleSource)]
    attach_scheduler_ops(scheduler, settings, lambda: all(s.dispatching for s in sources))
    return scheduler
