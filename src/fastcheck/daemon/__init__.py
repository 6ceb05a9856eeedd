"""The daemon: the asyncio shells around the sans-IO cores, and the Runtime that owns them."""
