"""Where a running ``tidings dev`` says where it is, and the lock that makes it the only one.

The state file (``dev.json`` in the data folder) holds addresses and file paths, never a
secret's value. It is trusted only while ``dev.lock`` is held: a dev that was killed leaves
the file behind but not the lock (the kernel drops ``flock`` locks with the process).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STATE_FILE = "dev.json"
LOCK_FILE = "dev.lock"


@dataclass(frozen=True, kw_only=True)
class DevState:
    """What operator commands need to reach a running ``tidings dev``.

    ``web_url`` is empty while the dev is still starting. ``redis_url`` is None when the
    dev's Redis URL carries a password (it stays in the dev's environment only).
    """

    pid: int
    data_dir: str
    web_url: str = ""
    redis_url: str | None = None
    redis_prefix: str | None = None
    sites_file: str | None = None
    secret_key_file: str | None = None

    @property
    def ready(self) -> bool:
        """Whether the dev is serving (its web app is up)."""
        return bool(self.web_url)


class AlreadyRunning(Exception):
    """Another ``tidings dev`` holds the lock of this data folder."""

    def __init__(self, data_dir: Path, state: DevState | None) -> None:
        where = f"pid {state.pid}, {state.web_url or 'starting'}" if state else "starting"
        super().__init__(
            f"tidings dev is already running in {data_dir} ({where}); "
            "stop it first, or use another --data-dir"
        )


def _read(data_dir: Path) -> DevState | None:
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        fields = {f.name for f in dataclasses.fields(DevState)}
        return DevState(**{k: v for k, v in raw.items() if k in fields})
    except (OSError, ValueError, TypeError):
        return None  # absent, half written or from another release: not usable


def _try_lock(handle: IO[str], kind: int) -> bool:
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def running_dev(data_dir: Path) -> DevState | None:
    """The state of the dev running in ``data_dir``, or None if none is."""
    lock_path = data_dir / LOCK_FILE
    if not lock_path.exists():
        return None
    with lock_path.open("a", encoding="utf-8") as handle:
        # A shared lock is granted unless a dev holds the exclusive one; released on close.
        if _try_lock(handle, fcntl.LOCK_SH):
            return None
    return _read(data_dir) or DevState(pid=0, data_dir=str(data_dir))


class DevLock:
    """The exclusive lock of a data folder, held for the lifetime of one ``tidings dev``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning`; clears a stale state file."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.data_dir / LOCK_FILE).open("a", encoding="utf-8")
        try:
            while not _try_lock(handle, fcntl.LOCK_EX):
                # Readers hold the shared lock for an instant; only a dev holds it exclusively.
                if not _try_lock(handle, fcntl.LOCK_SH):
                    raise AlreadyRunning(self.data_dir, _read(self.data_dir))
                # Let go before trying again, so two devs starting together cannot livelock.
                fcntl.flock(handle, fcntl.LOCK_UN)
                time.sleep(random.uniform(0.001, 0.01))
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        self.publish(DevState(pid=os.getpid(), data_dir=str(self.data_dir.resolve())))

    def publish(self, state: DevState) -> None:
        """Replace the state file atomically (readers never see half of it)."""
        path = self.data_dir / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(dataclasses.asdict(state), indent=2), encoding="utf-8")
        temporary.chmod(0o600)
        temporary.replace(path)

    def release(self) -> None:
        """Remove the state file and let the lock go."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        handle.close()  # closing drops the flock

    def __enter__(self) -> DevLock:
        """Acquire."""
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        """Release."""
        self.release()
