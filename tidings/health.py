"""``tidings health``: a container health check for workers and schedulers."""

from __future__ import annotations

import asyncio
import json
import sys

import click

DEFAULT_URL = "http://127.0.0.1:9101/readyz"


async def probe(url: str, timeout: float) -> tuple[bool, str]:
    """Ask one ``/readyz``: whether it is ready, and a one-line reason when it is not."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            text = await response.text()
            status = response.status
    except TimeoutError:
        return False, f"{url}: no answer within {timeout:g}s"
    except aiohttp.ClientError as exc:
        return False, f"{url}: cannot connect ({type(exc).__name__})"
    if status == 200:
        return True, ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    reason = body.get("reason") if isinstance(body, dict) else None
    return False, f"{url}: not ready ({reason or f'HTTP {status}'})"


@click.command()
@click.option(
    "--url",
    "urls",
    multiple=True,
    default=[DEFAULT_URL],
    show_default=True,
    help="A /readyz to ask; repeat it for each worker child (the base port + its index).",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
def health(urls: tuple[str, ...], timeout: float) -> None:
    """Exit 0 when every URL answers ready; else 1 with one line saying why."""

    async def run() -> list[tuple[bool, str]]:
        return list(await asyncio.gather(*(probe(url, timeout) for url in urls)))

    failures = [reason for ready, reason in asyncio.run(run()) if not ready]
    if failures:
        click.echo("; ".join(failures), err=True)
        sys.exit(1)
