"""An SMTP sink in its own process for ``bench/delivery.py``: counts what it receives.

    python -m bench.smtp_sink --smtp-port P --http-port H

aiosmtpd's ``SMTP`` protocol on ``loop.create_server`` (no Controller thread), plus a tiny
aiohttp status server on the same event loop:

* ``GET /stats``: totals (messages, recipients, bytes, first/last receive time), O(1).
* ``GET /dump``: every envelope recipient with the wall-clock times (``time.time()``) at
  which a message for it was accepted; more than one time is a duplicate.
* ``POST /reset``: forget everything (between benchmark phases).

Only the envelope (RCPT TO) is recorded; the message is not parsed, so the sink spends as
little CPU per message as aiosmtpd allows. Prints ``READY`` once both servers listen and
stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import defaultdict
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


class CountingHandler:
    """Accepts every message and remembers when each recipient got one."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.received: defaultdict[str, list[float]] = defaultdict(list)
        self.messages = 0
        self.bytes = 0
        self.first = 0.0
        self.last = 0.0
        self.sizes: set[int] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time()
        if not self.messages:
            self.first = now
        self.last = now
        self.messages += 1
        size = len(envelope.original_content or b"")
        self.bytes += size
        if len(self.sizes) < 50:
            self.sizes.add(size)
        for rcpt in envelope.rcpt_tos:
            self.received[rcpt].append(now)
        return "250 OK"

    def stats(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "recipients": len(self.received),
            "bytes": self.bytes,
            "first": self.first,
            "last": self.last,
            "sizes": sorted(self.sizes)[:10],
        }


async def serve(smtp_port: int, http_port: int) -> None:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        # hostname given: aiosmtpd would otherwise call socket.getfqdn() per connection.
        lambda: SMTP(handler, hostname="sink.bench", ident="bench-sink"),
        "127.0.0.1",
        smtp_port,
        backlog=1024,
    )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(handler.stats())

    async def dump(request: web.Request) -> web.Response:
        return web.json_response({**handler.stats(), "received": handler.received})

    async def reset(request: web.Request) -> web.Response:
        handler.reset()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/dump", dump)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    smtp.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.smtp_port, args.http_port))


if __name__ == "__main__":
    main()
