"""Branding: an override folder (global and per site) and per-site sender, footer, colour."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from config.settings import ConfigError, Settings
from config.templates import check_folder
from tests.conftest import (
    OTHER_SECRET,
    RecordingHandler,
    SmtpSink,
    code_from,
    html_of,
    post_event,
    signup,
    signup_event,
    site,
    wait_for,
)
from tests.processes import BIN, process_env
from webhooks.app import create_app

OpenApp = Callable[..., Awaitable[TestClient]]
REPO = Path(__file__).parent.parent
LINK = re.compile(r"https?://[^\s\"'<>]+/v/([0-9a-f]{32}\.[A-Za-z0-9_-]{32})")

BRANDED = {
    "from_name": "Acme Mail",
    "from_address": "hello@acme.example",
    "footer": "Acme Shop · 1 Main Street",
    "colour": "#0A7D4F",  # stored lower-case
    "sms_signature": "Acme",
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def open_app(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
) -> OpenApp:
    """The real app and a worker for settings built from ``overrides``."""

    async def open_(**overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        await start_worker(settings)
        client: TestClient = await aiohttp_client(create_app(settings))
        return client

    return open_


class EnvelopeHandler(RecordingHandler):
    """The conftest handler, also keeping each message's envelope sender (MAIL FROM)."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: list[str | None] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.senders.append(envelope.mail_from)
        return await super().handle_DATA(server, session, envelope)


def sender_of(message: EmailMessage) -> tuple[str, str]:
    address = message["From"].addresses[0]
    assert isinstance(address, Address)
    return address.display_name, address.addr_spec


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_a_signup_gets_the_site_folder_the_global_folder_and_the_sites_branding(
    open_app: OpenApp, smtp: SmtpSink, tmp_path: Path
) -> None:
    root = write(
        tmp_path,
        {
            "email/en/code.subject.j2": "{{ site_name }}: global subject",
            "email/_brand.html.j2": '<p class="brand" style="color: {{ colour }}">{{ site_name }}</p>',
            "email/en/code.html.j2": (
                '{% include "email/_brand.html.j2" %}<p>Code {{ code }}</p><p>{{ footer }}</p>'
            ),
            # Only for "shop": wins over the global subject; the HTML stays the global one.
            "sites/shop/email/en/code.subject.j2": "Your {{ site_name }} code, {{ minutes }} min",
            "README.md": "notes for the operator, not a template",
        },
    )
    smtp.handler = handler = EnvelopeHandler()  # before the first connection
    client = await open_app(
        templates_dir=str(root),
        branding={"footer": "{site} · via Tidings"},
        sites=[site(branding=BRANDED), site("other", OTHER_SECRET, "k" * 32, name="Other")],
    )
    await signup(client)
    [shop] = await smtp.wait_for_messages(1)
    response = await post_event(client, signup_event(), site_id="other", secret=OTHER_SECRET)
    assert response.status == 202, await response.text()
    [_, other] = await smtp.wait_for_messages(2)
    # Bounces go to the address the site sends from.
    assert handler.senders == ["hello@acme.example", "codes@tidings.test"]

    assert shop["Subject"] == "Your Acme Shop code, 10 min"
    assert sender_of(shop) == ("Acme Mail", "hello@acme.example")
    assert shop["Message-ID"].endswith("@acme.example>")
    html = html_of(shop)
    assert '<p class="brand" style="color: #0a7d4f">Acme Shop</p>' in html
    assert f"<p>Code {code_from(shop)}</p>" in html
    assert "<p>Acme Shop · 1 Main Street</p>" in html
    # The text part is still the package's, with the site's footer and not the global one.
    assert text_of(shop).rstrip().endswith("— Acme Shop · 1 Main Street")
    assert "Tidings" not in text_of(shop) + html

    assert other["Subject"] == "Other: global subject"
    # No per-site sender: the global address, and the site's name rather than "Tidings".
    assert sender_of(other) == ("Other", "codes@tidings.test")
    assert '<p class="brand" style="color: #1f6feb">Other</p>' in html_of(other)
    assert "<p>Other · via Tidings</p>" in html_of(other)
    assert text_of(other).rstrip().endswith("— Other · via Tidings")


async def test_by_default_messages_carry_the_sites_name_and_no_advert(
    open_app: OpenApp, smtp: SmtpSink
) -> None:
    client = await open_app()
    await signup(client)
    [message] = await smtp.wait_for_messages(1)
    assert sender_of(message) == ("Acme Shop", "codes@tidings.test")
    assert text_of(message).rstrip().endswith("— Acme Shop")
    assert "Tidings" not in text_of(message) + html_of(message)
    assert "background: #1f6feb;" in html_of(message)


async def test_the_link_page_shows_the_sites_name_colour_and_its_own_template(
    open_app: OpenApp, smtp: SmtpSink, tmp_path: Path
) -> None:
    root = write(
        tmp_path,
        {
            "sites/other/pages/link.html": (
                '<main data-site="{{ site_name }}" style="--c: {{ colour }}">'
                "<h1>{{ title }}</h1>{% if button %}<form method=post>"
                "<button>{{ button }}</button></form>{% endif %}</main>"
            )
        },
    )
    client = await open_app(
        templates_dir=str(root),
        sites=[
            site(channels=["email", "link"], branding=BRANDED),
            site("other", OTHER_SECRET, "k" * 32, name="Other <Co>", channels=["link"]),
        ],
    )
    await signup(client, channel="link")
    await post_event(client, signup_event(channel="link"), site_id="other", secret=OTHER_SECRET)
    pages = {}
    async with aiohttp.ClientSession() as http:
        for message in await smtp.wait_for_messages(2):
            [token] = LINK.findall(text_of(message))
            async with http.get(client.make_url(f"/v/{token}")) as response:
                assert response.status == 200
                pages[message["Subject"]] = await response.text()
    shop = pages["Confirm your Acme Shop email address"]
    other = pages["Confirm your Other <Co> email address"]
    assert '<p class="brand">Acme Shop</p>' in shop
    assert "border-top:4px solid #0a7d4f" in shop
    assert "background:#0a7d4f;" in shop
    assert "for Acme Shop." in shop
    # The site's own page, escaped like the package's.
    assert other.startswith('<main data-site="Other &lt;Co&gt;" style="--c: #1f6feb">')
    assert "<h1>Confirm your email address</h1>" in other
    assert "<button>Confirm</button>" in other


async def test_sms_text_signs_with_the_sites_signature_and_site_template(
    open_app: OpenApp, tmp_path: Path
) -> None:
    root = write(
        tmp_path,
        {
            "sites/shop/sms/zh/verification.txt.j2": "【{{ signature }}】验证码{{ code }}，{{ minutes }}分钟有效。"
        },
    )
    client = await open_app(
        dev=True,
        templates_dir=str(root),
        sms={"provider": "console", "allow_console_in_production": True},
        sites=[site(channels=["sms"], branding=BRANDED)],
    )
    for locale in ("en", "zh"):
        event = signup_event(channel="sms", phone=f"+86 138 0013 800{len(locale)}", email=None)
        event["data"]["locale"] = locale
        event["data"]["user_id"] = f"u-{locale}"
        response = await post_event(client, event)
        assert response.status == 202, await response.text()

    async def texts() -> list[str] | None:
        response = await client.get("/dev/outbox", params={"format": "json"})
        found = [e["text"] for e in await response.json() if e["kind"] == "sms"]
        return found if len(found) >= 2 else None

    found: list[str] = await wait_for(texts, what="two SMS in the outbox")
    assert any(re.fullmatch(r"【Acme】验证码\d{6}，10分钟有效。", text) for text in found), found
    # English from the package, signed with the site's signature instead of its name.
    assert any(text.startswith("Acme: your verification code is ") for text in found), found


@pytest.mark.parametrize(
    ("files", "site_ids", "message"),
    [
        (
            {"email/en/code.html.j2": "<p>{{ code }</p>"},
            ["shop"],
            "TIDINGS_TEMPLATES_DIR: email/en/code.html.j2 line 1: unexpected '}'",
        ),
        (
            {"sites/shop/email/zh/code.txt.j2": "{{ site_nme }} {{ code }}"},
            ["shop"],
            "TIDINGS_TEMPLATES_DIR: sites/shop/email/zh/code.txt.j2: 'site_nme' is undefined "
            "(it gets: code, colour, footer, link_url, minutes, signature, site_name)",
        ),
        (
            {"email/en/cdoe.html.j2": "hi"},
            ["shop"],
            "TIDINGS_TEMPLATES_DIR: email/en/cdoe.html.j2 is not a template Tidings renders",
        ),
        (
            {"sites/shp/email/en/code.txt.j2": "hi"},
            ["shop"],
            "TIDINGS_TEMPLATES_DIR: sites/shp: no site with id 'shp' is configured",
        ),
        (
            {"emails/en/code.txt.j2": "hi"},
            ["shop"],
            "TIDINGS_TEMPLATES_DIR: unknown folder 'emails'",
        ),
        (
            {"pages/link.html": '{% include "pages/_head.html" %}'},
            [],
            "TIDINGS_TEMPLATES_DIR: pages/link.html: includes 'pages/_head.html', which does not exist",
        ),
        (
            {"sms/en/_sig.j2": "{% if %}", "sms/en/reminder.txt.j2": "{{ code }}"},
            [],
            "TIDINGS_TEMPLATES_DIR: sms/en/_sig.j2 line 1: Expected an expression",
        ),
    ],
)
def test_a_broken_override_is_one_line_naming_the_file(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    files: dict[str, str],
    site_ids: list[str],
    message: str,
) -> None:
    write(tmp_path, files)
    with pytest.raises(ConfigError) as caught:
        make_settings(templates_dir=str(tmp_path), sites=[site(i) for i in site_ids])
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("branding", "message"),
    [
        ({"colour": "green"}, "COLOUR: a #rrggbb hex colour, e.g. #1f6feb"),
        ({"colour": "#12345"}, "COLOUR: a #rrggbb hex colour, e.g. #1f6feb"),
        ({"from_address": "hello"}, "FROM_ADDRESS: not a valid email address"),
        (
            {"from_address": "支持@acme.example"},
            "FROM_ADDRESS: an address whose local part is ASCII",
        ),
        ({"from_nmae": "x"}, "FROM_NMAE: Extra inputs are not permitted"),
    ],
)
def test_bad_site_branding_is_refused_naming_the_key(
    make_settings: Callable[..., Settings], branding: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(sites=[site(branding=branding)])
    assert str(caught.value) == f"TIDINGS_SITES__0__BRANDING__{message}"


def test_bad_branding_in_the_sites_file_names_the_file_and_key(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    sites_file = tmp_path / "sites.toml"
    secret = site()["webhook_secrets"][0]
    sites_file.write_text(
        f"[[sites]]\nid = 'shop'\nwebhook_secrets = ['{secret}']\napi_keys = ['{'k' * 32}']\n"
        "[sites.branding]\ncolour = 'red'\n"
    )
    with pytest.raises(ConfigError) as caught:
        make_settings(sites=[], sites_file=str(sites_file))
    assert (
        str(caught.value)
        == f"{sites_file}: sites.0.branding.colour: a #rrggbb hex colour, e.g. #1f6feb"
    )


def test_a_missing_folder_and_a_bad_global_colour_are_refused(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^TIDINGS_TEMPLATES_DIR: .*/nowhere is not a folder$"):
        make_settings(templates_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^TIDINGS_BRANDING__COLOUR: a #rrggbb hex colour"):
        make_settings(branding={"colour": "blue"})


def test_the_example_folder_is_valid() -> None:
    check_folder(REPO / "deploy" / "templates.example", ["demo"])


async def test_a_broken_override_stops_the_worker_at_start_up_with_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    write(tmp_path, {"sites/shop/email/en/link.html.j2": "{% for x in %}"})
    env = {**process_env(settings), "TIDINGS_TEMPLATES_DIR": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tidings"),
        "worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # A generous deadline for a process that must stop by itself, not a start-up budget.
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    lines = stderr.decode().strip().splitlines()
    assert lines == [
        "Error: TIDINGS_TEMPLATES_DIR: sites/shop/email/en/link.html.j2 line 1: "
        "Expected an expression, got 'end of statement block'"
    ]
