"""Redis clients of every topology that survive a Redis restart or failover."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.redis import RedisTarget, Topology

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _TimelyWrites(Connection):
    """redis-py's connection, with socket writes bounded by ``asyncio.timeout``.

    redis-py bounds each write with ``asyncio.wait_for``, which on Python 3.11 runs the
    write in a new task: 7 % of a worker's CPU per email in the delivery benchmark. The
    bound (``socket_timeout``) and the error (``TimeoutError`` after a disconnect) stay
    the same; Python 3.12+ implements ``wait_for`` this way already.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Write ``command`` within ``socket_timeout``."""
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]  # PINGs in time
        # Without socket_timeout the base class writes inline; the bound is ours.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health=False)
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class TimelyConnection(_TimelyWrites):
    """A connection to one Redis server."""


class TimelySentinelConnection(_TimelyWrites, SentinelManagedConnection):
    """A connection to whichever server Sentinel says is the master now.

    redis-py turns a ``READONLY`` reply (the master was demoted) into a connection error
    and asks Sentinel again on reconnect, so the retry below follows a failover.
    """


class NotDurable(RedisError):
    """Fewer replicas than required acknowledged a write in time (it may still be lost)."""


#: Redis errors that say "not now", not "never": the server is away, failing over,
#: loading, read-only, without enough replicas, or a cluster is re-sharding. Callers
#: retry them inside a deadline; the web answers 503 + Retry-After, never 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    NotDurable,
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    AskError,  # and MovedError
    TryAgainError,
    ClusterDownError,
    ClusterError,
    SlotNotCoveredError,  # a cluster client between slot maps
    ConnectionResetError,
    ConnectionRefusedError,
)
# Error codes redis-py has no class for: min-replicas-to-write, a master's link lost, a
# blocked read ended because its master became a replica.
_UNAVAILABLE_CODES = (
    "NOREPLICAS",
    "MASTERDOWN",
    "LOADING",
    "READONLY",
    "CLUSTERDOWN",
    "UNBLOCKED",
)


def _broken_transport(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection that died under redis-py (a killed node).

    uvloop says RuntimeError ("unable to perform operation on <TCPTransport closed=True>"),
    redis-py itself an AttributeError on a writer it already dropped.
    """
    if not isinstance(exc, RuntimeError | AttributeError):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return "/redis/" in where or "uvloop" in where or "TCPTransport closed" in str(exc)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot take the command right now (retry later)."""
    if isinstance(exc, UNAVAILABLE_ERRORS) or _broken_transport(exc):
        return True
    if isinstance(exc, ResponseError):
        # Inside a script the code may follow "ERR Error running script ...: -".
        text = str(exc)
        return any(text.startswith(code) or f"-{code}" in text for code in _UNAVAILABLE_CODES)
    return False


def _retries(seconds: float) -> int:
    """Attempts of the exponential backoff below (0.05 s doubling, capped at 1 s) in ``seconds``."""
    return 5 + max(0, math.ceil(seconds - 1.55))


def retry_options(seconds: float = 1.55) -> dict[str, Any]:
    """Connection options that retry a command on a dead pooled connection.

    After Redis restarts, every pooled connection is dead but looks open; without a retry
    the first command on each one fails. Commands that reach this path are idempotent or
    guarded (scripts check state, webhook ids, leases), so a retry is safe.
    """
    return {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=_retries(seconds)),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        "health_check_interval": 30,
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
        "connection_class": TimelyConnection,
    }


async def follow_master(redis: Redis) -> None:
    """On Sentinel, ask again which server is the master, dropping idle connections to another.

    After a failover the old master keeps taking writes until Sentinel demotes it (about
    ten seconds); a client that still holds connections to it only notices when a WAIT finds
    no replica there. Elsewhere this does nothing.
    """
    pool = getattr(redis, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        await pool.get_master_address()  # type: ignore[no-untyped-call]


def _tls_options(settings: Settings) -> dict[str, Any]:
    options = settings.redis
    return {
        "ssl": True,
        "ssl_ca_certs": str(options.ca_file) if options.ca_file else None,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if options.validate_certs else ssl.CERT_NONE,
        "ssl_check_hostname": options.validate_certs,
    }


def open_redis(
    settings: Settings, *, decode: bool = True, max_connections: int | None = None
) -> Redis:
    """A client for the configured topology, with retries that ride out a failover.

    ``decode``: strings for data; the broker reads raw bytes. Sentinel clients find the
    master through the sentinels on every reconnect. Cluster clients follow ``MOVED`` and
    ``ASK`` and refresh their slot map; they serve the same command API as ``Redis``.
    """
    target: RedisTarget = settings.redis_target()
    seconds = settings.redis.retry_seconds
    common: dict[str, Any] = {"decode_responses": decode, "socket_timeout": 5}
    if target.topology == Topology.STANDALONE:
        kwargs = {**common, **retry_options(min(seconds, 1.55))}
        if max_connections is not None:
            kwargs["max_connections"] = max_connections
        return Redis.from_url(target.url, **kwargs)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    tls = _tls_options(settings) if target.tls else {}
    if target.topology == Topology.SENTINEL:
        sentinel_password = settings.redis.sentinel_password
        sentinel = Sentinel(
            list(target.nodes),
            sentinel_kwargs={
                "socket_timeout": 2,
                "socket_connect_timeout": 1,
                "password": sentinel_password.get_secret_value() if sentinel_password else None,
                **tls,
            },
        )
        options = {**common, **retry_options(seconds), **auth, "db": target.db}
        options["connection_class"] = TimelySentinelConnection
        if tls:
            # redis-py's TLS sentinel connection; our write bound is for plain TCP only.
            del options["connection_class"]
            options.update(tls)
        if max_connections is not None:
            options["max_connections"] = max_connections
        client: Redis = sentinel.master_for(target.master, redis_class=Redis, **options)
        return client
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        decode_responses=decode,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=_retries(seconds)),
        max_connections=max_connections or 2**31,
        **auth,
        **tls,
    )
    # RedisCluster is no Redis subclass but serves the same commands and scripts.
    return cast(Redis, cluster)


async def through_outage(
    op: Callable[[], Awaitable[T]], *, within: float, what: str, log: dict[str, object]
) -> T:
    """Run ``op`` until it gets through, waiting out a Redis outage of up to ``within`` s.

    For worker steps whose loss would cost a user a resend or a duplicate: a claim whose
    reply was lost is reissued (claims carry a lease token), and an outcome already sent
    out must not be forgotten.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.2
    while True:
        try:
            return await op()
        except (RedisError, OSError):
            if loop.time() + delay > deadline:
                raise
            logger.warning(
                "Redis unreachable; retrying", extra={**log, "step": what, "in_seconds": delay}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def until_available(
    op: Callable[[], Awaitable[T]], *, what: str, where: str, cap: float = 10.0
) -> T:
    """Run ``op`` until Redis takes it, however long that is, without crashing the role.

    For start-up steps of workers and schedulers: a role that cannot reach Redis (down,
    failing over, read-only, the wrong topology) stays up, not ready, and keeps trying
    with backoff. It logs one line when it starts waiting and one when it gets through,
    not one per attempt. Errors that are not about availability are raised.
    """
    delay = 0.2
    waiting = False
    while True:
        try:
            result = await op()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if not waiting:
                logger.warning(
                    "Redis is not available (%s: %s); %s waits and retries",
                    type(exc).__name__,
                    str(exc)[:200],
                    what,
                    extra={"redis": where},
                )
                waiting = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
            continue
        if waiting:
            logger.warning("Redis is available again; %s goes on", what, extra={"redis": where})
        return result


async def pipelined(redis: Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` on a pooled connection and return every reply, in order.

    What ``redis.pipeline(transaction=False)`` does, for the few commands of a request's
    hot path (a script, its ``WAIT``), at a third of the client's CPU: hiredis packs the
    arguments in C where redis-py encodes each one in Python (measured: 71 against 190 µs
    for the signup script's 37 arguments). Calls made in the same turn of the event loop
    (concurrent requests, a worker's concurrent tasks) share one write and one read
    (:class:`_Coalescer`): a round trip costs ~20 µs of client CPU, a command in a shared
    write ~5. The first error reply among ``commands`` is raised after every reply was read.
    """
    coalescer = _coalescers.get(redis)
    if coalescer is None:
        coalescer = _coalescers[redis] = _Coalescer(redis)
    replies = await coalescer.submit(
        b"".join(hiredis.pack_command(command) for command in commands), len(commands)
    )
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


class _Coalescer:
    """Gathers one client's :func:`pipelined` calls of one loop turn into one exchange.

    The first caller of a turn leads: it yields once so that the other callers of the
    turn can join, then runs the exchange; alone, it runs it itself as before. A shared
    exchange runs in a task of its own, so a caller cancelled while it waits leaves the
    connection in step (its replies are read and dropped). A dead pooled connection is
    retried with the connection's own ``Retry``, as redis-py does; if that fails, every
    caller of the batch gets the error.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._batch: list[_Item] | None = None
        self._running: set[asyncio.Task[list[list[Any]]]] = set()

    async def submit(self, packed: bytes, count: int) -> list[Any]:
        """Send ``count`` packed commands with this turn's others; their replies."""
        if self._batch is not None:  # a leader is gathering this turn's calls
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._batch.append((packed, count, future))
            return await future
        self._batch = [(packed, count, None)]
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            batch, self._batch = self._batch, None
            if len(batch) > 1:  # those who joined still go
                self._spawn(batch[1:])
            raise
        batch, self._batch = self._batch, None
        if len(batch) == 1:
            return (await self._exchange(batch))[0]
        return (await asyncio.shield(self._spawn(batch)))[0]

    def _spawn(self, batch: list[_Item]) -> asyncio.Task[list[list[Any]]]:
        task = asyncio.ensure_future(self._exchange(batch))
        self._running.add(task)
        task.add_done_callback(self._settle(batch))
        return task

    def _settle(self, batch: list[_Item]) -> Callable[[asyncio.Task[list[list[Any]]]], None]:
        def settle(task: asyncio.Task[list[list[Any]]]) -> None:
            self._running.discard(task)
            error = None if task.cancelled() else task.exception()
            for index, (_, _, future) in enumerate(batch):
                if future is None or future.done():
                    continue
                if task.cancelled():
                    future.set_exception(RedisConnectionError("exchange cut short"))
                elif error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(task.result()[index])

        return settle

    async def _exchange(self, batch: list[_Item]) -> list[list[Any]]:
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        packed = b"".join(item[0] for item in batch)

        async def exchange() -> list[list[Any]]:
            await connection.send_packed_command(packed)
            replies: list[list[Any]] = []
            for _, count, _ in batch:
                group: list[Any] = []
                for _ in range(count):
                    try:
                        group.append(await connection.read_response())
                    except ResponseError as exc:
                        group.append(exc)
                replies.append(group)
            return replies

        async def reconnect(error: Exception) -> None:
            await connection.disconnect()

        try:
            return cast(
                list[list[Any]], await connection.retry.call_with_retry(exchange, reconnect)
            )
        finally:
            await pool.release(connection)


#: Packed commands, how many, and the future of a caller that joined (None: the leader).
_Item = tuple[bytes, int, "asyncio.Future[list[Any]] | None"]


#: One coalescer per client (a client's pool is per process and event loop).
_coalescers: weakref.WeakKeyDictionary[Redis, _Coalescer] = weakref.WeakKeyDictionary()
