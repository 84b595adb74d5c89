"""Assembling a worker: tasks, resources opened on startup and closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, TaskiqEvents
from taskiq.abc.middleware import TaskiqMiddleware
from taskiq.message import TaskiqMessage
from taskiq.result import TaskiqResult
from taskiq.state import TaskiqState
from taskiq_redis import RedisStreamBroker

from bot.broadcasts import LEASE_MS, START_BROADCAST, STRETCH_SECONDS, BroadcastStore
from bot.reminders import REMIND, Reminders
from config.logging import exit_with_error, setup_logging, task_id_var
from config.settings import ConfigError, Settings, load_settings
from config.tracing import setup_tracing, shutdown_tracing
from tasks.broadcasting import Broadcaster, send_reminder
from tasks.broker import CompactTask, TidingsStreamBroker, build_broker
from tasks.callbacks import EventSender
from tasks.delivery import Deliverer
from tasks.email.rendering import EmailRenderer
from tasks.email.senders import EmailSender, OutboxSender, SmtpSender
from tasks.outbox import DevOutbox
from tasks.recovery import Recovery, stop_on_signals
from tasks.sms.base import SmsSender
from tasks.sms.console import ConsoleSmsSender
from tasks.sms.rendering import SmsRenderer
from tasks.sms.ronglian import RonglianSender
from tasks.stopping import stop_task
from tasks.telemetry import REQUEST_ID, TRACEPARENT, outgoing_labels
from verification.cleanup import clean_up
from verification.connections import is_unavailable, open_redis, until_available
from verification.deliveries import DeliveryStore
from verification.durability import Durability
from verification.events import EventStore
from verification.keys import Layout
from verification.models import now_ms
from verification.reports import DAY_MS, day_report
from verification.service import SIGNUP_REMINDER, VerificationService

if TYPE_CHECKING:  # aiogram takes seconds to import: only processes with a bot load it
    from aiogram import Bot

logger = logging.getLogger(__name__)

DELIVER = "tidings.deliver"
SWEEP_EXPIRED = "tidings.sweep_expired"
SEND_EVENT = "tidings.send_event"
BROADCAST = "tidings.broadcast"
CLEANUP = "tidings.cleanup"
DAILY_REPORT = "tidings.daily_report"


@dataclass(slots=True)
class WorkerResources:
    """What one worker process holds open."""

    redis: Redis
    deliverer: Deliverer
    recovery: Recovery
    events: EventSender
    http: aiohttp.ClientSession
    bot: Bot | None = None
    broadcaster: Broadcaster | None = None
    broadcasts: BroadcastStore | None = None
    service: VerificationService | None = None
    pump: asyncio.Task[None] | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)


class TaskIdMiddleware(TaskiqMiddleware):
    """Put the task id into every log line a task writes."""

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Remember the id for the logging context."""
        task_id_var.set(message.task_id)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Forget it."""
        task_id_var.set(None)


@dataclass(frozen=True, slots=True)
class Tasks:
    """Handles for kicking tasks from any process."""

    deliver: AsyncTaskiqDecoratedTask[Any, Any]
    sweep_expired: AsyncTaskiqDecoratedTask[Any, Any]
    send_event: AsyncTaskiqDecoratedTask[Any, Any]
    broadcast: AsyncTaskiqDecoratedTask[Any, Any]
    cleanup: AsyncTaskiqDecoratedTask[Any, Any]
    daily_report: AsyncTaskiqDecoratedTask[Any, Any]
    remind: AsyncTaskiqDecoratedTask[Any, Any]
    signup_reminder: AsyncTaskiqDecoratedTask[Any, Any]
    start_broadcast: AsyncTaskiqDecoratedTask[Any, Any]


async def _cleanup(held: WorkerResources, settings: Settings) -> dict[str, int]:
    removed = await clean_up(held.redis, Layout.for_settings(settings))
    logger.info("cleanup done", extra=removed)
    return removed


async def _daily_report(held: WorkerResources, settings: Settings) -> str:
    yesterday = now_ms() // DAY_MS - 1
    text = "\n".join(await day_report(held.redis, Layout.for_settings(settings), yesterday))
    logger.info("daily report", extra={"report": text})
    if held.bot is not None:
        for admin in settings.telegram.admin_ids:
            await held.bot.send_message(admin, text)
    return text


async def _remind(held: WorkerResources, settings: Settings, reminder_id: str) -> str:
    reminders = Reminders(held.redis, Layout.for_settings(settings).home)
    claim = await reminders.claim(reminder_id, int(settings.queue.lease_seconds * 1000))
    if claim is None:
        return "not due"  # sent, canceled, or being sent by another worker
    token, chat_id, text, lang = claim
    outcome, error = await send_reminder(held.bot, chat_id, text, lang)
    await reminders.finish(reminder_id, token, outcome, error)
    return outcome


def register_tasks(broker: AsyncBroker, settings: Settings) -> Tasks:
    """Register every task on ``broker``.

    Each task bounds itself with ``asyncio.timeout`` rather than taskiq's ``timeout``
    label, which taskiq enforces with an anyio cancel scope per task: that cost about 8 %
    of a worker's CPU per email in the delivery benchmark. The tasks reach the worker's
    resources through ``broker.state`` (set on WORKER_STARTUP), not taskiq's dependency
    injection, for the same reason.
    """
    q = settings.queue

    def resources() -> WorkerResources:
        held: WorkerResources = broker.state.tidings
        return held

    async def deliver(delivery_id: str) -> str:
        """Send one delivery; idempotent per delivery id.

        No deadline around the whole task: the wait for a pooled connection is not part
        of an attempt, and an attempt bounds itself (see ``Deliverer.deliver``).
        """
        return await resources().deliverer.deliver(delivery_id)

    async def send_event(event_id: str) -> str:
        """POST one outbound event to its site (one attempt; retries are rescheduled)."""
        async with asyncio.timeout(settings.events.timeout_seconds + 5):
            return await resources().events.send(event_id)

    async def broadcast(broadcast_id: str) -> str:
        """Send the next stretch of a broadcast; queue the stretch after it if one is left."""
        broadcaster = resources().broadcaster
        if broadcaster is None:
            return "worker not ready"
        # A stretch lasts STRETCH_SECONDS, plus Telegram's slowest answers.
        async with asyncio.timeout(STRETCH_SECONDS + 40):
            outcome = await broadcaster.run(broadcast_id)
        if outcome == "continues":
            await handles.broadcast.kiq(broadcast_id)
        return outcome

    async def sweep_expired() -> int:
        """Mark pending verifications past their expiry as expired."""
        async with asyncio.timeout(q.task_timeout_seconds):
            expired = await resources().deliverer.store.sweep_expired()
        if expired:
            logger.info("verifications expired", extra={"count": len(expired)})
        return len(expired)

    async def cleanup() -> dict[str, int]:
        """Drop index entries whose records have expired."""
        async with asyncio.timeout(q.task_timeout_seconds):
            return await _cleanup(resources(), settings)

    async def daily_report() -> str:
        """Yesterday in numbers, to every admin in Telegram (and the log)."""
        async with asyncio.timeout(q.task_timeout_seconds):
            return await _daily_report(resources(), settings)

    async def remind(reminder_id: str) -> str:
        """Send a person's reminder into their chat, once."""
        async with asyncio.timeout(q.task_timeout_seconds):
            return await _remind(resources(), settings, reminder_id)

    async def signup_reminder(verification_id: str) -> str:
        """``remind_after``: a fresh code to a signup that is still pending."""
        held = resources()
        if held.service is None:
            return "worker not ready"
        async with asyncio.timeout(q.task_timeout_seconds):
            outcome = await held.service.remind(verification_id)
        logger.info("signup reminder", extra={"verification": verification_id, "outcome": outcome})
        return outcome

    async def start_broadcast(broadcast_id: str) -> str:
        """A scheduled broadcast's time has come: fix its audience and send it."""
        held = resources()
        if held.broadcasts is None:
            return "worker not ready"
        state, total = await held.broadcasts.start(broadcast_id)
        if state == "queued":
            logger.info(
                "scheduled broadcast started", extra={"broadcast": broadcast_id, "total": total}
            )
            await handles.broadcast.kiq(broadcast_id)
        return state

    handles = Tasks(
        deliver=broker.register_task(deliver, task_name=DELIVER),
        sweep_expired=broker.register_task(sweep_expired, task_name=SWEEP_EXPIRED),
        send_event=broker.register_task(send_event, task_name=SEND_EVENT),
        broadcast=broker.register_task(broadcast, task_name=BROADCAST),
        cleanup=broker.register_task(cleanup, task_name=CLEANUP),
        daily_report=broker.register_task(daily_report, task_name=DAILY_REPORT),
        remind=broker.register_task(remind, task_name=REMIND),
        signup_reminder=broker.register_task(signup_reminder, task_name=SIGNUP_REMINDER),
        start_broadcast=broker.register_task(start_broadcast, task_name=START_BROADCAST),
    )
    _compact_deliveries(broker, handles)
    return handles


def _compact_deliveries(broker: AsyncBroker, handles: Tasks) -> None:
    """Teach the broker to rebuild the compact delivery entries signups queue."""
    if isinstance(broker, TidingsStreamBroker):
        # Labels of the message deliver.kiq() would send, before its middlewares run.
        template = handles.deliver.kicker()._prepare_message("")
        broker.compact = CompactTask(
            DELIVER, dict(template.labels), dict(template.labels_types or {})
        )


class TaskiqDeliveryQueue:
    """The :class:`verification.service.DeliveryQueue` of the taskiq stream broker.

    A signup's delivery goes on the stream as a compact entry (:class:`CompactTask`),
    which the workers' broker turns back into the message ``deliver.kiq()`` would send.
    """

    def __init__(self, broker: RedisStreamBroker, tasks: Tasks) -> None:
        self._maxlen = broker.maxlen or 0

    @property
    def maxlen(self) -> int:
        """Approximate cap of the stream."""
        return self._maxlen

    def message(self, delivery_id: str) -> bytes:
        """The stream entry that runs ``deliver(delivery_id)``, with where it came from."""
        # The request id and trace context of the request that queued it (what kiq()'s
        # TelemetryMiddleware adds); the time is the entry's id.
        labels = outgoing_labels()
        return CompactTask.entry(delivery_id, labels.get(REQUEST_ID), labels.get(TRACEPARENT))


def _dev_outbox(settings: Settings, redis: Redis) -> DevOutbox:
    return DevOutbox(redis, Layout.for_settings(settings).home.outbox, echo=settings.dev)


def build_email_sender(settings: Settings, redis: Redis) -> EmailSender:
    """The configured email provider."""
    if settings.email.backend == "outbox":
        return OutboxSender(_dev_outbox(settings, redis))
    return SmtpSender(settings.email)


def build_sms_sender(settings: Settings, redis: Redis) -> SmsSender | None:
    """The configured SMS provider, or None when the sms channel is off."""
    provider = settings.sms.provider
    if provider == "console":
        return ConsoleSmsSender(_dev_outbox(settings, redis))
    if provider == "ronglian":
        return RonglianSender(settings.sms.ronglian)
    return None


async def _maintain(resources: WorkerResources, tasks: Tasks, settings: Settings) -> None:
    """Keep the worker's heartbeat, hand back dead workers' tasks, and enqueue due deliveries.

    Due deliveries are retries whose backoff has passed and sends a crashed worker left
    half done; none of this waits for new traffic.
    """
    store = resources.deliverer.store
    q = settings.queue
    lease_ms = int(q.requeue_after_seconds * 1000)
    loop = asyncio.get_running_loop()
    next_beat = 0.0
    failing = False
    while True:
        try:
            if loop.time() >= next_beat:
                await resources.recovery.beat()
                await resources.recovery.reap()
                next_beat = loop.time() + q.heartbeat_seconds
            for delivery_id in await store.take_due(lease_ms):
                await tasks.deliver.kiq(delivery_id)
            for event_id in await resources.events.store.take_due(lease_ms):
                await tasks.send_event.kiq(event_id)
            if resources.broadcasts is not None:
                for broadcast_id in await resources.broadcasts.take_due(LEASE_MS):
                    await tasks.broadcast.kiq(broadcast_id)
            if failing:
                logger.warning("worker maintenance works again")
                failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:  # one line when it stops working, not one per second
                logger.warning(
                    "worker maintenance failed (%s); retrying",
                    type(exc).__name__,
                    exc_info=not is_unavailable(exc),
                )
                failing = True
        await asyncio.sleep(q.pump_interval_seconds)


def attach_worker(
    broker: TidingsStreamBroker, settings: Settings, tasks: Tasks, *, own_signals: bool = False
) -> None:
    """Open worker resources on WORKER_STARTUP and close them on WORKER_SHUTDOWN.

    ``own_signals``: this is a ``taskiq worker`` process, so SIGTERM/SIGINT must also stop
    the stream reads (see :func:`tasks.recovery.stop_on_signals`).
    """

    async def startup(state: TaskiqState) -> None:
        redis = open_redis(settings)
        layout = Layout.for_settings(settings)
        keys = layout.home
        deliverer = Deliverer(
            settings=settings,
            store=DeliveryStore(
                redis,
                layout,
                settings.require_secret_key(),
                durable=Durability.for_settings(redis, settings),
            ),
            email=build_email_sender(settings, redis),
            # Templates and brands compiled once per process, not per message.
            renderer=EmailRenderer.for_settings(settings),
            sms_renderer=SmsRenderer.for_settings(settings),
            sms=build_sms_sender(settings, redis),
            sites={site.id: site for site in settings.sites},
        )
        recovery = Recovery(redis, broker, layout, settings.queue.heartbeat_seconds)
        await until_available(
            recovery.beat, what="the worker", where=settings.redis_target().describe()
        )
        http = aiohttp.ClientSession()
        events = EventSender(settings, EventStore(redis, layout), http, deliverer.sites)
        resources = WorkerResources(
            redis=redis, deliverer=deliverer, recovery=recovery, events=events, http=http
        )
        if settings.telegram.token is not None:
            from bot.factory import create_bot  # aiogram only where a bot is configured

            resources.bot = create_bot(settings)
        resources.broadcasts = BroadcastStore(
            redis,
            keys,
            Durability.for_settings(redis, settings),
        )
        resources.service = VerificationService(
            redis, settings, TaskiqDeliveryQueue(broker, tasks), layout=layout
        )
        resources.broadcaster = Broadcaster(
            settings, resources.broadcasts, resources.bot, deliverer.email, deliverer.renderer
        )
        resources.pump = asyncio.create_task(_maintain(resources, tasks, settings), name="pump")
        state.tidings = resources
        if own_signals:
            stop_on_signals(broker)
        logger.info("worker ready", extra={"queue": keys.queue})

    async def shutdown(state: TaskiqState) -> None:
        broker.stop_listening()
        resources: WorkerResources | None = getattr(state, "tidings", None)
        if resources is None:
            return
        if resources.pump is not None:
            await stop_task(resources.pump)
        with contextlib.suppress(RedisError, OSError):
            await resources.recovery.retire()
        await resources.deliverer.close()
        if resources.bot is not None:
            await resources.bot.session.close()
        await resources.http.close()
        await resources.redis.aclose()
        shutdown_tracing()

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, startup)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, shutdown)


def build_worker_broker(
    settings: Settings, *, own_signals: bool = False
) -> tuple[TidingsStreamBroker, Tasks]:
    """A broker with tasks, worker hooks and middlewares: what a worker process runs."""
    broker = build_broker(settings)
    broker.add_middlewares(TaskIdMiddleware())
    tasks = register_tasks(broker, settings)
    attach_worker(broker, settings, tasks, own_signals=own_signals)
    return broker, tasks


def create_broker() -> AsyncBroker:
    """Factory for ``taskiq worker tasks.worker:create_broker``: settings from the environment."""
    from tasks.ops import attach_worker_ops

    try:
        settings = load_settings()
    except ConfigError as exc:
        exit_with_error(str(exc))
    setup_logging(settings)
    setup_tracing("worker")
    broker, _ = build_worker_broker(settings, own_signals=True)
    # Here, not in build_worker_broker: in-process workers (tests, dev) have no ops port.
    attach_worker_ops(broker, settings, broker.consumer_group_name)
    return broker
