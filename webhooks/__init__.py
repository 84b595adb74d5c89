"""The aiohttp app: inbound site webhooks, the public API, operations and pages."""
