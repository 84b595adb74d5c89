"""Secrets and keys published as examples, which production roles refuse to run with.

An example secret is public: anyone who read the README, ``compose.yaml``,
``.env.example`` or ``deploy/sites.example.toml`` can sign webhooks or forge code hashes
with it. ``tidings dev`` generates its own and is never checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from config.sites import SiteConfig

if TYPE_CHECKING:
    from config.settings import Settings

GENERATE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'

# SHA-256 of every example value we have published (or that a copied Standard Webhooks
# snippet brings along), so the strings are not repeated here for scanners to flag.
KNOWN_EXAMPLE_DIGESTS: frozenset[str] = frozenset(
    {
        # compose.yaml's former default TIDINGS_SECRET_KEY
        "4ddd6c563ce250b72a1177acb61eaab663cc76792283edad4886e654d7b71545",
        # .env.example: TIDINGS_SECRET_KEY, TIDINGS_TELEGRAM__WEBHOOK_SECRET
        "1cd30776b0dca504743c31676acd65e74d35a62374ee9f372d833c27ecc7442a",
        "81f99fac32507840880a9318eacb88e0885c0c2c63d1fd679bf5d964da167766",
        # deploy/sites.example.toml: the demo site's webhook secret and API key
        "e92746b26d7ef6da8f8d7245c00938141b591f8e19f7f7cd59e13fd3a643abca",
        "4f835f2c34035408d9a44c6e0bb07bc477c4949bab1d150743fbcf99ce2a203e",
        # The Standard Webhooks and Svix documentation's example secrets
        "96ad2ccd81462a766178ae09a71df55f548a3f66da11606f9cdf40b391e22dd0",
        "2dd745ff991276aed56826de4e41d9d81b006c671a1491c08e9fc74e9362d95a",
    }
)

# Words of a placeholder someone was told to replace; random values never contain them.
PLACEHOLDER_WORDS = ("change-me", "changeme", "replace-with", "replace-me", "do-not-use", "example")


def is_example(value: str) -> bool:
    """Whether ``value`` is a published example or an obvious placeholder."""
    digest = hashlib.sha256(value.encode()).hexdigest()
    lowered = value.lower().replace("_", "-")
    return digest in KNOWN_EXAMPLE_DIGESTS or any(word in lowered for word in PLACEHOLDER_WORDS)


def _server_secrets(settings: Settings) -> Iterator[tuple[str, str]]:
    if settings.secret_key is not None:
        yield "TIDINGS_SECRET_KEY", settings.secret_key.get_secret_value()
    if settings.telegram.webhook_secret is not None:
        yield (
            "TIDINGS_TELEGRAM__WEBHOOK_SECRET",
            settings.telegram.webhook_secret.get_secret_value(),
        )


def example_in_use(settings: Settings, sites: Sequence[SiteConfig]) -> str | None:
    """One line naming the first example secret configured, or ``None`` when there is none.

    The line names the key or site, never the value.
    """
    for key, value in _server_secrets(settings):
        if is_example(value):
            return f"{key}: this is a published example, not a secret; generate one with {GENERATE_KEY}"
    for site in sites:
        for kind, values in (("webhook secret", site.webhook_secrets), ("API key", site.api_keys)):
            for number, secret in enumerate(values, start=1):
                if is_example(secret.get_secret_value()):
                    return (
                        f"sites: site {site.id!r} {kind} {number} is a published example, not a "
                        f"secret; `tidings sites new {site.id}` prints fresh secrets and keys"
                    )
    return None
