"""The ceiling for a Python sender: aiohttp + uvloop, N in flight, each POST signed.

No database, no retries, no ordering: what leadhook's dispatcher is compared against.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from leadhook.domain.signing import webhook_headers


async def send_all(url: str, bodies: list[bytes], secret: str, in_flight: int = 50) -> float:
    """POST every body to `url` with `in_flight` concurrent requests; return deliveries/s."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(bodies):
        queue.put_nowait((i, body))
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while True:
                try:
                    i, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                headers = webhook_headers([secret], f"msg_{i}", int(time.time()), body, "bench")
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise RuntimeError(f"receiver answered {resp.status}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - start
    return len(bodies) / elapsed


def main() -> None:
    """Run from the command line: URL COUNT."""
    import uvloop

    url, count = sys.argv[1], int(sys.argv[2])
    body = b'{"event_type":"object_create","extra_data":{"pad":"' + b"x" * 1400 + b'"}}'
    rate = uvloop.run(send_all(url, [body] * count, "whsec_" + "QUJD" * 8))
    print(f"{rate:.0f} deliveries/s")


if __name__ == "__main__":
    main()
