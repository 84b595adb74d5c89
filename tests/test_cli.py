"""The ``tidings`` command as an operator meets it: help, version, errors and empty lists.

Commands run as real processes from the venv in an empty folder with no ``TIDINGS_*``
variable unless a test sets one; what is checked is what they print and their exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

from tests.conftest import API_KEY, SECRET
from tidings.cli import cli
from tidings.devstate import LOCK_FILE, STATE_FILE
from tidings.embedded_redis import free_port
from tidings.errors import run_cli

TIDINGS = Path(sys.executable).parent / "tidings"
SITES = json.dumps(
    [{"id": "shop", "name": "Shop", "webhook_secrets": [SECRET], "api_keys": [API_KEY]}]
)
HEAVY = ("aiohttp", "aiogram", "redis", "pydantic", "pydantic_settings", "taskiq", "jinja2")


def run(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return subprocess.run(
        [str(TIDINGS), *argv],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single ``Error: …`` line of a failed command (asserting there is nothing else)."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0].removeprefix("Error: ")


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_help_of_every_command_is_plain_text() -> None:
    seen = 0
    for path in [(), *_commands(cli)]:
        command: click.Command = cli
        ctx = click.Context(cli, info_name="tidings")
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
            ctx = click.Context(command, info_name=name, parent=ctx)
        text = command.get_help(ctx)
        for markup in ("``", "**", ":func:", ":class:", "\\b"):
            assert markup not in text, f"tidings {' '.join(path)} --help shows {markup!r}:\n{text}"
        seen += 1
    assert seen > 15  # every subcommand, nested groups included


def test_help_imports_none_of_the_service_stack(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['tidings', '--help']\n"
        "from tidings.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "Usage: tidings" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tidings, version {version('tidings')}"


def test_nothing_running_and_nothing_configured_says_what_to_do(tmp_path: Path) -> None:
    found = "no Tidings found: start `tidings dev` here, or set TIDINGS_REDIS_URL"
    elsewhere = (
        "no Tidings found in elsewhere: start `tidings dev --data-dir elsewhere`, "
        "or set TIDINGS_REDIS_URL"
    )
    cases = {
        ("stats",): found,
        ("deliveries", "failed"): found,
        ("broadcast", "list"): found,
        ("signup", "--email", "a@example.com"): found,
        ("stats", "--data-dir", "elsewhere"): elsewhere,
        ("sites", "list"): "no sites configured: set TIDINGS_SITES_FILE, "
        "or run this where `tidings dev` runs",
    }
    with ThreadPoolExecutor(4) as pool:  # independent processes: run them side by side
        results = dict(zip(cases, pool.map(lambda argv: run(tmp_path, *argv), cases), strict=True))
    for argv, expected in cases.items():
        assert one_error_line(results[argv]) == expected, argv


def test_a_killed_devs_state_file_is_not_trusted(tmp_path: Path, redis_url: str) -> None:
    """A dev killed with SIGKILL leaves dev.json behind, but not its lock."""
    folder = tmp_path / ".tidings"
    folder.mkdir()
    (folder / LOCK_FILE).touch()
    state = {"pid": 2**22 + 7, "data_dir": str(folder), "web_url": "http://127.0.0.1:1",
             "redis_url": redis_url, "redis_prefix": "tidings", "sites_file": None,
             "secret_key_file": None}  # fmt: skip
    (folder / STATE_FILE).write_text(json.dumps(state))
    assert one_error_line(run(tmp_path, "stats")).startswith("no Tidings found: ")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["stats"], {"TIDINGS_REDIS_URL": "redis://127.0.0.1:{port}/0"}, "Redis is unreachable: "),
        (["broadcast", "list"], {"TIDINGS_CODES__DIGITS": "3"}, "TIDINGS_CODES__DIGITS: "),
        (["deliveries", "failed"], {"TIDINGS_REDIS_URL": "http://nope"}, "TIDINGS_REDIS_URL: "),
        (
            ["signup", "--site", "nope", "--email", "a@example.com"],
            {"TIDINGS_SITES": SITES},
            "no site 'nope' is configured (sites: shop)",
        ),
        (
            [
                "signup",
                "--site",
                "shop",
                "--email",
                "a@example.com",
                "--url",
                "http://127.0.0.1:{port}",
            ],
            {"TIDINGS_SITES": SITES},
            "cannot reach Tidings at http://127.0.0.1:{port} (",
        ),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, argv: list[str], env: dict[str, str], expected: str
) -> None:
    port = str(free_port())  # nothing listens there
    argv = [a.replace("{port}", port) for a in argv]
    env = {k: v.replace("{port}", port) for k, v in env.items()}
    line = one_error_line(run(tmp_path, *argv, **env))
    assert line.startswith(expected.replace("{port}", port)), line
    assert SECRET not in line and API_KEY not in line


def test_usage_errors_are_one_line_too(tmp_path: Path) -> None:
    assert one_error_line(run(tmp_path, "signup"), code=2) == (
        "give --email, --phone or both (or --channel telegram) (see 'tidings signup --help')"
    )
    assert one_error_line(run(tmp_path, "stats", "--nope"), code=2) == (
        "No such option '--nope'. (see 'tidings stats --help')"
    )


def test_an_unexpected_error_is_one_line_without_its_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wrapper around the entry point: a bug's message may hold anything, so it is not shown."""
    monkeypatch.delenv("TIDINGS_TRACEBACK", raising=False)

    @click.command()
    def broken() -> None:
        raise RuntimeError(f"failed with {SECRET}")

    monkeypatch.setattr(sys, "argv", ["tidings"])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(broken)
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == "Error: unexpected RuntimeError (set TIDINGS_TRACEBACK=1 to see where)\n"
    assert captured.out == ""


def test_empty_lists_say_so(tmp_path: Path, redis_url: str) -> None:
    env = {
        "TIDINGS_REDIS_URL": redis_url,
        "TIDINGS_REDIS_PREFIX": f"t{uuid.uuid4().hex[:12]}",
        "TIDINGS_SECRET_KEY": "k" * 40,
    }
    failed = run(tmp_path, "deliveries", "failed", **env)
    assert (failed.returncode, failed.stdout) == (0, "no failed deliveries\n"), failed
    broadcasts = run(tmp_path, "broadcast", "list", **env)
    assert (broadcasts.returncode, broadcasts.stdout) == (0, "no broadcasts yet\n"), broadcasts
    # Scripts reading JSON lines get no lines at all.
    as_json = run(tmp_path, "broadcast", "list", "--json", **env)
    assert (as_json.returncode, as_json.stdout) == (0, ""), as_json
