"""One download client process: fetch a package N times at once, print JSON totals.

    python -m bench.download URL TOKEN N

Bytes are counted and dropped (no hashing) so the figure is the server's, not this
client's; several of these processes run side by side for one measurement.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

CHUNK = 1 << 20


async def _fetch(http: aiohttp.ClientSession, url: str, token: str) -> int:
    received = 0
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        response.raise_for_status()
        async for chunk in response.content.iter_chunked(CHUNK):
            received += len(chunk)
    return received


async def _main(url: str, token: str, count: int) -> dict[str, float | int]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        start = time.monotonic()
        results = await asyncio.gather(
            *(_fetch(http, url, token) for _ in range(count)), return_exceptions=True
        )
        end = time.monotonic()
    sizes = [r for r in results if isinstance(r, int)]
    return {
        "bytes": sum(sizes),
        "t_start": start,
        "t_end": end,
        "errors": len(results) - len(sizes),
    }


def main() -> int:
    url, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(_main(url, token, count))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
