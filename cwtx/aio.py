"""cwtx in asyncio programs: ``await cwtx.aio.connect()``; see cwtx.client.aio."""

from cwtx.client.aio import AsyncClient, connect

__all__ = ["AsyncClient", "connect"]
