"""The headers every response of the service carries: no framing by another site, no inline
script, no referrer, no content sniffing, and no caching of what the API answers.

The page (static/index.html) loads its script and style from ``/static``; it shows a job's
report in a sandboxed ``srcdoc`` frame, which inherits the page's policy, so the policy allows
inline *style* (the report's own CSS and its bars) and ``data:`` images (its histogram), never
inline script. A response with a policy of its own (the report, sandboxed) keeps it, with
``frame-ancestors 'none'`` added.
"""

from __future__ import annotations

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
FIXED = (
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
)
#: answers of these paths hold a user's data: never kept by a cache
PRIVATE_PREFIXES = ("/api/", "/metrics")


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(PRIVATE_PREFIXES)

        async def add_headers(message):
            if message["type"] == "http.response.start":
                replaced = _REPLACED | ({b"cache-control"} if private else set())
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in replaced
                ]
                own = [v for k, v in headers if k.lower() == b"content-security-policy"]
                headers = [(k, v) for k, v in headers if k.lower() != b"content-security-policy"]
                policy = own[0] + b"; frame-ancestors 'none'" if own else PAGE_POLICY.encode()
                headers += [*FIXED, (b"content-security-policy", policy)]
                if private:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)


_REPLACED = {k for k, _ in FIXED}
