"""Rendered emails read the same whether a template is spliced (stencils) or run by Jinja."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from config.branding import BrandingSettings, resolve_brand
from config.settings import EmailSettings
from config.sites import SUPPORTED_LOCALES
from config.templates import build_templates
from tasks.email.rendering import EmailRenderer, RenderedEmail

LINK = "https://verify.example/v/0123abcd.sample?a=1&b=<2>"
SETTINGS = EmailSettings(from_address="codes@tidings.test", from_name="Acme 验证")


def parsed(message: RenderedEmail) -> EmailMessage:
    """The message as a mail client reads it from the wire."""
    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(message: RenderedEmail) -> tuple[str, str, str]:
    """Subject, plain text and HTML as a mail client shows them."""
    read = parsed(message)
    assert read.get_content_type() == "multipart/alternative"
    text, html = read.get_body(("plain",)), read.get_body(("html",))
    assert text is not None and html is not None
    return str(read["Subject"]), str(text.get_content()), str(html.get_content())


def jinja(root: Path | None, template: str, lang: str, variables: dict[str, Any]) -> list[str]:
    """Subject, text and HTML straight from Jinja, the way templates were always rendered."""
    templates = build_templates("email", root)
    return [
        templates.get(f"{lang}/{template}.{kind}.j2").render(variables)
        for kind in ("subject", "txt", "html")
    ]


VERIFY = [
    ("code", {"site_name": "Bench & <Co>", "code": "123456", "minutes": 10, "link_url": LINK}),
    ("link", {"site_name": "Bench", "code": "", "minutes": 1, "link_url": LINK}),
    ("reminder", {"site_name": "Bench", "code": "654321", "minutes": 10, "link_url": LINK}),
    ("reminder", {"site_name": "Bench", "code": "", "minutes": 10, "link_url": LINK}),
    (
        "broadcast",
        {"subject": "News <b>", "text": "Hello & welcome\n<i>x</i>\n", "unsubscribe_url": LINK},
    ),
]


@pytest.mark.parametrize("lang", SUPPORTED_LOCALES)
@pytest.mark.parametrize(("template", "context"), VERIFY)
def test_every_package_template_reads_as_jinja_renders_it(
    lang: str, template: str, context: dict[str, Any]
) -> None:
    renderer = EmailRenderer(SETTINGS)
    brand = resolve_brand(BrandingSettings(), None).context()
    subject, text, html = jinja(None, template, lang, {**brand, **context})
    # Twice: the first message of a shape makes its stencil, the second uses it.
    for _ in range(2):
        message = renderer.render(template, lang, "user@example.com", context)
        assert parts(message) == (subject.strip(), text, html)
        assert (message.subject, message.text, message.html) == (subject.strip(), text, html)


def test_per_message_values_change_and_are_escaped_in_html_only() -> None:
    renderer = EmailRenderer(SETTINGS)
    seen = set()
    for code in ("111111", "222222", "333333"):
        link = f"https://verify.example/v/{code}?a=1&b=<{code}>"
        context = {"site_name": "Bench", "code": code, "minutes": 10, "link_url": link}
        _, text, html = parts(renderer.render("code", "en", "user@example.com", context))
        assert f"\n    {code}\n" in text
        assert link in text  # the plain part as it is
        assert f'href="https://verify.example/v/{code}?a=1&amp;b=&lt;{code}&gt;"' in html
        seen.add(text)
    assert len(seen) == 3


def test_a_reminder_with_and_without_a_code_reads_differently() -> None:
    renderer = EmailRenderer(SETTINGS)
    base = {"site_name": "Bench", "minutes": 10, "link_url": LINK}
    _, with_code, _ = parts(
        renderer.render("reminder", "en", "a@example.com", {**base, "code": "1"})
    )
    _, without, _ = parts(renderer.render("reminder", "en", "a@example.com", {**base, "code": ""}))
    assert "Your new verification code is:" in with_code and "They expire" in with_code
    assert "Confirm with this link:" in without and "It expires" in without


# Templates that use values in ways a stencil cannot reproduce: compared, filtered, looped
# over, assigned, printed unescaped. Each replaces one part of the package's code email.
OVERRIDES = [
    ("code.txt.j2", "{% if minutes == 1 %}One minute{% else %}{{ minutes }} minutes{% endif %}\n"),
    ("code.txt.j2", "    {{ code }}\n{{ code|join(' ') }}\n"),
    ("code.txt.j2", "    {{ code }}\n{% for c in code %}[{{ c }}]{% endfor %}\n"),
    ("code.subject.j2", "{{ code }} is your code ({{ minutes * 60 }} s)"),
    ("code.html.j2", "{% set shown = link_url ~ '#' ~ code %}<a href=\"{{ shown }}\">go</a>\n"),
    ("code.html.j2", "{% autoescape false %}{{ link_url }}{% endautoescape %}\n"),
    ("code.html.j2", "{{ link_url if code else 'none' }} {{ code or 'none' }}\n"),
]


@pytest.mark.parametrize(("name", "source"), OVERRIDES)
def test_templates_that_transform_values_render_each_message_as_jinja_does(
    tmp_path: Path, name: str, source: str
) -> None:
    path = tmp_path / "email" / "en" / name
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")
    renderer = EmailRenderer(SETTINGS, build_templates("email", tmp_path))
    brand = resolve_brand(BrandingSettings(), None).context()
    seen = set()
    # The first message looks like the rest, so a stencil made from it would pass for them.
    for code, minutes in (("987654", 5), ("123456", 1), ("555555", 1)):
        link = f"https://verify.example/v/{code}?a=1&b=<2>"
        context = {"site_name": "Bench", "code": code, "minutes": minutes, "link_url": link}
        subject, text, html = parts(renderer.render("code", "en", "a@example.com", context))
        expected = jinja(tmp_path, "code", "en", {**brand, **context})
        assert (subject, text, html) == (expected[0].strip(), expected[1], expected[2])
        seen.add((subject, text, html))
    assert len(seen) == 3


def test_an_include_keeps_the_template_on_jinja(tmp_path: Path) -> None:
    folder = tmp_path / "email" / "en"
    folder.mkdir(parents=True)
    (folder / "_code.j2").write_text("{{ code|reverse }}", encoding="utf-8")
    (folder / "code.txt.j2").write_text(
        '    {{ code }}\n{% include "email/en/_code.j2" %}\n', encoding="utf-8"
    )
    renderer = EmailRenderer(SETTINGS, build_templates("email", tmp_path))
    for code in ("123456", "654321"):
        context = {"site_name": "Bench", "code": code, "minutes": 10, "link_url": LINK}
        _, text, _ = parts(renderer.render("code", "en", "a@example.com", context))
        assert text == f"    {code}\n{code[::-1]}\n"


def test_markup_values_are_left_to_jinja() -> None:
    renderer = EmailRenderer(SETTINGS)
    text = Markup("<b>already safe</b>")
    context = {"subject": "News", "text": text, "unsubscribe_url": LINK}
    _, _, html = parts(renderer.render("broadcast", "en", "a@example.com", context))
    assert "<b>already safe</b>" in html
