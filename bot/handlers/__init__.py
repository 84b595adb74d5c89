"""Routers: people's commands and deep links, and admin commands."""
