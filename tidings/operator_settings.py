"""Settings for operator commands: the environment, else the ``tidings dev`` running here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tidings.devstate import running_dev
from tidings.errors import CliError

if TYPE_CHECKING:  # pydantic is heavy; `tidings --help` must not import it
    from config.settings import Settings

DEFAULT_DATA_DIR = Path(".tidings")
F = TypeVar("F", bound=Callable[..., Any])


def nothing_found(data_dir: Path | None) -> str:
    """What to do when no Tidings can be reached."""
    if data_dir is None:
        return "no Tidings found: start `tidings dev` here, or set TIDINGS_REDIS_URL"
    return (
        f"no Tidings found in {data_dir}: start `tidings dev --data-dir {data_dir}`, "
        "or set TIDINGS_REDIS_URL"
    )


def data_dir_option(function: F) -> F:
    """``--data-dir``: the folder of the ``tidings dev`` to reach (default ``.tidings``)."""
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Data folder of the tidings dev to reach [default: .tidings].",
    )(function)


def operator_settings(data_dir: Path | None = None, *, need_redis: bool = True) -> Settings:
    """The environment's settings, completed from the ``tidings dev`` running in ``data_dir``.

    Explicit ``TIDINGS_*`` variables (and ``.env``) win key by key; the dev fills in its
    Redis URL and prefix, its server key (read from its file), its sites file and its URL.
    Raises :class:`CliError` when ``need_redis`` and no Redis is known.
    """
    from config.settings import load_settings

    explicit = load_settings()
    folder = data_dir or DEFAULT_DATA_DIR
    state = running_dev(folder)
    if state is None:
        if need_redis and not explicit.redis_url:
            raise CliError(nothing_found(data_dir))
        return explicit
    if not state.ready:
        raise CliError(f"tidings dev (pid {state.pid}) in {folder} is still starting; try again")
    chosen = explicit.model_fields_set
    overrides: dict[str, Any] = {"dev": True}
    if not explicit.redis_url:
        if state.redis_url is None and need_redis:
            raise CliError(
                f"the tidings dev in {folder} uses a Redis URL with a password: "
                "set TIDINGS_REDIS_URL to it"
            )
        overrides["redis_url"] = state.redis_url
    if "redis_prefix" not in chosen and state.redis_prefix:
        overrides["redis_prefix"] = state.redis_prefix
    if explicit.secret_key is None and state.secret_key_file:
        overrides["secret_key"] = _read_key(Path(state.secret_key_file))
    # Sites come from the environment if it declares any, else from the dev's file.
    if explicit.sites_file is None and not explicit.sites and state.sites_file:
        overrides["sites_file"] = Path(state.sites_file)
    if "public_url" not in chosen:
        overrides["public_url"] = state.web_url
    return load_settings(**overrides)


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read the server key {path} ({exc.strerror})") from None
