"""Database URLs as they may be shown: without passwords.

Every message, log line and report that names a database goes through :func:`public_url`;
driver errors quoted in a message go through :func:`hide_secrets` as well, since a driver may
echo the URL it was given.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode

#: Query parameters that carry a secret (libpq's ``password``/``sslpassword``, pymongo's
#: ``tlsCertificateKeyFilePassword``, tokens in ``authMechanismProperties``).
_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)
HIDDEN = "***"


def _split(url: str) -> tuple[str, str, str, str]:
    """(scheme://, userinfo, rest of the authority and path, query) of a URL.

    The userinfo ends at the last ``@`` before the query, so a password with an unencoded
    ``@`` or ``/`` is still taken whole; a ``?`` before any ``/`` is taken as part of the
    password when an ``@`` follows it (failing safe: more is hidden, never less).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url, ""
    head, _, query = rest.partition("?")
    if "@" not in head and "/" not in head and "@" in query:
        head, query = rest, ""  # a '?' inside the password
        if "?" in head.rpartition("@")[2]:
            head, _, query = head.rpartition("@")[2].partition("?")
            head = rest.rpartition("@")[0] + "@" + head
    userinfo, at, host = head.rpartition("@")
    return scheme + sep, userinfo if at else "", host if at else head, query


def _secrets(url: str) -> list[str]:
    """The secret strings of ``url``, as written and percent-decoded, longest first."""
    _, userinfo, _, query = _split(url)
    found = {userinfo.split(":", 1)[1]} if ":" in userinfo else set()
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if eq and _SECRET_KEY.search(unquote(key)):
            found.add(value)
    found |= {unquote(s) for s in found} | {unquote_plus(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def public_url(url: str | None) -> str:
    """``url`` without its password, safe to print and to put into a report.

    Handles ``sqlite:///path`` (unchanged), ``postgresql://user:pw@host/db?password=pw`` and
    ``mongodb://`` / ``mongodb+srv://`` URLs with one or several hosts: the password leaves the
    user part and every secret query parameter is dropped.
    """
    if url is None:
        return "None"
    url = str(url)
    scheme, userinfo, host, query = _split(url)
    if not scheme:
        return url
    user = userinfo.split(":", 1)[0]
    pairs = parse_qsl(query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not _SECRET_KEY.search(k)]
    if len(kept) < len(pairs):
        query = urlencode(kept)
    return scheme + (f"{user}@" if userinfo else "") + host + (f"?{query}" if query else "")


def hide_secrets(text: str, url: str | None) -> str:
    """``text`` with every password of ``url`` replaced by ``***`` (for quoted driver errors)."""
    text = str(text)
    if not url:
        return text
    for secret in _secrets(str(url)):
        text = text.replace(secret, HIDDEN)
    return text
