"""``tidings dev`` on a fresh folder, driven like a person would from two terminals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from markupsafe import escape

from config.settings import Settings
from tasks.email.rendering import EmailRenderer, RenderedEmail
from tasks.outbox import DevOutbox
from tests.conftest import SmtpSink, signup_event, wait_for
from tidings.dev import banner
from tidings.embedded_redis import free_port
from tidings.signup_client import signed_headers
from verification.keys import Layout
from webhooks import keys as app_keys
from webhooks.app import create_app

TIDINGS = Path(sys.executable).parent / "tidings"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class DevProcess:
    """A running ``tidings dev`` and everything it printed so far (stdout and stderr)."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> str:
        match = re.search(pattern, self.text, re.MULTILINE)
        assert match, f"{pattern!r} not in the output of tidings dev:\n{self.text}"
        return match.group(1)


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode(errors="replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def _tidings_dev(folder: Path) -> AsyncIterator[tuple[DevProcess, int]]:
    """``tidings dev --port <free>`` in ``folder`` with no TIDINGS_* settings, banner printed."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(TIDINGS), "dev", "--port", str(port),
        cwd=folder,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )  # fmt: skip
    assert process.stdout is not None
    running = DevProcess(process)
    reader = asyncio.create_task(_collect(process.stdout, running.lines))
    try:
        await wait_for(
            lambda: "Press Ctrl-C to stop." in running.text or process.returncode is not None,
            timeout=60,
            what="the tidings dev banner",
        )
        assert process.returncode is None, running.text
        yield running, port
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
        # Whatever is left of this test's own process group (its redis-server, if stranded).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5)


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[tuple[DevProcess, int]]:
    """A running ``tidings dev`` in a fresh folder."""
    async with _tidings_dev(tmp_path) as running:
        yield running


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_runs_the_whole_flow_and_stops_cleanly(
    dev: tuple[DevProcess, int], tmp_path: Path
) -> None:
    running, port = dev
    webhook_secret = running.find(r"webhook secret\s+(whsec_\S+)")
    api_key = running.find(r"API key\s+(\S+)")
    redis_port = int(running.find(r"redis\s+embedded, redis://127\.0\.0\.1:(\d+)/"))
    command = running.find(r"^\s+(tidings signup .*)$")
    server_key = (tmp_path / ".tidings" / "secret_key").read_text().strip()
    assert _listening(redis_port)

    # The second terminal: the printed command, with a real address.
    argv = shlex.split(command)
    assert argv[0] == "tidings"
    argv[0] = str(TIDINGS)
    argv[argv.index("--email") + 1] = "dev@example.com"
    signup = await asyncio.create_subprocess_exec(
        *argv,
        cwd=tmp_path,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(signup.communicate(), 30)
    printed = out.decode()
    assert signup.returncode == 0, printed
    assert "HTTP 202" in printed
    check_url = re.search(r"curl -s -X POST (\S+/v1/verifications/ver_\w+/check)", printed)
    assert check_url, printed
    assert f"Authorization: Bearer {api_key}" in printed

    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            async with http.get(f"{base}/readyz") as response:
                return response.status == 200

        await wait_for(ready, timeout=30, what="/readyz to answer 200")

        async def outbox_email() -> dict[str, Any] | None:
            async with http.get(f"{base}/dev/outbox", params={"format": "json"}) as response:
                assert response.status == 200
                entries: list[dict[str, Any]] = await response.json()
            return next((e for e in entries if e["to"] == "dev@example.com"), None)

        email = await wait_for(outbox_email, timeout=30, what="the email in the outbox")
        assert "Message-ID:" in email["raw"]  # the whole message, headers and all
        match = re.search(r"^\s+(\d{6})\s*$", email["text"], re.MULTILINE)
        assert match, email["text"]
        code = match.group(1)

        # The terminal of `tidings dev` shows the same email.
        await wait_for(
            lambda: "outbox: email to dev@example.com" in running.text,
            timeout=30,
            what="the email echoed in the terminal",
        )
        shown = running.text[running.text.index("outbox: email to dev@example.com") :]
        assert re.search(rf"^\s*{code}\s*$", shown, re.MULTILINE)

        # The curl line pasted as printed, placeholder and all, costs no attempt...
        assert """-d '{"code": "CODE"}'""" in printed
        async with http.post(
            check_url.group(1),
            json={"code": "CODE"},
            headers={"Authorization": f"Bearer {api_key}"},
        ) as response:
            assert response.status == 422
        async with http.get(
            check_url.group(1).removesuffix("/check"),
            headers={"Authorization": f"Bearer {api_key}"},
        ) as response:
            assert (await response.json())["attempts_left"] == 5

        # ...and with the code put in, it approves.
        async with http.post(
            check_url.group(1),
            json={"code": code},
            headers={"Authorization": f"Bearer {api_key}"},
        ) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "approved"

    # Ctrl-C: everything stops, Redis too, and its data stays on disk.
    running.process.send_signal(signal.SIGINT)
    returncode = await asyncio.wait_for(running.process.wait(), 15)
    assert returncode == 0, running.text
    assert not _listening(redis_port), "the embedded redis-server outlived tidings dev"
    redis_dir = tmp_path / ".tidings" / "redis"
    assert (redis_dir / "appendonly.aof").exists() or (redis_dir / "appendonlydir").is_dir()

    # Log lines never carry the secrets (or the code); the banner and outbox may.
    log_lines = [line for line in running.lines if LOG_LINE.match(line)]
    assert log_lines, running.text
    # Requests (readyz, the outbox, the check) are not logged at INFO: the email stays in view.
    assert not [line for line in log_lines if "tidings.access" in line], running.text
    for line in log_lines:
        for secret in (webhook_secret, api_key, server_key, code):
            assert secret not in line, f"a secret leaked into the log: {line}"


async def test_ctrl_c_to_the_process_group_then_restart_keeps_data(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches redis-server too; a restart finds site and data again."""
    async with _tidings_dev(tmp_path) as (first, port):
        secret = first.find(r"webhook secret\s+(whsec_\S+)")
        api_key = first.find(r"API key\s+(\S+)")
        redis_port = int(first.find(r"redis://127\.0\.0\.1:(\d+)/"))
        event = signup_event(email="keep@example.com")
        body = json.dumps(event)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/webhooks/demo",
                data=body,
                headers=signed_headers(secret, body),
            ) as response,
        ):
            assert response.status == 202
            vid = (await response.json())["id"]
        os.killpg(first.process.pid, signal.SIGINT)
        assert await asyncio.wait_for(first.process.wait(), 15) == 0, first.text
        assert not _listening(redis_port)

    async with _tidings_dev(tmp_path) as (second, port):
        assert second.find(r"webhook secret\s+(whsec_\S+)") == secret
        assert second.find(r"API key\s+(\S+)") == api_key
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/v1/verifications/{vid}",
                headers={"Authorization": f"Bearer {api_key}"},
            ) as response,
        ):
            assert response.status == 200
            assert (await response.json())["destination"] == "k***@example.com"


async def _tidings(cwd: Path, *argv: str) -> tuple[int, str, str]:
    """Run ``tidings ARGV`` in ``cwd`` with no TIDINGS_* settings, as a second terminal would."""
    process = await asyncio.create_subprocess_exec(
        str(TIDINGS), *argv,
        cwd=cwd,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _redis_starts(folder: Path) -> int:
    """How many times a redis-server started on this data folder (from its own log)."""
    log = folder / "redis" / "redis.log"
    return log.read_text().count("Ready to accept connections") if log.exists() else 0


async def test_one_dev_per_folder_and_operator_commands_find_it(tmp_path: Path) -> None:
    # What a dev killed with SIGKILL leaves: its state file, and a lock nobody holds.
    folder = tmp_path / ".tidings"
    folder.mkdir()
    (folder / "dev.lock").touch()
    stale = {"pid": 2**22 + 7, "data_dir": str(folder), "web_url": "http://127.0.0.1:1"}
    (folder / "dev.json").write_text(json.dumps(stale))

    async with _tidings_dev(tmp_path) as (running, port):
        # The stale state was taken over.
        state = json.loads((folder / "dev.json").read_text())
        assert state["pid"] == running.process.pid
        assert state["web_url"] == f"http://127.0.0.1:{port}"
        redis_port = running.find(r"redis://127\.0\.0\.1:(\d+)/")
        assert state["redis_url"] == f"redis://127.0.0.1:{redis_port}/0"
        assert state["secret_key_file"] == str((folder / "secret_key").resolve())
        server_key = (folder / "secret_key").read_text().strip()
        assert server_key not in json.dumps(state)  # paths, never values

        # A second dev in the same folder stops at once, before starting a redis-server.
        starts = _redis_starts(folder)
        code, _, err = await _tidings(tmp_path, "dev", "--port", str(free_port()))
        assert code == 1
        assert err.strip().splitlines() == [
            f"Error: tidings dev is already running in .tidings (pid {running.process.pid}, "
            f"http://127.0.0.1:{port}); stop it first, or use another --data-dir"
        ]
        assert _redis_starts(folder) == starts

        # Operator commands in the folder reach it without any TIDINGS_* variable...
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        commands: list[tuple[Path, tuple[str, ...]]] = [
            (tmp_path, ("stats",)),
            (tmp_path, ("deliveries", "failed")),
            (tmp_path, ("broadcast", "list")),
            (tmp_path, ("sites", "list")),
            # ...and from another folder with --data-dir.
            (elsewhere, ("stats", "--data-dir", str(folder))),
            (elsewhere, ("signup", "--channel", "telegram", "--data-dir", str(folder))),
        ]
        stats, failed, broadcasts, sites, stats_elsewhere, telegram = await asyncio.gather(
            *(_tidings(cwd, *argv) for cwd, argv in commands)
        )
        for result in (stats, failed, broadcasts, sites, stats_elsewhere):
            assert result[0] == 0, result
        assert "Queue: 0 waiting" in stats[1]
        assert stats_elsewhere[1] == stats[1]
        assert failed[1] == "no failed deliveries\n"
        assert broadcasts[1] == "no broadcasts yet\n"
        assert sites[1].startswith("demo\tDemo Shop\tchannels=email,sms,link,telegram\t")
        # The signup reached the dev: it answers that no bot is configured for Telegram.
        assert "channel 'telegram' is not available here" in telegram[1], telegram
        assert telegram[0] == 1

    # Once it has stopped, nothing is found there any more.
    assert not (folder / "dev.json").exists()
    code, _, err = await _tidings(tmp_path, "stats")
    assert code == 1
    assert err.startswith("Error: no Tidings found: ")


# -- the outbox page -------------------------------------------------------------------------

LONG_LINK = "https://shop.example/welcome/" + "a1b2c3d4" * 20 + "?campaign=autumn&step=2"


@pytest.fixture
async def outbox_app(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> tuple[TestClient, Settings]:
    """The real app in development mode with email and SMS captured in the outbox."""
    settings = make_settings(
        dev=True,
        email={"backend": "outbox"},
        sms={"provider": "console"},
    )
    return await aiohttp_client(create_app(settings)), settings


async def _capture(settings: Settings, client: TestClient) -> RenderedEmail:
    """A broadcast email with a long link, kept as the dev email provider keeps it."""
    message = EmailRenderer(settings.email).render(
        "broadcast",
        "en",
        "reader@example.com",
        {
            "subject": "Autumn news",
            "text": f"Read it here: {LONG_LINK}.",
            "unsubscribe_url": LONG_LINK,
        },
        headers={
            "List-Unsubscribe": f"<{LONG_LINK}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    outbox = DevOutbox(
        client.app[app_keys.REDIS], Layout.for_settings(settings).home.outbox, echo=False
    )
    entry = {
        "kind": "email",
        "id": message.message_id,
        "to": message.to,
        "from": message.envelope_from,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
    }
    await outbox.keep(entry, f"email to {message.to}", message.text, raw=message.raw)
    return message


async def test_outbox_shows_headers_links_and_offers_the_eml(
    outbox_app: tuple[TestClient, Settings],
) -> None:
    client, settings = outbox_app
    message = await _capture(settings, client)

    page = await (await client.get("/dev/outbox")).text()
    assert "Email: captured here, not sent." in page
    assert "SMS: captured here, not sent." in page
    # Every header of the wire form, decoded.
    assert f"<th>Message-ID</th><td>{escape(message.message_id)}</td>" in page
    assert "<th>List-Unsubscribe-Post</th><td>List-Unsubscribe=One-Click</td>" in page
    assert "<th>Subject</th><td>Autumn news</td>" in page
    # The link in the text view is clickable, without the sentence's full stop.
    href = LONG_LINK.replace("&", "&amp;")
    assert f'<a href="{href}">{href}</a>.' in page

    [entry] = await (await client.get("/dev/outbox", params={"format": "json"})).json()
    eml = await client.get(f"/dev/outbox/{entry['ref']}.eml")
    assert eml.status == 200
    assert eml.content_type == "message/rfc822"
    assert eml.headers["Content-Disposition"] == f'attachment; filename="{entry["ref"]}.eml"'
    body = await eml.read()
    assert body == message.raw
    parsed = message_from_bytes(body, policy=default_policy)
    assert parsed["Message-ID"] == message.message_id
    assert parsed["List-Unsubscribe"] == f"<{LONG_LINK}>"

    missing = await client.get("/dev/outbox/0123456789abcdef.eml")
    assert missing.status == 404


async def test_outbox_banner_says_where_messages_really_go(
    aiohttp_client: Any, make_settings: Callable[..., Settings], smtp: SmtpSink
) -> None:
    settings = make_settings(dev=True)  # email over SMTP (the test sink), no SMS provider
    client = await aiohttp_client(create_app(settings))
    page = await (await client.get("/dev/outbox")).text()
    assert f"Email: sent to the SMTP server 127.0.0.1:{smtp.port}, not kept here." in page
    assert "SMS: off (no SMS provider configured)." in page
    assert "captured here" not in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


PROBE = """<iframe id="f" src="/dev/outbox" style="width:390px;height:844px;border:0"></iframe>
<script>
document.getElementById("f").onload = () => {
  const d = document.getElementById("f").contentDocument;
  d.querySelectorAll("details").forEach((x) => { x.open = true; });
  setTimeout(() => {
    const links = d.querySelectorAll("pre.text a").length;
    document.title = `width=${d.documentElement.scrollWidth} links=${links}`;
  }, 100);
};
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium for a real layout")
async def test_outbox_fits_a_390px_phone(
    aiohttp_client: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Laid out by a real browser in a 390 px frame, nothing is wider than the frame."""
    settings = make_settings(dev=True, email={"backend": "outbox"})
    app = create_app(settings)

    # A page of the test's own beside the outbox: the same origin lets it measure the frame.
    async def probe(request: web.Request) -> web.Response:
        return web.Response(text=PROBE, content_type="text/html")

    app.router.add_get("/probe", probe)
    client = await aiohttp_client(app)
    await _capture(settings, client)
    process = await asyncio.create_subprocess_exec(
        _chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
        "--dump-dom", str(client.make_url("/probe")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    match = re.search(r"<title>width=(\d+) links=(\d+)</title>", out.decode())
    assert match, out.decode()[-2000:]
    assert int(match.group(2)) == 2  # both links of the text view were laid out
    assert int(match.group(1)) <= 390


async def test_a_busy_port_is_one_line_and_leaves_no_redis_behind(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await _tidings(tmp_path, "dev", "--port", str(port))
    assert code == 1
    errors = [line for line in err.splitlines() if not LOG_LINE.match(line) and line.strip()]
    assert errors == [f"Error: port {port} is in use; choose another with --port"], err
    assert "Traceback" not in out + err
    assert "Stopped; Redis data kept in" in out  # the embedded Redis was shut down
    assert not (tmp_path / ".tidings" / "dev.json").exists()


def test_the_dev_banner_says_where_email_really_goes(
    make_settings: Callable[..., Settings], smtp: SmtpSink
) -> None:
    captured = banner(make_settings(dev=True, email={"backend": "outbox"}), "embedded")
    assert "delivery  email → outbox, SMS → off" in captured
    assert "The message appears here and in the outbox;" in captured

    real = banner(make_settings(dev=True), "embedded")  # SMTP: the test's sink
    assert "delivery  email → SMTP 127.0.0.1, SMS → off" in real
    assert "Email goes to the SMTP server 127.0.0.1 (not the outbox);" in real
    assert "appears here" not in real
