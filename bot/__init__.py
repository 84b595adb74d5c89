"""The Telegram bot (aiogram routers, middlewares, texts); it joins the web app and workers."""
