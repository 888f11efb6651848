"""The floor: aiohttp + uvloop answering 200 doing no work, N processes sharing the port."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys

import uvloop
from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    return web.Response(status=200)


def serve(port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024).start()
        await asyncio.Event().wait()

    uvloop.run(main())


if __name__ == "__main__":
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    processes = [multiprocessing.Process(target=serve, args=(port,)) for _ in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
