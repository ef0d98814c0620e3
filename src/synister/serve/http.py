"""How uvicorn serves the app: h11 with bounds on what one connection may hold.

uvicorn bounds neither the time a client takes to send a request's headers nor (with
httptools) their size, so 300 slow connections hold 300 sockets and a 100 MB header is read
whole. Here the request line and headers may take ``[limits] header_bytes`` (h11 answers 400
beyond) and must arrive within ``header_seconds`` of the connection or of the previous
response, an idle connection closes after ``keep_alive_seconds``, and requests beyond
``connections`` open connections get 503. An upload that stalls gets 408 from the app
(``body_seconds``). X-Forwarded-For and X-Forwarded-Proto are believed only from
``[service] trusted_proxies``. What the app cannot do (TLS, connections per address, a cap on
connections before they are accepted) a reverse proxy does: see the nginx example in
``synister serve example-proxy``.
"""

from __future__ import annotations

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ServiceConfig

NGINX_EXAMPLE = """\
# nginx in front of `synister serve` (listening on 127.0.0.1:8000); in service.toml:
#   [service] trusted_proxies = ["127.0.0.1"]
limit_conn_zone $binary_remote_addr zone=synister_conn:10m;
limit_req_zone $binary_remote_addr zone=synister_req:10m rate=20r/s;

server {
    listen 443 ssl;
    server_name synister.lab.example;
    ssl_certificate     /etc/ssl/certs/synister.pem;
    ssl_certificate_key /etc/ssl/private/synister.key;

    client_max_body_size 100m;        # [limits] upload_bytes
    client_header_buffer_size 4k;
    large_client_header_buffers 4 16k;  # [limits] header_bytes
    client_header_timeout 10s;        # [limits] header_seconds
    client_body_timeout 30s;          # [limits] body_seconds
    keepalive_timeout 5s;             # [limits] keep_alive_seconds
    send_timeout 60s;
    limit_conn synister_conn 20;      # connections per client address
    limit_req zone=synister_req burst=40 nodelay;

    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_request_buffering off;  # uploads stream through (the service bounds them)
        proxy_read_timeout 300s;      # a table check may take [limits] check_seconds
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;  # replaces what the client sent
        proxy_set_header X-Forwarded-Proto $scheme;
    }
}
"""


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive within
    :attr:`header_seconds` (counted from the connection, then from each response)."""

    header_seconds = 10.0
    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_headers()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_seconds, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # no complete request line and headers in time


def uvicorn_config(app, config: ServiceConfig) -> uvicorn.Config:
    """The uvicorn settings of ``config``: address, the limits above, no access log (the app
    logs each request) and no ``Server`` header."""
    limits = config.limits
    protocol = type(
        "BoundedH11Protocol", (BoundedH11Protocol,), {"header_seconds": limits.header_seconds}
    )
    proxies = list(config.service.trusted_proxies)
    return uvicorn.Config(
        app,
        host=config.service.host,
        port=config.service.port,
        http=protocol,
        h11_max_incomplete_event_size=limits.header_bytes,
        timeout_keep_alive=limits.keep_alive_seconds,
        limit_concurrency=limits.connections,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or "",
        server_header=False,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
