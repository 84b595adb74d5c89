"""Every failure of the ``tidings`` command as one line on stderr, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

# Set to 1 to see the traceback of an unexpected error (it may show settings' values).
TRACEBACK_ENV = "TIDINGS_TRACEBACK"


class CliError(Exception):
    """A failure whose message is one line, safe to print (no secret, no code)."""


def _is(exc: BaseException, module: str, *names: str) -> bool:
    """Whether ``exc`` is one of ``module``'s ``names``, without importing ``module``.

    An exception of a module that was never imported cannot have been raised, so the
    wrapper stays as cheap as ``tidings --help`` must be.
    """
    loaded = sys.modules.get(module)
    types = tuple(getattr(loaded, name) for name in names) if loaded else ()
    return bool(types) and isinstance(exc, types)


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, without echoing anything that may be a secret."""
    if isinstance(exc, CliError) or _is(exc, "config.settings", "ConfigError"):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _is(exc, "redis.exceptions", "ConnectionError", "TimeoutError"):
        # redis-py names host and port (never the password): "Error 111 connecting to …".
        return (
            f"Redis is unreachable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
    if _is(exc, "redis.exceptions", "RedisError"):
        return f"Redis refused the command ({type(exc).__name__})"
    if _is(exc, "aiohttp", "ClientConnectorError"):
        return f"cannot connect: {exc}"  # host and port only, never a URL's path or query
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"unexpected {type(exc).__name__} (set {TRACEBACK_ENV}=1 to see where)"


def run_cli(command: click.Command) -> None:
    """Run ``command`` as the console script: every failure is one ``Error: …`` line.

    Usage errors exit 2, all others 1; ``--help`` and ``--version`` exit 0.
    """
    try:
        code = command.main(standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("aborted", 1)  # Ctrl-C or end of input at a prompt
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        _fail(describe(exc), 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    # One line even when a message has several (the first says what went wrong).
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"Error: {first}", file=sys.stderr, flush=True)
    sys.exit(code)
