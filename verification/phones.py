"""Phone numbers: parsed and validated with ``phonenumbers``, kept in E.164."""

from __future__ import annotations

import phonenumbers

# Numbers that can receive a text; landlines and premium rates cannot (or should not).
_TEXTABLE = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
        # Regions whose plan does not tell mobiles apart (e.g. the US and Canada).
        phonenumbers.PhoneNumberType.UNKNOWN,
    }
)


def normalise_phone(raw: str, default_region: str) -> str:
    """``raw`` in E.164 (``+8613800138000``), or ``ValueError`` saying what is wrong.

    National forms (``138 0013 8000``, ``(0)20 7946 0958``) are read in ``default_region``;
    anything with ``+`` or ``00`` carries its own country code. The message never repeats
    the number.
    """
    text = raw.strip()
    if any(char.isalpha() for char in text):
        # phonenumbers would read letters as a keypad's digits (1-800-FLOWERS); a typed
        # O for 0 would then send the code to a stranger.
        raise ValueError("not a phone number: use digits only")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number for its country")
    if phonenumbers.number_type(number) not in _TEXTABLE:
        raise ValueError("not a mobile number: it cannot receive SMS")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_prefix(e164: str, digits: int) -> str:
    """The first ``digits`` digits of an E.164 number (country code included).

    Numbers sharing a prefix share a range, which is how SMS pumping attacks spread
    their sends; the anti-pumping limit counts per prefix.
    """
    return e164.lstrip("+")[:digits]
