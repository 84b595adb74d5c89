"""RFC 8058 one-click unsubscribe headers for emails people did not ask for each time."""

from __future__ import annotations

from verification.codes import CodeHasher


def one_click_unsubscribe(
    public_url: str, hasher: CodeHasher, address: str
) -> tuple[str, dict[str, str]]:
    """The unsubscribe URL for ``address`` and the ``List-Unsubscribe*`` headers carrying it.

    Reminders and broadcasts carry them, code emails do not (the person just asked).
    """
    url = f"{public_url.rstrip('/')}/unsubscribe/{hasher.unsubscribe_token(address)}"
    return url, {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
