"""Database URLs of a config: ``db_url`` with ``db_name_data``, or the original's MongoDB
credentials file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote_plus

from .ini import ConfigError, _open_ini


def url_with_database(url: str, db_name: str | None, where: str = "") -> str:
    """``url`` with database ``db_name`` filled in where it names none; a URL that names
    another database raises :class:`ConfigError` (the message never shows the URL, which may
    hold a password)."""
    from urllib.parse import urlsplit, urlunsplit

    if not db_name:
        return url
    prefix = f"{where} db_name_data".strip()
    if url.startswith("sqlite:"):
        file = url.split(":///", 1)[-1]
        named = Path(file).stem
        if named != db_name:
            raise ConfigError(
                f"{prefix}: {db_name!r} disagrees with the SQLite file {file} (its name, "
                f"{named!r}, is the database's); set db_name_data = None or {named}"
            )
        return url
    parts = urlsplit(url)
    named = parts.path.lstrip("/")
    if not named:
        return urlunsplit(parts._replace(path="/" + db_name))
    if named != db_name:
        raise ConfigError(
            f"{prefix}: {db_name!r} disagrees with the database {named!r} that db_url names; "
            "make them agree, or set db_name_data = None"
        )
    return url


def mongo_url_from_credentials(credentials_file: str | Path, db_name: str | None = None) -> str:
    """The original's credentials ini (``[Credentials]`` user/password/host/port, optional
    ``[Connection]`` is_srv/options) as a ``mongodb://`` (or ``mongodb+srv://``) URL."""
    path = Path(credentials_file).expanduser()
    parser = _open_ini(path, "db_credentials file")
    if not parser.has_section("Credentials"):
        raise ConfigError(f"{path}: no [Credentials] section")
    values = {}
    for key in ("user", "password", "host", "port"):
        if not parser.has_option("Credentials", key):
            raise ConfigError(f"{path} [Credentials] {key}: missing (required key)")
        values[key] = parser.get("Credentials", key).strip()
    is_srv = parser.get("Connection", "is_srv", fallback="False").strip().lower() == "true"
    options = parser.get("Connection", "options", fallback="").strip()
    auth = f"{quote_plus(values['user'])}:{quote_plus(values['password'])}@"
    if is_srv:
        url = f"mongodb+srv://{auth}{values['host']}/{db_name or ''}"
    else:
        if not values["port"].isdigit():
            raise ConfigError(
                f"{path} [Credentials] port: expected a port number, got {values['port']!r}"
            )
        url = f"mongodb://{auth}{values['host']}:{values['port']}/{db_name or ''}"
    return f"{url}?{options}" if options else url
