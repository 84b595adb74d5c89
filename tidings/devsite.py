"""The demo site and server key that ``tidings dev`` creates once and keeps."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import tomli_w


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_api_key() -> str:
    """A site API key."""
    return "tk_" + secrets.token_urlsafe(32)


def site_toml(
    site_id: str, name: str, channels: tuple[str, ...] = ("email", "sms", "link")
) -> dict[str, object]:
    """A fresh site declaration, as a TOML-ready dict."""
    return {
        "id": site_id,
        "name": name,
        "webhook_secrets": [new_webhook_secret()],
        "api_keys": [new_api_key()],
        "channels": list(channels),
        "default_locale": "en",
    }


def ensure_dev_files(folder: Path) -> tuple[Path, str]:
    """Create (once) the demo sites file and the server key; return the file and the key."""
    folder.mkdir(parents=True, exist_ok=True)
    sites_file = folder / "dev-sites.toml"
    if not sites_file.exists():
        # Telegram too: it works as soon as TIDINGS_TELEGRAM__TOKEN is set.
        channels = ("email", "sms", "link", "telegram")
        document = {"sites": [site_toml("demo", "Demo Shop", channels)]}
        sites_file.write_text(tomli_w.dumps(document), encoding="utf-8")
        sites_file.chmod(0o600)
    key_file = folder / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        key_file.chmod(0o600)
    return sites_file, key_file.read_text(encoding="utf-8").strip()
