"""Phone numbers: validated and normalised to E.164, and refused clearly at the webhook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.settings import Settings
from tests.conftest import post_event, signup_event, site
from verification.phones import normalise_phone, phone_prefix
from webhooks.app import create_app


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        # China: national mobile forms, as people type them.
        ("138 0013 8000", "CN", "+8613800138000"),
        ("13800138000", "CN", "+8613800138000"),
        ("138-0013-8000", "CN", "+8613800138000"),
        ("  138 0013 8000  ", "CN", "+8613800138000"),
        # China with its country code: +86 and the 00 international prefix, any default.
        ("+86 138 0013 8000", "CN", "+8613800138000"),
        ("+86 138 0013 8000", "US", "+8613800138000"),
        ("0086 13800138000", "CN", "+8613800138000"),
        ("0086 138 0013 8000", "GB", "+8613800138000"),
        # United States: national form read in the US; the plan does not tell mobiles apart.
        ("(415) 555-2671", "US", "+14155552671"),
        ("415-555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "CN", "+14155552671"),
        # United Kingdom mobiles (07…), national and international.
        ("+44 7911 123456", "CN", "+447911123456"),
        ("07911 123456", "GB", "+447911123456"),
        ("0044 7911 123456", "CN", "+447911123456"),
        # Germany, national with its trunk 0.
        ("0151 23456789", "DE", "+4915123456789"),
    ],
)
def test_valid_mobile_numbers_become_e164(raw: str, region: str, e164: str) -> None:
    assert normalise_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region", "why"),
    [
        # Landlines cannot receive a text: Beijing and London fixed lines.
        ("010 1234 5678", "CN", "not a mobile"),
        ("+86 10 1234 5678", "US", "not a mobile"),
        ("+44 20 7946 0958", "CN", "not a mobile"),
        # Toll-free and premium-rate numbers cannot either.
        ("+1 800 555 0199", "US", "not a mobile"),
        ("+44 909 879 0000", "CN", "not a mobile"),
        # Too short, too long.
        ("12345", "CN", "not a valid"),
        ("138 0013 800", "CN", "not a valid"),
        ("+86 138 0013 80001", "CN", "not a valid"),
        # No digits at all.
        ("call me", "CN", "not a phone number"),
        ("abc", "CN", "not a phone number"),
        ("", "CN", "not a phone number"),
        # Valid in China, but written without a country code where the default is elsewhere.
        ("13800138000", "US", "not a valid"),
        ("138 0013 8000", "GB", "not a valid"),
        # A UK national mobile read as Chinese.
        ("07911 123456", "CN", "not a valid"),
        # An unassigned country code.
        ("+999 1234 5678", "CN", "not a"),
    ],
)
def test_invalid_numbers_are_refused_without_repeating_them(
    raw: str, region: str, why: str
) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        normalise_phone(raw, region)
    digits = "".join(ch for ch in raw if ch.isdigit())
    if len(digits) >= 4:
        assert digits not in "".join(ch for ch in str(caught.value) if ch.isdigit())


@pytest.mark.parametrize("raw", ["138abc00138", "13800138OOO", "1380013800O"])
def test_letters_inside_a_number_are_refused_not_turned_into_digits(raw: str) -> None:
    # A mistyped letter (O for 0) must not silently become another digit: the code would
    # go to a stranger's phone. Vanity spellings are for dialling, not for a phone field.
    with pytest.raises(ValueError):
        normalise_phone(raw, "CN")


def test_result_is_stable_when_normalised_again() -> None:
    e164 = normalise_phone("138 0013 8000", "CN")
    assert normalise_phone(e164, "US") == e164
    assert normalise_phone(e164, "CN") == e164


@pytest.mark.parametrize(
    ("e164", "digits", "prefix"),
    [
        ("+8613800138000", 7, "8613800"),
        ("+8613800138999", 7, "8613800"),
        ("+8613900139000", 7, "8613900"),
        ("+447911123456", 7, "4479111"),
        ("+14155552671", 4, "1415"),
        ("+14155552671", 3, "141"),
        ("+8613800138000", 12, "861380013800"),
    ],
)
def test_phone_prefix_counts_country_code_digits(e164: str, digits: int, prefix: str) -> None:
    assert phone_prefix(e164, digits) == prefix


def test_numbers_of_one_range_share_a_prefix_and_others_do_not() -> None:
    a = normalise_phone("138 0013 8000", "CN")
    b = normalise_phone("+86 138 0013 8123", "CN")
    c = normalise_phone("139 0013 8000", "CN")
    assert phone_prefix(a, 7) == phone_prefix(b, 7)
    assert phone_prefix(a, 7) != phone_prefix(c, 7)


# -- through the webhook -------------------------------------------------------------------


@pytest.fixture
async def sms_client(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> TestClient:
    settings = make_settings(
        sms={"provider": "console", "allow_console_in_production": True},
        sites=[site(channels=["email", "sms", "link"])],
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


@pytest.mark.parametrize(
    "phone",
    ["010 1234 5678", "12345", "call me", "+44 20 7946 0958", "0044 20 7946 0958", "07911 123456"],
)
async def test_webhook_refuses_a_bad_phone_naming_the_field(
    sms_client: TestClient, phone: str
) -> None:
    response = await post_event(sms_client, signup_event(channel="sms", phone=phone, email=None))
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    text = await response.text()
    problem = await response.json()
    assert problem["status"] == 422
    assert problem["detail"].startswith("data.phone")
    assert [e["field"] for e in problem["errors"]] == ["data.phone"]
    # The answer does not repeat the number (in any spacing).
    digits = "".join(ch for ch in phone if ch.isdigit())
    if digits:
        assert phone not in text
        assert digits not in "".join(ch for ch in text if ch.isdigit())


async def test_webhook_refuses_letters_in_a_phone(sms_client: TestClient) -> None:
    response = await post_event(
        sms_client, signup_event(channel="sms", phone="13800138OOO", email=None)
    )
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == ["data.phone"]


async def test_webhook_refuses_a_bad_phone_even_for_the_email_channel(
    sms_client: TestClient,
) -> None:
    response = await post_event(sms_client, signup_event(channel="email", phone="12345"))
    assert response.status == 422
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == ["data.phone"]


async def test_webhook_refuses_an_overlong_phone_without_echoing_it(
    sms_client: TestClient,
) -> None:
    phone = "+86 " + "1" * 40
    response = await post_event(sms_client, signup_event(channel="sms", phone=phone, email=None))
    assert response.status == 422
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == ["data.phone"]
    assert "1" * 11 not in await response.text()


async def test_webhook_keeps_a_national_number_as_e164(sms_client: TestClient) -> None:
    response = await post_event(
        sms_client, signup_event(channel="sms", phone="138 0013 8000", email=None)
    )
    assert response.status == 202, await response.text()
    created = await response.json()
    assert created["channel"] == "sms"
    # Masked, from the normalised number: the country code shows, the middle does not.
    assert created["destination"].startswith("+86")
    assert "0013" not in created["destination"]
