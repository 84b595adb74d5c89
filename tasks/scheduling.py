"""The scheduler process: periodic jobs declared on the tasks themselves."""

from __future__ import annotations

from taskiq import TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource

from config.logging import setup_logging
from config.settings import Settings, load_settings
from tasks.worker import build_worker_broker


def build_scheduler(settings: Settings) -> TaskiqScheduler:
    """A scheduler over the code-declared (label) schedules."""
    broker, _ = build_worker_broker(settings)
    return TaskiqScheduler(broker, sources=[LabelScheduleSource(broker)])


def create_scheduler() -> TaskiqScheduler:
    """Factory for ``taskiq scheduler tasks.scheduling:create_scheduler``."""
    settings = load_settings()
    setup_logging(settings)
    return build_scheduler(settings)
