"""HTTPS listeners of the API: uvicorn on the bridge's own asyncio loop.

`start_api` binds every `[api] listen` address itself (so a port in use is an
OSError, as for SMTP and IMAP, and port 0 works), then starts one uvicorn
`Server` per socket inside the running loop: `startup()` plus its tick loop
(which keeps the Date header current) as a task.  `Server.serve()` is not used
because it installs its own SIGINT/SIGTERM handlers, which belong to
`bridge.app.serve`.  `ApiServer.stop()` stops accepting, lets requests in
progress finish (up to `GRACE` seconds) and closes the sockets.

TLS is ours, not uvicorn's (tls.py): one SSLContext for every listener that
asks for a client certificate from the tenant CAs (reloaded while serving by
`ApiServer.watcher`), given to uvicorn through `ssl_context_factory`, and
`http=TlsH11Protocol` so the app sees the client certificate (ASGI TLS extension).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from bridge.config import Listen
from bridge.httpapi.app import ApiContext, create_app
from bridge.httpapi.tls import ClientCAs, protocol_class, server_context

GRACE = 5
# Connections and requests in progress per listener; past it, uvicorn answers 503.
MAX_CONCURRENCY = 1000
log = logging.getLogger("bridge.http")


@dataclass
class ApiServer:
    """The running API listeners; `bound` lists (host, port) in config order."""

    servers: list[uvicorn.Server]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None      # ClientCAs.watch

    @property
    def bound(self) -> list[tuple[str, int]]:
        return [s.servers[0].sockets[0].getsockname()[:2] for s in self.servers]

    async def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        for server in self.servers:
            server.should_exit = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for server in self.servers:
            await server.shutdown()


async def start_api(ctx: ApiContext, listeners: list[Listen], cert_file: str, key_file: str,
                    certs_dir: Path) -> ApiServer:
    """Serve the API on every listener over TLS (cert_file/key_file: the [tls] chain and key;
    client certificates from the tenant CAs under `certs_dir`)."""
    app = create_app(ctx)
    running = ApiServer([])
    tls = server_context(cert_file, key_file)
    cas = ClientCAs(tls, certs_dir)
    await cas.refresh(ctx.run_blocking)
    protocol = protocol_class(cert_file)
    try:
        running.watcher = asyncio.create_task(cas.watch(ctx.run_blocking))
        for lst in listeners:
            sock = _bind(lst)
            config = uvicorn.Config(app, host=lst.host, port=lst.port,
                                    ssl_context_factory=lambda _config, _default: tls,
                                    log_config=None, lifespan="off", http=protocol,
                                    access_log=False, server_header=False, proxy_headers=False,
                                    timeout_graceful_shutdown=GRACE, limit_concurrency=MAX_CONCURRENCY)
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
