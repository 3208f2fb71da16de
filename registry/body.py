"""Reading response bodies a registry sends, never more than the caller can hold."""

from __future__ import annotations

import aiohttp


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first ``limit + 1`` bytes if it is longer (so the caller can tell)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit and not response.content.at_eof():
        data = await response.content.read(limit + 1 - size)
        if not data:
            break
        parts.append(data)
        size += len(data)
    return b"".join(parts)
