"""Issuing, checking, resending and canceling verifications."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from redis.asyncio import Redis

from config.settings import Settings
from config.sites import EMAIL_CHANNELS, Channel, CodePolicy, SiteConfig
from verification.codes import CodeHasher, LinkToken, PayloadSealer, generate_code
from verification.deliveries import read_deliveries, read_delivery
from verification.durability import Durability
from verification.errors import ChannelUnavailable, NotFound, NotPending, RateLimited, Refused
from verification.keys import Keys, Layout, delivery_ids, new_delivery_id
from verification.models import (
    DeliveryStatus,
    Status,
    delivery_fields,
    iso,
    iso_ms,
    now_ms,
    stored_verification,
    to_json,
    verification_resource,
)
from verification.phones import phone_prefix
from verification.scripts import Scripts, as_text
from verification.timers import EXPIRY, REQUEUE

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: Days of user signups kept for ``signup.canceled``/``user.deleted`` (a verification is
#: pending a day at most, unless resent).
USER_SIGNUP_DAYS = 3
#: Verification fields that are often empty, and then not stored.
_OPTIONAL_FIELDS = frozenset({"email", "phone", "metadata", "subscribe", "remind_after"})
#: The task that sends a ``remind_after`` reminder (registered by ``tasks.worker``).
SIGNUP_REMINDER = "tidings.signup_reminder"


class DeliveryQueue(Protocol):
    """Where new deliveries are handed to the workers.

    The service appends the task message to its shard's stream inside the same Lua script
    that stores the delivery, so a signup is accepted and queued atomically, in one round
    trip.
    """

    @property
    def maxlen(self) -> int:
        """Approximate cap of the stream."""

    def message(self, delivery_id: str) -> bytes:
        """The stream entry (field ``d``) that runs the task sending ``delivery_id``."""


@dataclass(frozen=True, slots=True)
class Signup:
    """A validated ``signup.created`` event."""

    user_id: str
    channel: Channel
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    remind_after: int | None = None
    metadata: dict[str, Any] | None = None
    subscribe: bool = False  # email announcements, once the address is verified


@dataclass(frozen=True, slots=True)
class LinkState:
    """What a magic link is worth now.

    ``state``: ``pending`` (can be used), ``approved`` (this use approved it), ``used``
    (approved before, by a link or a code), ``invalid`` (never ours, or replaced by a
    newer link), ``not_found`` (gone), or the verification's other final status
    (``expired``, ``canceled``, ``max_attempts_reached``, ``failed``).
    """

    state: str
    site: str
    locale: str

    @property
    def open(self) -> bool:
        """Whether the link can still approve its verification."""
        return self.state == "pending"


@dataclass(frozen=True, slots=True)
class TelegramAnswer:
    """What a bot action did: ``state`` (see ``telegram.lua``) and the verification."""

    state: str
    verification_id: str
    site: str
    locale: str
    phone: str  # the signup's E.164 phone, to compare with a shared contact


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer to a code check."""

    valid: bool
    status: str
    attempts_left: int


@dataclass(frozen=True, slots=True)
class Created:
    """Outcome of accepting a signup; ``replayed`` when the webhook-id was seen before."""

    resource: dict[str, Any]
    replayed: bool
    body: str


def _raise_for(reply: list[str], missing: str = "no such verification") -> None:
    """Raise the core's exception for a script's refusal; any other reply passes.

    Refusals: ``not_found``, ``inactive``, ``limited``, ``refused``.
    """
    kind = reply[0]
    if kind == "not_found":
        raise NotFound(missing)
    if kind == "inactive":
        raise NotPending(reply[1])
    if kind == "limited":
        raise RateLimited(reply[2], int(reply[1]))
    if kind == "refused":
        raise Refused(reply[1])


class VerificationService:
    """The verification core. Every state change is one atomic Redis script."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        queue: DeliveryQueue,
        *,
        layout: Layout | None = None,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._queue = queue
        self._layout = layout or Layout.for_settings(settings)
        master = settings.require_secret_key()
        self._hasher = CodeHasher(master)
        self._sealer = PayloadSealer(master)
        self._scripts = Scripts.register(redis)
        self._durable = Durability.for_settings(redis, settings)
        self._policies: dict[str, CodePolicy] = {}
        # For telegram_link; learned from Telegram at start-up when not configured.
        self.bot_username = settings.telegram.username

    def _destination(self, channel: Channel, email: str | None, phone: str | None) -> str:
        if channel == Channel.TELEGRAM:
            return ""  # the chat is known once the person opens the deep link
        if channel in EMAIL_CHANNELS and email:
            return email
        if channel == Channel.SMS and phone:
            return phone
        raise ChannelUnavailable(f"channel {channel.value!r} needs a destination it does not have")

    def ensure_channel(self, site: SiteConfig, channel: Channel) -> None:
        """Raise :class:`ChannelUnavailable` unless ``site`` may use ``channel`` here."""
        if channel not in site.channels:
            raise ChannelUnavailable(f"channel {channel.value!r} is not enabled for this site")
        if channel not in self._settings.deliverable_channels:
            raise ChannelUnavailable(f"channel {channel.value!r} is not available here")

    def _signup_reminder(self, vid: str, signup: Signup, now: int) -> tuple[str, str, int]:
        """Schedule id, ScheduledTask JSON and due time of a ``remind_after`` reminder."""
        if not signup.remind_after or signup.channel == Channel.TELEGRAM:
            return "", "", 0
        due = now + signup.remind_after * 1000
        schedule_id = f"remind_{vid}"
        task = {
            "task_name": SIGNUP_REMINDER,
            "labels": {},
            "args": [vid],
            "kwargs": {},
            "schedule_id": schedule_id,
            "time": iso_ms(due),
        }
        return schedule_id, json.dumps(task), due

    async def remind(self, vid: str) -> str:
        """Send a pending verification's reminder: a fresh code (and link), same channel.

        Returns what happened; a verification that is no longer pending gets nothing.
        """
        raw = cast(
            dict[str, str], await self._redis.hgetall(self._layout.of(vid).verification(vid))
        )
        raw = stored_verification(vid, raw)
        site = next((s for s in self._settings.sites if s.id == raw.get("site")), None)
        if not raw or site is None:
            return "gone"
        try:
            await self.resend(site, vid, purpose="reminder")
        except NotPending as exc:
            return f"not sent: verification is {exc}"
        except (RateLimited, ChannelUnavailable) as exc:
            return f"not sent: {exc}"
        return "sent"

    def _prefix_limit(
        self, keys: Keys, channel: Channel, destination: str, hour: int
    ) -> tuple[str, int, int]:
        """Key, limit and TTL of the anti-pumping counter (limit 0: not counted)."""
        sms = self._settings.sms
        if channel != Channel.SMS or not sms.sends_per_prefix_per_hour:
            return keys.phone_prefix_hour("-", hour), 0, 0
        prefix = phone_prefix(destination, sms.prefix_digits)
        return keys.phone_prefix_hour(prefix, hour), sms.sends_per_prefix_per_hour, HOUR_MS

    def _signup_shard(self, site: SiteConfig, signup: Signup, destination: str) -> int:
        """The shard of a new verification: where the counters its limits check live.

        An address's sends are counted in its own shard, an SMS number's in the shard of
        its number range (so the anti-pumping counter of the range is in the same slot),
        and a Telegram signup, which has no destination yet, goes by the site's user.
        """
        if self._layout.count == 1:
            return 0
        if signup.channel == Channel.SMS:
            what = "prefix:" + phone_prefix(destination, self._settings.sms.prefix_digits)
        elif destination:
            what = destination.lower()
        else:
            what = f"{site.id}:{signup.user_id}"
        return self._layout.shard_for(self._hasher.index(what))

    def _user_field(self, site: SiteConfig, user_id: str) -> str:
        """A site user's field in the days' user signups (96 bits of a keyed hash)."""
        return self._hasher.index(f"{site.id}:{user_id}")[:24]

    def _window_field(self, destination: str) -> str:
        """The destination's field in its window buckets (96 bits of a keyed hash)."""
        return self._hasher.index(destination.lower())[:24]

    def _site_limit(self, policy: CodePolicy) -> int:
        """The site's hourly cap as counted in one shard: the cap shared out over shards."""
        return math.ceil(policy.site_sends_per_hour / self._layout.count)

    def _new_delivery(
        self,
        verification_id: str,
        channel: Channel,
        send_no: int,
        code: str,
        now: int,
        purpose: str = "code",
    ) -> tuple[str, dict[str, str], LinkToken]:
        """A new delivery's id, its record and the magic link it sends (derived from its id).

        The record keeps what its id and defaults do not tell (``store_delivery`` in
        ``_lib.lua``): no id, no verification id, no zero attempts, no ``code`` purpose.
        """
        delivery_id = new_delivery_id(verification_id)
        delivery = {
            "channel": channel.value,
            "send_no": str(send_no),
            "status": DeliveryStatus.QUEUED.value,
            "created_at": str(now),
            # Only the code is sealed; the link is derived from the delivery id again when
            # it is sent.
            "secret": self._sealer.seal(code, delivery_id),
        }
        if purpose != "code":
            delivery["purpose"] = purpose
        return delivery_id, delivery, self._hasher.delivery_link(delivery_id, verification_id)

    def _policy(self, site: SiteConfig) -> CodePolicy:
        policy = self._policies.get(site.id)
        if policy is None:
            policy = self._policies[site.id] = self._settings.policy_for(site)
        return policy

    async def create(self, site: SiteConfig, webhook_id: str, signup: Signup) -> Created:
        """Accept a signup once per ``webhook_id``: store it and queue the first code."""
        self.ensure_channel(site, signup.channel)
        destination = self._destination(signup.channel, signup.email, signup.phone)
        policy = self._policy(site)
        now = now_ms()
        shard = self._signup_shard(site, signup, destination)
        keys = self._layout.shards[shard]
        vid = self._layout.new_verification_id(shard, self._hasher.signup(site.id, webhook_id))
        code = generate_code(policy.digits)
        delivery_id = ""
        delivery: dict[str, str] = {}
        message = b""
        if signup.channel == Channel.TELEGRAM:
            link = LinkToken.new(vid)  # never sent: the person comes through the bot
        else:
            delivery_id, delivery, link = self._new_delivery(vid, signup.channel, 1, code, now)
            message = self._queue.message(delivery_id)
        expires_at = now + policy.ttl_seconds * 1000
        verification = {
            "id": vid,  # the key names it: not stored (see stored_verification)
            "site": site.id,
            "user_id": signup.user_id,
            "channel": signup.channel.value,
            "destination": destination,
            "email": signup.email or "",
            "phone": signup.phone or "",
            "locale": signup.locale or site.default_locale,
            "status": Status.PENDING.value,
            "code_hash": self._hasher.code(vid, code),
            "link_hash": self._hasher.link(link),
            "attempts_left": str(policy.max_attempts),
            "sends": "1",
            "created_at": str(now),
            "expires_at": str(expires_at),
            "metadata": json.dumps(signup.metadata) if signup.metadata is not None else "",
            "subscribe": "1" if signup.subscribe else "",
            "remind_after": str(signup.remind_after or ""),
        }
        # Empty optional fields are left out of Redis: readers take a missing one as empty.
        stored = {
            field: value
            for field, value in verification.items()
            if (value or field not in _OPTIONAL_FIELDS) and field != "id"
        }
        if stored.get("email") == destination and signup.channel in EMAIL_CHANNELS:
            del stored["email"]  # it is the destination (stored_verification)
        if delivery_id:
            # The first send's number and time are the verification's (folded_delivery).
            first = {k: v for k, v in delivery.items() if k not in {"send_no", "created_at"}}
            stored.update(delivery_fields(delivery_id, first))
            stored["deliveries"] = delivery_id[-8:]
        public = {"id": delivery_id, **delivery} if delivery_id else None
        resource = verification_resource(verification, [public] if public else [], now)
        if signup.channel == Channel.TELEGRAM:
            resource["telegram_link"] = self.telegram_link(verification)
        hour = now // HOUR_MS
        day = now // DAY_MS
        window = policy.destination_window_seconds * 1000
        requeue_at = now + int(self._settings.queue.requeue_after_seconds * 1000)
        prefix_key, prefix_limit, prefix_ttl = self._prefix_limit(
            keys, signup.channel, destination, hour
        )
        reply = as_text(
            await self._durable.run(
                self._scripts.create,
                [
                    keys.webhook_seen(site.id, webhook_id),
                    keys.verification(vid),
                    keys.destination_windows(window, now // window),
                    keys.site_hour(site.id, hour),
                    keys.user_signups(site.id, day),
                    keys.timer_bucket(REQUEUE.name, REQUEUE.bucket(requeue_at)),
                    keys.timer_bucket(EXPIRY.name, EXPIRY.bucket(expires_at)),
                    keys.stats,
                    keys.queue,
                    prefix_key,
                    keys.schedules,
                    keys.schedules_due,
                    keys.stats_day(day),
                    keys.destination_windows(window, now // window - 1),
                ],
                [
                    now,
                    vid,
                    # The hash is also the webhook-id's replay record: kept as long as both.
                    max(
                        expires_at - now + self._settings.retention_seconds * 1000,
                        self._settings.webhook_replay_seconds * 1000,
                    ),
                    window,
                    policy.sends_per_destination,
                    self._site_limit(policy),
                    (hour + 1) * HOUR_MS - now,
                    delivery_id,
                    message,
                    self._queue.maxlen,
                    prefix_limit,
                    prefix_ttl,
                    *self._signup_reminder(vid, signup, now),
                    signup.channel.value,
                    to_json(stored),
                    self._window_field(destination),
                    self._user_field(site, signup.user_id),
                    (day + USER_SIGNUP_DAYS) * DAY_MS,
                ],
                # The answer (new or replayed) is a 202; a refusal promises nothing.
                promised=lambda r: bool(r) and as_text(r)[0] in {"created", "replay"},
            )
        )
        if reply[0] == "replay":
            first = await self._replay(site, reply[1])
            return Created(first, replayed=True, body=to_json(first))
        _raise_for(reply)
        return Created(resource, replayed=False, body=to_json(resource))

    async def _replay(self, site: SiteConfig, seen: str) -> dict[str, Any]:
        """The answer to a repeated webhook-id: the verification it created, as it is now.

        Only the verification's id is kept for the replay (the whole first answer was
        seven times the size); records of earlier releases keep the whole answer.
        """
        if seen.startswith("{"):
            first: dict[str, Any] = json.loads(seen)
            if first.get("channel") == Channel.TELEGRAM:
                first["telegram_link"] = self.telegram_link(first)
            return first
        try:
            return await self.get(site, seen)
        except NotFound:
            # Outlived by its webhook-id record: what the site was told is all there is.
            return {"id": seen, "object": "verification", "site": site.id, "status": "expired"}

    async def replayed_answer(self, site: SiteConfig, webhook_id: str) -> dict[str, Any] | None:
        """The answer first given to this ``webhook-id``, if any."""
        stored = cast(
            str | None, await self._redis.get(self._layout.home.webhook_seen(site.id, webhook_id))
        )
        if stored:
            # An earlier release's signup record (its verification's id) or a cancel's.
            return await self._replay(site, stored)
        # A signup's verification is named by its webhook-id, in whichever shard it is.
        digest = self._hasher.signup(site.id, webhook_id)
        candidates = [
            self._layout.new_verification_id(shard, digest) for shard in range(self._layout.count)
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for vid in candidates:
                pipe.hget(self._layout.of(vid).verification(vid), "site")
            sites = await pipe.execute()
        for vid, owner in zip(candidates, sites, strict=True):
            if owner is not None and as_text([owner])[0] == site.id:
                return await self._replay(site, vid)
        return None

    async def remember_answer(
        self, site: SiteConfig, webhook_id: str, answer: dict[str, Any]
    ) -> None:
        """Keep the answer to a ``webhook-id`` so a redelivery gets it again.

        For events that create nothing (cancellations): kept in the home shard. A
        ``signup.created`` keeps its answer in its verification's shard, in its script.
        """
        key = self._layout.home.webhook_seen(site.id, webhook_id)
        ttl = self._settings.webhook_replay_seconds
        await self._redis.set(key, json.dumps(answer), ex=ttl, nx=True)

    async def _load(self, site: SiteConfig, vid: str) -> dict[str, str]:
        raw = cast(
            dict[str, str], await self._redis.hgetall(self._layout.of(vid).verification(vid))
        )
        if not raw or raw.get("site") != site.id:
            raise NotFound("no such verification")
        return stored_verification(vid, raw)

    async def get(self, site: SiteConfig, vid: str) -> dict[str, Any]:
        """The verification resource with its deliveries."""
        v = await self._load(site, vid)
        keys = self._layout.of(vid)
        ids = delivery_ids(vid, v.get("deliveries"))
        if ids is None:  # a verification of an earlier release: its own list
            ids = cast(
                list[str], await self._redis.lrange(keys.verification_deliveries(vid), 0, -1)
            )
        deliveries = await read_deliveries(self._redis, keys, v, ids)
        return verification_resource(v, deliveries, now_ms(), self.telegram_link(v))

    def unsubscribed_address(self, token: str) -> str | None:
        """The email address an unsubscribe link was made for (None if forged)."""
        return self._hasher.unsubscribed_address(token)

    def telegram_link(self, v: dict[str, str]) -> str | None:
        """``https://t.me/<bot>?start=<payload>`` for a Telegram verification."""
        username = self.bot_username
        if v.get("channel") != Channel.TELEGRAM or not username:
            return None
        return f"https://t.me/{username}?start={self._hasher.start_payload(v['id'])}"

    async def telegram(
        self,
        payload_or_id: str,
        action: str,
        user_id: int,
        chat_id: int,
        how: str = "",
        phone: str = "",
    ) -> TelegramAnswer:
        """Act for a person in the bot: ``link`` the chat, ``approve`` or ``decline``.

        ``payload_or_id`` is the deep-link payload for ``link`` (checked against its MAC)
        and the verification id afterwards. Approving ``how="contact"`` needs ``phone``
        (a shared contact's number, E.164) to equal the signup's phone.
        """
        if action == "link":
            vid = self._hasher.start_verification(payload_or_id)
            if vid is None:
                return TelegramAnswer("not_found", "", "", "", "")
        else:
            vid = payload_or_id
        reply = as_text(
            await self._durable.run(
                self._scripts.telegram,
                self._layout.of(vid).status(vid, now := now_ms()),
                [now, vid, action, user_id, chat_id, how, phone],
                promised=lambda r: bool(r) and as_text(r)[0] in {"approved", "linked"},
            )
        )
        return TelegramAnswer(reply[0], vid, reply[1], reply[2], reply[3])

    async def check(self, site: SiteConfig, vid: str, code: str) -> CheckResult:
        """Compare ``code``; a match approves and consumes it, a miss spends an attempt."""
        now = now_ms()
        reply = as_text(
            await self._durable.run(
                self._scripts.check,
                self._layout.of(vid).status(vid, now),
                [now, site.id, self._hasher.code(vid, code), vid],
                promised=lambda r: bool(r) and as_text(r)[0] == "valid",
            )
        )
        if reply[0] == "not_found":
            raise NotFound("no such verification")
        return CheckResult(valid=reply[0] == "valid", status=reply[1], attempts_left=int(reply[2]))

    async def link(self, token: str, *, use: bool) -> LinkState:
        """Look at a magic link (``use=False``) or use it to approve its verification.

        Looking never changes anything but a due expiry, so mail scanners that fetch
        links cannot approve anybody.
        """
        parsed = LinkToken.parse(token)
        if parsed is None:
            return LinkState("invalid", "", "")
        vid = parsed.verification_id
        now = now_ms()
        reply = as_text(
            await self._durable.run(
                self._scripts.link,
                self._layout.of(vid).status(vid, now),
                [now, self._hasher.link(parsed), vid, "use" if use else "peek"],
                promised=lambda r: bool(r) and as_text(r)[0] == "approved",
            )
        )
        return LinkState(reply[0], reply[1], reply[2])

    async def resend(
        self,
        site: SiteConfig,
        vid: str,
        channel: Channel | None = None,
        *,
        purpose: str = "code",
    ) -> dict[str, Any]:
        """Send a new code (the previous one stops working), optionally by another channel."""
        v = await self._load(site, vid)
        chosen = channel or Channel(v["channel"])
        self.ensure_channel(site, chosen)
        if chosen == Channel.TELEGRAM:
            raise ChannelUnavailable(
                "a Telegram verification is confirmed in the chat: share its telegram_link"
            )
        destination = self._destination(chosen, v.get("email"), v.get("phone"))
        policy = self._policy(site)
        now = now_ms()
        code = generate_code(policy.digits)
        expires_at = now + policy.ttl_seconds * 1000
        delivery_id, delivery, link = self._new_delivery(vid, chosen, 0, code, now, purpose)
        hour = now // HOUR_MS
        # Everything in the verification's shard. A resend by another channel counts the
        # new destination's sends there too, not in that destination's own shard: the
        # limits stay one atomic step, at the price of a per-shard count for such resends.
        keys = self._layout.of(vid)
        window = policy.destination_window_seconds * 1000
        requeue_at = now + int(self._settings.queue.requeue_after_seconds * 1000)
        prefix_key, prefix_limit, prefix_ttl = self._prefix_limit(keys, chosen, destination, hour)
        reply = as_text(
            await self._scripts.resend(
                keys=[
                    *keys.status(vid, now),
                    keys.destination_windows(window, now // window),
                    keys.site_hour(site.id, hour),
                    keys.timer_bucket(REQUEUE.name, REQUEUE.bucket(requeue_at)),
                    keys.verification_deliveries(vid),
                    keys.queue,
                    prefix_key,
                    keys.destination_windows(window, now // window - 1),
                    keys.timer_bucket(EXPIRY.name, EXPIRY.bucket(expires_at)),
                ],
                args=[
                    now,
                    site.id,
                    self._hasher.code(vid, code),
                    expires_at,
                    # The cooldown stops people hammering resend; a reminder is ours.
                    0 if purpose == "reminder" else policy.resend_cooldown_seconds * 1000,
                    window,
                    policy.sends_per_destination,
                    self._site_limit(policy),
                    (hour + 1) * HOUR_MS - now,
                    delivery_id,
                    json.dumps(delivery),
                    expires_at - now + self._settings.retention_seconds * 1000,
                    chosen.value,
                    vid,
                    self._queue.message(delivery_id),
                    self._queue.maxlen,
                    self._hasher.link(link),
                    destination,
                    prefix_limit,
                    prefix_ttl,
                    self._window_field(destination),
                    # Kept explicitly: it may have been implied by the old destination.
                    v.get("email", ""),
                ],
            )
        )
        _raise_for(reply)
        return await self.get(site, vid)

    async def _cancel(self, site_id: str, vid: str) -> list[str]:
        """``['canceled']``, ``['not_found']`` or ``['inactive', <status>]``."""
        now = now_ms()
        return as_text(
            await self._scripts.cancel(
                keys=self._layout.of(vid).status(vid, now), args=[now, site_id, vid]
            )
        )

    async def cancel(self, site: SiteConfig, vid: str) -> dict[str, Any]:
        """Cancel a pending verification; its queued sends are dropped."""
        # Also refused when it was canceled before: only the call that cancels succeeds.
        _raise_for(await self._cancel(site.id, vid))
        return await self.get(site, vid)

    async def cancel_user(self, site: SiteConfig, user_id: str) -> list[str]:
        """Cancel every pending verification of one of the site's users (in any shard)."""
        digest = self._hasher.index(f"{site.id}:{user_id}")
        field = self._user_field(site, user_id)
        today = now_ms() // DAY_MS
        days = range(today - USER_SIGNUP_DAYS + 1, today + 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys in self._layout.shards:
                for day in days:
                    pipe.hget(keys.user_signups(site.id, day), field)
                pipe.hkeys(keys.user_index(site.id, digest))  # earlier releases'
                pipe.smembers(keys.user(site.id, digest))  # and the ones before
            found = await pipe.execute()
        ids: set[str] = set()
        for entry in found:
            if isinstance(entry, str | bytes):
                ids.update(f"ver_{head}" for head in as_text(entry.split()))
            elif entry:
                ids.update(cast(Iterable[str], entry))
        canceled = [
            vid for vid in sorted(ids) if (await self._cancel(site.id, vid))[0] == "canceled"
        ]
        return canceled

    async def failed_deliveries(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest failed deliveries (of every shard) with their reason and status."""
        rows: list[tuple[int, dict[str, Any]]] = []
        for keys in self._layout.shards:
            ids = cast(list[str], await self._redis.lrange(keys.dead_letters, 0, limit - 1))
            for did in ids:
                d = await read_delivery(self._redis, self._layout, did)
                if not d:
                    continue
                vid = d.get("verification_id", "")
                status = cast(str | None, await self._redis.hget(keys.verification(vid), "status"))
                rows.append(
                    (
                        int(d.get("finished_at") or 0),
                        {
                            "id": did,
                            "verification_id": vid,
                            "verification_status": status or "gone",
                            "channel": d.get("channel"),
                            "attempts": int(d.get("attempts", "0")),
                            "error": d.get("error"),
                            "failed_at": iso(d.get("finished_at")),
                        },
                    )
                )
        rows.sort(key=lambda row: -row[0])
        return [row for _, row in rows[:limit]]

    async def replay_delivery(self, delivery_id: str) -> str:
        """Send a failed delivery again with a fresh code; returns the new delivery id.

        Raises :class:`NotFound`, or :class:`Refused` with the reason when it cannot be.
        """
        keys = self._layout.of(delivery_id)
        d = await read_delivery(self._redis, self._layout, delivery_id)
        if not d:
            raise NotFound("no such delivery")
        vid = d["verification_id"]
        site_id = cast(str | None, await self._redis.hget(keys.verification(vid), "site"))
        site = next((s for s in self._settings.sites if s.id == site_id), None)
        if site is None:
            raise Refused("the verification's site is no longer configured")
        code = generate_code(self._policy(site).digits)
        now = now_ms()
        new_id, new, link = self._new_delivery(vid, Channel(d["channel"]), 0, code, now)
        reply = as_text(
            await self._scripts.replay(
                keys=[
                    *keys.status(vid, now),
                    keys.delivery(delivery_id),
                    keys.due,
                    keys.verification_deliveries(vid),
                    keys.queue,
                    keys.dead_letters,
                ],
                args=[
                    now,
                    delivery_id,
                    new_id,
                    json.dumps(new),
                    self._hasher.code(vid, code),
                    self._queue.message(new_id),
                    self._queue.maxlen,
                    self._hasher.link(link),
                    vid,
                ],
            )
        )
        _raise_for(reply, missing="no such delivery")
        return reply[1]
