"""Looking sites up by id, webhook signature and API key."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from config.sites import SiteConfig

# Unix seconds have 10 digits until 2286; anything much longer is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """The webhook is not authentic; the message says why without echoing input."""


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def _signatures(header: str) -> list[bytes]:
    """The ``v1`` signatures of a ``webhook-signature`` header; malformed entries are skipped."""
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class SiteRegistry:
    """The configured sites, with their verifiers prepared once."""

    def __init__(self, sites: list[SiteConfig], tolerance_seconds: int = 300) -> None:
        self._sites = {site.id: site for site in sites}
        self._keys = {
            site.id: [_secret_bytes(s.get_secret_value()) for s in site.webhook_secrets]
            for site in sites
        }
        self._by_key = {
            _digest(key.get_secret_value()): site for site in sites for key in site.api_keys
        }
        self._tolerance = tolerance_seconds

    def get(self, site_id: str) -> SiteConfig | None:
        """The site with this id."""
        return self._sites.get(site_id)

    def by_api_key(self, key: str) -> SiteConfig | None:
        """The site owning this API key (looked up by digest, so timing reveals nothing)."""
        if not key.isascii():  # keys are ASCII; compare_digest refuses other text
            return None
        site = self._by_key.get(_digest(key))
        if site is None:
            return None
        # Belt and braces: confirm in constant time against the configured keys.
        ok = any(hmac.compare_digest(k.get_secret_value(), key) for k in site.api_keys)
        return site if ok else None

    def verify(self, site_id: str, body: bytes, headers: dict[str, str]) -> str:
        """Check a Standard Webhooks signature against any of the site's secrets.

        ``headers`` have lower-case names; the ``svix-*`` family (what Svix senders send)
        is read when there is no ``webhook-signature``. Returns the message id.

        Done with ``hmac`` directly: the ``standardwebhooks`` package costs several times
        more per request and raises ``ValueError`` on malformed headers. Tests sign with the
        package, so the two stay compatible.
        """
        family = "webhook" if "webhook-signature" in headers else "svix"
        msg_id = headers.get(f"{family}-id", "")
        timestamp = headers.get(f"{family}-timestamp", "")
        signature = headers.get(f"{family}-signature", "")
        if not (msg_id and timestamp and signature):
            raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
        # Bounded before int(): a 400-digit timestamp would overflow the float comparison.
        if (
            len(timestamp) > _MAX_TIMESTAMP_DIGITS
            or not timestamp.isascii()
            or not timestamp.isdigit()
        ):
            raise SignatureError("webhook-timestamp is not a Unix timestamp")
        if abs(time.time() - int(timestamp)) > self._tolerance:
            raise SignatureError("webhook-timestamp is outside the allowed tolerance")
        # Standard Webhooks: v1 = base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")).
        # Header text holds undecodable bytes as surrogates; sign the bytes that were sent.
        signed = f"{msg_id}.{timestamp}.".encode(errors="surrogateescape") + body
        offered = _signatures(signature)
        for key in self._keys.get(site_id, []):
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            if any(hmac.compare_digest(expected, sig) for sig in offered):
                return msg_id
        raise SignatureError("no matching signature")
