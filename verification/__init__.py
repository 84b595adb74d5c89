"""The verification domain shared by the web app, the bot and the workers."""
