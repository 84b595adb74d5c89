"""Codes, tokens and ids: how they are made, hashed and sealed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV

__all__ = [
    "CodeHasher",
    "InvalidTag",
    "LinkToken",
    "PayloadSealer",
    "generate_code",
    "new_id",
    "random_hex",
]


def generate_code(digits: int) -> str:
    """A uniformly random numeric code from the OS CSPRNG."""
    return f"{secrets.randbelow(10**digits):0{digits}d}"


class _Entropy:
    """OS randomness read 4 KiB at a time: one ``getrandom`` call per ~500 ids, not one each.

    For ids that must be unique and unpredictable enough not to collide (request ids,
    delivery id tails, lease tokens, MIME boundaries), not for secrets: codes and link
    secrets come from :mod:`secrets` directly. A forked child starts with an empty buffer,
    so parent and children never hand out the same bytes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the buffer (in a forked child)."""
        self._buffer = b""
        self._used = 0

    def hex(self, nbytes: int) -> str:
        """``nbytes`` fresh random bytes as hex."""
        with self._lock:
            if self._used + nbytes > len(self._buffer):
                self._buffer = os.urandom(max(4096, nbytes))
                self._used = 0
            start = self._used
            self._used += nbytes
            return self._buffer[start : start + nbytes].hex()


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.reset)


def random_hex(nbytes: int) -> str:
    """``nbytes`` of OS randomness as hex, for ids (never for codes or secrets)."""
    return _entropy.hex(nbytes)


def new_id(prefix: str) -> str:
    """An unguessable public id such as ``ver_…`` (128 random bits)."""
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class LinkToken:
    """A magic link's token: ``<verification hex>.<secret>``.

    The secret is 192 random bits; only its keyed hash is stored. Carrying the
    verification id lets ``/v/{token}`` find its verification without an index key.
    """

    verification_id: str
    secret: str

    @classmethod
    def new(cls, verification_id: str) -> LinkToken:
        """A fresh token for ``verification_id``."""
        return cls(verification_id, secrets.token_urlsafe(24))

    @classmethod
    def parse(cls, token: str) -> LinkToken | None:
        """The token in a URL path, or None when it cannot be one of ours."""
        head, dot, secret = token.partition(".")
        if not dot or not _LINK_HEAD.fullmatch(head) or not _LINK_SECRET.fullmatch(secret):
            return None
        return cls(f"ver_{head}", secret)

    def __str__(self) -> str:
        return f"{self.verification_id.removeprefix('ver_')}.{self.secret}"


# 32 hex digits, or 34 where the id names its shard (see verification.keys.Layout).
_LINK_HEAD = re.compile(r"[0-9a-f]{32}(?:[0-9a-f]{2})?")
_LINK_SECRET = re.compile(r"[A-Za-z0-9_-]{32}")


def _subkey(master: bytes, purpose: str) -> bytes:
    return hmac.new(master, f"tidings/{purpose}".encode(), hashlib.sha256).digest()


class _Mac:
    """HMAC-SHA256 under one key, its keyed state prepared once.

    A copy per message costs a third of ``hmac.new``, which pads and hashes the key
    every time.
    """

    __slots__ = ("_state",)

    def __init__(self, key: bytes) -> None:
        self._state = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, message: bytes) -> bytes:
        mac = self._state.copy()
        mac.update(message)
        return mac.digest()

    def hexdigest(self, message: bytes) -> str:
        mac = self._state.copy()
        mac.update(message)
        return mac.hexdigest()


class CodeHasher:
    """Keyed hashes: codes are stored only as these, and addresses are indexed by them."""

    def __init__(self, master_key: bytes) -> None:
        self._code_key = _Mac(_subkey(master_key, "code"))
        self._index_key = _Mac(_subkey(master_key, "index"))
        self._link_key = _Mac(_subkey(master_key, "link"))
        self._start_key = _Mac(_subkey(master_key, "telegram-start"))
        self._unsubscribe_key = _Mac(_subkey(master_key, "unsubscribe"))
        self._delivery_link_key = _Mac(_subkey(master_key, "delivery-link"))
        self._signup_key = _Mac(_subkey(master_key, "signup"))

    def code(self, verification_id: str, code: str) -> str:
        """Hash of ``code`` bound to one verification (128 bits, as 32 hex digits).

        Half an HMAC-SHA256 is plenty for a value that is only ever compared; records of
        earlier releases keep all 64 digits and are compared by their first 32.
        """
        message = f"{verification_id}:{code}".encode()
        return self._code_key.hexdigest(message)[:32]

    def link(self, token: LinkToken) -> str:
        """Hash of a magic link's secret, bound to its verification (as :meth:`code`)."""
        message = f"{token.verification_id}:{token.secret}".encode()
        return self._link_key.hexdigest(message)[:32]

    def delivery_link(self, delivery_id: str, verification_id: str) -> LinkToken:
        """The magic link a delivery sends: its secret derived from the delivery's id.

        Derived (192 bits of a keyed hash of a unique id) rather than random and stored:
        Redis keeps only the link's hash, as it does for the code, and the worker derives
        the link again when it sends. Without the master key the id tells nothing.
        """
        mac = self._delivery_link_key.digest(delivery_id.encode())
        return LinkToken(verification_id, base64.urlsafe_b64encode(mac[:24]).decode())

    def start_payload(self, verification_id: str) -> str:
        """The Telegram deep-link payload of a verification: its id and a 132-bit MAC.

        54 (56 with a shard) characters of ``[0-9a-f]`` and base64url, within Telegram's 64-character
        ``[A-Za-z0-9_-]`` rule. Derived rather than stored, so the resource can show the
        link at any time and no plaintext secret sits in Redis; it works while the
        verification is pending, so it is single-use with the verification.
        """
        head = verification_id.removeprefix("ver_")
        mac = self._start_key.digest(head.encode())
        return head + base64.urlsafe_b64encode(mac).decode()[:22]

    def start_verification(self, payload: str) -> str | None:
        """The verification a deep-link payload belongs to, or None if it is not ours."""
        head = payload[:-22]
        if len(payload) not in (54, 56) or not _LINK_HEAD.fullmatch(head):
            return None
        expected = self.start_payload(f"ver_{head}")
        return f"ver_{head}" if hmac.compare_digest(expected, payload) else None

    def unsubscribe_token(self, address: str) -> str:
        """The token in an email's List-Unsubscribe URL: the address and a MAC over it."""
        encoded = base64.urlsafe_b64encode(address.encode()).decode().rstrip("=")
        mac = self._unsubscribe_key.digest(address.encode())
        return f"{encoded}.{base64.urlsafe_b64encode(mac).decode()[:22]}"

    def unsubscribed_address(self, token: str) -> str | None:
        """The address an unsubscribe token was made for, or None if it is not ours."""
        encoded, _, _ = token.partition(".")
        try:
            address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        expected = self.unsubscribe_token(address)
        return address if hmac.compare_digest(expected, token) else None

    def signup(self, site: str, webhook_id: str) -> str:
        """The id digest of the verification a site's ``webhook-id`` creates.

        The same webhook-id always names the same verification, so the verification's own
        hash is the replay record: no key per webhook-id. Unguessable without the key.
        """
        message = f"{site}\x00{webhook_id}".encode()
        return self._signup_key.hexdigest(message)[:32]

    def index(self, value: str) -> str:
        """Opaque, stable digest of an address or user id for use in key names."""
        return self._index_key.hexdigest(value.encode())[:32]


class PayloadSealer:
    """Encrypts what a worker must send (the code) while it waits in Redis.

    ``v2.`` (since 2026-12): AES-256-GCM-SIV with the nonce derived from the delivery's
    id, which is also authenticated, so the sealed code is bound to its delivery and only
    ciphertext and tag are stored (base64url). SIV because a derived nonce could repeat
    (two deliveries of one verification with the same random tail): then it reveals only
    whether the two codes are equal. ``v1.`` (earlier releases, still opened): AES-256-GCM
    with a random 96-bit nonce stored before the ciphertext.
    """

    _V1 = "v1."
    _V2 = "v2."

    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(_subkey(master_key, "payload"))
        self._siv = AESGCMSIV(_subkey(master_key, "payload-siv"))

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt and authenticate ``plaintext`` for one ``context`` (a delivery id)."""
        nonce = hashlib.sha256(context.encode()).digest()[:12]
        sealed = self._siv.encrypt(nonce, plaintext.encode(), context.encode())
        return self._V2 + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, token: str, context: str) -> str:
        """Decrypt a sealed payload; raises :class:`InvalidTag` if tampered with."""
        if token.startswith(self._V2):
            body = token[len(self._V2) :]
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            nonce = hashlib.sha256(context.encode()).digest()[:12]
            return self._siv.decrypt(nonce, raw, context.encode()).decode()
        if not token.startswith(self._V1):
            raise InvalidTag
        raw = base64.urlsafe_b64decode(token[len(self._V1) :])
        return self._aead.decrypt(raw[:12], raw[12:], None).decode()
