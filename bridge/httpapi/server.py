"""HTTPS listeners of the API: uvicorn on the bridge's own asyncio loop.

`start_api` binds every `[api] listen` address itself (so a port in use is an
OSError, as for SMTP and IMAP, and port 0 works), then starts one uvicorn
`Server` per socket inside the running loop: `startup()` plus its tick loop
(which keeps the Date header current) as a task.  `Server.serve()` is not used
because it installs its own SIGINT/SIGTERM handlers, which belong to
`bridge.app.serve`.  `ApiServer.stop()` stops accepting, lets requests in
progress finish (up to `GRACE` seconds) and closes the sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

import uvicorn

from bridge.config import Listen
from bridge.httpapi.app import ApiContext, create_app

GRACE = 5
log = logging.getLogger("bridge.http")


@dataclass
class ApiServer:
    """The running API listeners; `bound` lists (host, port) in config order."""

    servers: list[uvicorn.Server]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def bound(self) -> list[tuple[str, int]]:
        return [s.servers[0].sockets[0].getsockname()[:2] for s in self.servers]

    async def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for server in self.servers:
            await server.shutdown()


async def start_api(ctx: ApiContext, listeners: list[Listen], cert_file: str, key_file: str) -> ApiServer:
    """Serve the API on every listener over TLS (cert_file/key_file: the [tls] chain and key)."""
    app = create_app(ctx)
    running = ApiServer([])
    try:
        for lst in listeners:
            sock = _bind(lst)
            config = uvicorn.Config(app, host=lst.host, port=lst.port, ssl_certfile=cert_file,
                                    ssl_keyfile=key_file, log_config=None, lifespan="off", http="h11",
                                    access_log=False, server_header=False, proxy_headers=False,
                                    timeout_graceful_shutdown=GRACE)
            config.load()
            server = uvicorn.Server(config)
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=[sock])
            log.info("HTTP API listening on https://%s", Listen(*sock.getsockname()[:2]))
            running.servers.append(server)
            running.tasks.append(asyncio.create_task(server.main_loop()))
    except BaseException:
        await running.stop()
        raise
    return running


def _bind(lst: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in lst.host else socket.AF_INET
    sock = socket.create_server((lst.host, lst.port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


__all__ = ["ApiServer", "start_api"]
