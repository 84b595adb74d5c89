"""A bounded schemathesis run against the app's own ``/openapi.json``, with and without auth.

``TIDINGS_FUZZ_EXAMPLES`` raises the budget per run (default 40).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from tests.conftest import auth
from tests.test_hostile_input import served

__all__ = ["served"]

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "40"))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("authorized", [True, False])
async def test_every_operation_answers_as_documented(
    served: TestClient, mode: GenerationMode, authorized: bool
) -> None:
    document = await (await served.get("/openapi.json")).json()
    # The Telegram webhook is mounted only when a bot token and secret are configured.
    schema = schemathesis.openapi.from_dict(document).exclude(path="/telegram/webhook")
    base_url = str(served.make_url("")).rstrip("/")
    headers = auth() if authorized else {}

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema.as_strategy(mode))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, timeout=30)

    await asyncio.to_thread(run)
