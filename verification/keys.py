"""Every Redis key Tidings uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass


def event_id(verification_id: str) -> str:
    """A verification has one final status change, so one event id: ``evt_`` + its id."""
    return "evt_" + verification_id.removeprefix("ver_")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder under one prefix (tests give each run its own)."""

    prefix: str = "tidings"

    def verification(self, verification_id: str) -> str:
        """Hash with one verification's state."""
        return f"{self.prefix}:v:{verification_id}"

    def verification_deliveries(self, verification_id: str) -> str:
        """List of the delivery ids of one verification, oldest first."""
        return f"{self.prefix}:v:{verification_id}:deliveries"

    def delivery(self, delivery_id: str) -> str:
        """Hash with one delivery's state."""
        return f"{self.prefix}:d:{delivery_id}"

    def user(self, site: str, user_id_digest: str) -> str:
        """Set of a site user's verification ids."""
        return f"{self.prefix}:user:{site}:{user_id_digest}"

    def webhook_seen(self, site: str, webhook_id: str) -> str:
        """First answer given to one inbound ``webhook-id``."""
        return f"{self.prefix}:wh:{site}:{webhook_id}"

    def destination_window(self, destination_digest: str) -> str:
        """Sliding window of sends to one address or number."""
        return f"{self.prefix}:rl:dest:{destination_digest}"

    def site_hour(self, site: str, hour: int) -> str:
        """Sends of one site in one clock hour."""
        return f"{self.prefix}:rl:site:{site}:{hour}"

    def phone_prefix_hour(self, prefix: str, hour: int) -> str:
        """SMS sends to one number range in one clock hour, across sites (anti-pumping)."""
        return f"{self.prefix}:rl:prefix:{prefix}:{hour}"

    def page_ip_minute(self, ip: str) -> str:
        """Requests from one client IP to the public pages in the current minute window."""
        return f"{self.prefix}:rl:ip:{ip}"

    @property
    def subscribers(self) -> str:
        """Sorted set of subscribed Telegram chat ids, scored by when they subscribed."""
        return f"{self.prefix}:tg:subs"

    @property
    def mail_subscribers(self) -> str:
        """Sorted set of verified addresses that opted in to email announcements."""
        return f"{self.prefix}:mail:subs"

    def chat(self, chat_id: int) -> str:
        """Hash of one Telegram chat: user id, chosen language."""
        return f"{self.prefix}:tg:chat:{chat_id}"

    def chat_pending(self, chat_id: int) -> str:
        """The verification a chat is asked to confirm by sharing its phone."""
        return f"{self.prefix}:tg:pending:{chat_id}"

    def broadcast(self, broadcast_id: str) -> str:
        """Hash of one broadcast: content, state, counters, lease."""
        return f"{self.prefix}:bc:{broadcast_id}"

    def broadcast_audience(self, broadcast_id: str) -> str:
        """List of the chat ids a broadcast goes to, fixed when it starts."""
        return f"{self.prefix}:bc:{broadcast_id}:audience"

    def broadcast_inflight(self, broadcast_id: str) -> str:
        """Hash of audience index → chat id being sent right now (at most once after a crash)."""
        return f"{self.prefix}:bc:{broadcast_id}:inflight"

    @property
    def broadcasts(self) -> str:
        """Sorted set of broadcast ids by creation time."""
        return f"{self.prefix}:bc:recent"

    @property
    def broadcasts_due(self) -> str:
        """Sorted set of running broadcasts scored by when their lease runs out."""
        return f"{self.prefix}:bc:due"

    @property
    def telegram_rate(self) -> str:
        """The bot-wide send schedule (GCRA theoretical arrival time, ms)."""
        return f"{self.prefix}:tg:rate"

    @property
    def telegram_pause(self) -> str:
        """Until when Telegram asked the bot to send nothing (its retry_after), ms."""
        return f"{self.prefix}:tg:pause"

    @property
    def schedules(self) -> str:
        """Hash of schedule id → the taskiq ScheduledTask (JSON)."""
        return f"{self.prefix}:sched:data"

    @property
    def schedules_due(self) -> str:
        """Sorted set of one-off schedule ids by due time (ms): found without a SCAN."""
        return f"{self.prefix}:sched:due"

    @property
    def schedules_claimed(self) -> str:
        """Sorted set of one-off schedules being sent, by lease deadline (ms)."""
        return f"{self.prefix}:sched:claimed"

    @property
    def schedules_periodic(self) -> str:
        """Set of cron and interval schedule ids."""
        return f"{self.prefix}:sched:periodic"

    def schedule_fired(self, schedule_id: str, slot: int) -> str:
        """Marks one run (a cron minute, an interval slot) of a periodic schedule as sent."""
        return f"{self.prefix}:sched:fired:{schedule_id}:{slot}"

    def reminder(self, reminder_id: str) -> str:
        """Hash of one reminder: chat, text, due time, status."""
        return f"{self.prefix}:rem:{reminder_id}"

    def chat_reminders(self, chat_id: int) -> str:
        """Sorted set of one chat's reminder ids by due time (ms)."""
        return f"{self.prefix}:rem:chat:{chat_id}"

    def event(self, verification_id: str) -> str:
        """Hash of the outbound event of a verification's final status change."""
        return f"{self.prefix}:e:{event_id(verification_id)}"

    def event_by_id(self, evt_id: str) -> str:
        """The same hash, by event id (``evt_<id>`` or, after a replay, ``evt_<id>_<n>``)."""
        return f"{self.prefix}:e:{'_'.join(evt_id.split('_')[:2])}"

    @property
    def events_due(self) -> str:
        """Sorted set of undelivered events scored by when to (re)send them."""
        return f"{self.prefix}:events:due"

    @property
    def events_failed(self) -> str:
        """List of events that could not be delivered, newest first."""
        return f"{self.prefix}:events:failed"

    @property
    def due(self) -> str:
        """Sorted set of unfinished deliveries scored by when to (re)enqueue them."""
        return f"{self.prefix}:deliveries:due"

    @property
    def dead_letters(self) -> str:
        """List of deliveries that failed for good, newest first."""
        return f"{self.prefix}:deliveries:failed"

    @property
    def expiring(self) -> str:
        """Sorted set of pending verifications scored by expiry time."""
        return f"{self.prefix}:v:expiring"

    @property
    def stats(self) -> str:
        """Hash of counters exported on ``/metrics``."""
        return f"{self.prefix}:stats"

    @property
    def outbox(self) -> str:
        """Development outbox of captured messages, newest first."""
        return f"{self.prefix}:outbox"

    @property
    def readiness(self) -> str:
        """Written by readiness probes: a write succeeds only on a writable master."""
        return f"{self.prefix}:ready"

    @property
    def queue(self) -> str:
        """The taskiq stream."""
        return f"{self.prefix}:queue"
