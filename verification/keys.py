"""Every Redis key Tidings uses, in one place, and how keys are spread over shards.

The data is split into logical *shards*. Every key of a shard starts with the shard's
prefix, which carries a Redis Cluster hash tag (``{tidings:3:17}``), so each Lua script,
which only touches the keys of one verification and the indexes of its shard, runs on
one slot. The shards' tags are chosen so that their slots are spread evenly over the
16,384 slots: a cluster whose masters own equal slot ranges gets an equal share each.

What lives where, and why:

- A verification, its deliveries, its event, its ``remind_after`` schedule, its
  webhook-id record and its user index entry live in one shard, chosen when the signup
  arrives from what the rate limits count: the address (email), the number's prefix
  (SMS: the anti-pumping counter of that prefix is in the same slot) or the site's user
  (Telegram). So accepting a signup, limits included, stays one atomic script.
- Each shard has its own task stream, due sets, expiry index, events, schedules,
  dead letters and counters; workers, schedulers and metrics visit every shard.
- The site-wide hourly cap is kept per shard (the cap divided by the shard count): a
  global counter would put every signup on one slot.
- Bot-wide state (subscribers, chats, broadcasts, people's reminders, the Telegram send
  schedule, the dev outbox) is small and lives in the *home* shard, shard 0.

Ids carry their shard: with more than one shard a verification id is ``ver_`` + two hex
digits of shard + 32 random hex digits; a delivery id embeds its verification's. With
one shard ids have no shard digits and the keys have no hash tag, which is exactly the
layout before shards existed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from verification.codes import random_hex

if TYPE_CHECKING:
    from config.settings import Settings

#: Shards on a Redis Cluster unless configured: 4 per master on the usual 3 masters.
CLUSTER_SHARDS = 12

#: Stored in Redis under :attr:`Layout.version_key`; bumped when keys move or records
#: take a form earlier releases cannot read. 3 (2026-12): deliveries inside their
#: verification's hash, timers in lists, ids derived from webhook-ids.
LAYOUT_VERSION = 3


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
        """List of one verification's delivery ids, as releases before 2026-12 kept it.

        Now a field of the verification's hash (:func:`delivery_ids`).
        """
        return f"{self.prefix}:v:{verification_id}:deliveries"

    def delivery(self, delivery_id: str) -> str:
        """Hash with one delivery's state."""
        return f"{self.prefix}:d:{delivery_id}"

    def user(self, site: str, user_id_digest: str) -> str:
        """Set of a site user's verification ids, as releases before 2026-12 kept them.

        Read, never written: such sets expire with their verifications' retention.
        """
        return f"{self.prefix}:user:{site}:{user_id_digest}"

    def user_index(self, site: str, user_id_digest: str) -> str:
        """Hash of a site user's verification ids, as releases before 2026-12 kept them.

        Now :meth:`user_signups`; read, never written.
        """
        return f"{self.prefix}:uv:{site}:{user_id_digest}"

    def user_signups(self, site: str, day: int) -> str:
        """Hash of a site's user digest → the verifications its users started that UTC day.

        Values are verification ids without ``ver_``, space-separated: a field per user
        and day rather than a key per user. Kept for three days (``cancel_user`` reads
        them all); releases before 2026-12 kept a hash per user (:meth:`user_index`).
        """
        return f"{self.prefix}:us:{site}:{day}"

    def webhook_seen(self, site: str, webhook_id: str) -> str:
        """First answer given to one inbound ``webhook-id``."""
        return f"{self.prefix}:wh:{site}:{webhook_id}"

    def destination_windows(self, window_ms: int, bucket: int) -> str:
        """Hash of address or number digest → its sends in one bucket of time.

        A bucket is one window long (``window_sends`` in ``_lib.lua``): a field per
        address rather than a key each. Releases before 2026-12 kept a sorted set per
        address (``rl:dest:<digest>``, gone 10 minutes after its last send).
        """
        return f"{self.prefix}:rl:dw:{window_ms // 1000}:{bucket}"

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

    def status(self, verification_id: str, now: int) -> list[str]:
        """KEYS 1-8 of every script that can change a verification's status (``_lib.lua``)."""
        return [
            self.verification(verification_id),
            self.expiring,
            self.stats,
            self.stats_day(now // 86_400_000),
            self.event(verification_id),
            self.events_due,
            self.schedules,
            self.schedules_due,
        ]

    def stats_day(self, day: int) -> str:
        """Counters of one UTC day (days since the epoch), kept 8 days."""
        return f"{self.prefix}:stats:day:{day}"

    @property
    def mail_subscriber_locales(self) -> str:
        """Hash of subscribed address → the language its announcements are written in."""
        return f"{self.mail_subscribers}:locale"

    def heartbeat(self, consumer: str) -> str:
        """A worker's heartbeat, beside the stream whose entries it holds."""
        return f"{self.prefix}:consumer:{consumer}"

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

    def timer_bucket(self, kind: str, bucket: int) -> str:
        """List of what falls due in one bucket of time (``verification.timers``)."""
        return f"{self.prefix}:t:{kind}:{bucket}"

    def timer_cursor(self, kind: str) -> str:
        """The first bucket of ``kind`` not known to be empty."""
        return f"{self.prefix}:t:{kind}:next"

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


def shard_prefixes(prefix: str, count: int, *, tagged: bool) -> tuple[str, ...]:
    """Key prefixes of ``count`` shards whose hash slots are spread evenly.

    Shard ``i``'s tag is the first ``{prefix:i:k}`` whose slot falls in the ``i``-th of
    ``count`` equal slot ranges (found in a few tries, the same in every process).
    """
    if count == 1:
        return (f"{{{prefix}}}" if tagged else prefix,)
    prefixes = []
    for index in range(count):
        low = index * REDIS_CLUSTER_HASH_SLOTS // count
        high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        attempt = 0
        while not low <= key_slot(f"{prefix}:{index}:{attempt}".encode()) < high:
            attempt += 1
        prefixes.append(f"{{{prefix}:{index}:{attempt}}}")
    return tuple(prefixes)


@dataclass(frozen=True, slots=True)
class Layout:
    """The shards of one deployment and how an id or a destination finds its shard."""

    prefix: str
    count: int = 1
    tagged: bool = False  # hash tags even with one shard (Redis Cluster)
    #: Every shard's key builder, in shard order.
    shards: tuple[Keys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefixes = shard_prefixes(self.prefix, self.count, tagged=self.tagged)
        object.__setattr__(self, "shards", tuple(Keys(p) for p in prefixes))

    @classmethod
    def for_settings(cls, settings: Settings) -> Layout:
        """The layout the settings describe (shard count, hash tags on a cluster)."""
        clustered = bool(settings.redis_url) and settings.redis_target().topology == "cluster"
        count = settings.redis.shards or (CLUSTER_SHARDS if clustered else 1)
        return cls(settings.redis_prefix, count, tagged=clustered)

    @property
    def home(self) -> Keys:
        """Shard 0: bot-wide state and the layout record."""
        return self.shards[0]

    @property
    def version_key(self) -> str:
        """The layout record: version and shard count of the data in this Redis.

        Outside every shard (no hash tag), so that settings with another shard count
        still find it and are refused.
        """
        return f"{self.prefix}:layout"

    def shard_of(self, any_id: str) -> int:
        """The shard of a ``ver_``, ``dlv_`` or ``evt_`` id (0 for ids without one)."""
        head = any_id.partition("_")[2]
        if self.count == 1 or len(head) < 34 or head[32:33] == "_":
            return 0  # one shard, or an id from before shards
        try:
            index = int(head[:2], 16)
        except ValueError:
            return 0
        return index if index < self.count else 0

    def of(self, any_id: str) -> Keys:
        """The keys of the shard holding ``any_id``."""
        return self.shards[self.shard_of(any_id)]

    def shard_for(self, digest: str) -> int:
        """The shard chosen for a hex digest (of an address, a number prefix, a user)."""
        return int(digest[:8], 16) % self.count

    def new_verification_id(self, shard: int, digest: str | None = None) -> str:
        """An unguessable verification id in ``shard``.

        ``digest`` (32 hex digits of a keyed hash) makes it the id of one thing, such as
        a site's webhook-id; without it the id is 128 random bits.
        """
        head = digest or secrets.token_hex(16)
        return f"ver_{head}" if self.count == 1 else f"ver_{shard:02x}{head}"


def new_delivery_id(verification_id: str) -> str:
    """A delivery id that names its verification (so a worker finds both in one step)."""
    return f"dlv_{verification_id.removeprefix('ver_')}_{random_hex(4)}"


def delivery_verification(delivery_id: str) -> str | None:
    """The verification a delivery id names, or None for ids from before they did."""
    head, sep, _ = delivery_id.removeprefix("dlv_").rpartition("_")
    return f"ver_{head}" if sep and head else None


def delivery_ids(verification_id: str, tails: str | None) -> list[str] | None:
    """A verification's delivery ids, from its hash's ``deliveries`` field (``_lib.lua``).

    None when it has no such field: a verification of a release before 2026-12 keeps a
    list of its own.
    """
    if tails is None:
        return None
    head = verification_id.removeprefix("ver_")
    return [f"dlv_{head}_{tail}" for tail in tails.split()]
