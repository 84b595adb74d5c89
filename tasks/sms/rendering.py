"""The text of an SMS, per purpose and locale, from Jinja2 templates."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from config.sites import SUPPORTED_LOCALES
from tasks.sms.base import SmsMessage


class SmsRenderer:
    """Renders ``templates/<locale>/<purpose>.txt.j2`` into an :class:`SmsMessage`.

    The last line is the origin-bound one-time code (``@shop.example #123456``) that
    browsers and phones use to offer the code for autofill on that site only; template
    providers such as Ronglian need it in their approved template as well.
    """

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("tasks.sms", "templates"),
            undefined=StrictUndefined,
            # Templates ship with the code: no stat() of the file on every render.
            auto_reload=False,
            autoescape=False,  # noqa: S701 - plain text for a phone, not HTML
            trim_blocks=True,
        )

    def render(self, purpose: str, locale: str, to: str, params: dict[str, str]) -> SmsMessage:
        """Build the message for ``to`` (E.164); unknown locales fall back to English."""
        lang = locale if locale in SUPPORTED_LOCALES else "en"
        text = self._env.get_template(f"{lang}/{purpose}.txt.j2").render(**params).strip()
        return SmsMessage(to=to, purpose=purpose, params=params, text=text)
