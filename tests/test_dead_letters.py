"""Deliveries that failed for good: listed for operators and sent again on request."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestClient

from config.settings import Settings
from tests.conftest import (
    SmtpSink,
    auth,
    code_from,
    get_verification,
    post_event,
    signup_event,
    wait_for,
)
from tests.processes import BIN, process_env


async def _cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tidings"),
        *args,
        env=process_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_failed_delivery_is_listed_and_replayed(
    client: TestClient, smtp: SmtpSink, worker: None, settings: Settings
) -> None:
    smtp.handler.refuse_rcpt = "550 5.7.1 Sender domain not authorised"
    vid = (await (await post_event(client, signup_event())).json())["id"]

    async def failed() -> bool:
        return (await get_verification(client, vid))["status"] == "failed"

    await wait_for(failed, what="the verification to fail")
    first = (await get_verification(client, vid))["deliveries"][0]

    code, out, _ = await _cli(settings, "deliveries", "failed", "--json")
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["id"] == first["id"]
    assert row["verification_status"] == "failed"
    assert "550" in row["error"]
    assert "alice" not in out  # no addresses in the operator listing

    # The operator fixes the sender domain, then replays.
    smtp.handler.refuse_rcpt = None
    code, out, err = await _cli(settings, "deliveries", "retry", first["id"])
    assert code == 0, err
    [message] = await smtp.wait_for_messages(1)
    after = await get_verification(client, vid)
    assert after["status"] == "pending"
    assert after["sends"] == 2
    check = await client.post(
        f"/v1/verifications/{vid}/check", json={"code": code_from(message)}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"

    # It left the dead-letter list, and replaying it twice is refused with a reason.
    code, out, _ = await _cli(settings, "deliveries", "failed")
    assert out.strip() == "no failed deliveries"
    code, _, err = await _cli(settings, "deliveries", "retry", first["id"])
    assert code != 0
    assert "already sent again as" in err
    code, _, err = await _cli(settings, "deliveries", "retry", "dlv_nope")
    assert code != 0
    assert "no such delivery" in err
