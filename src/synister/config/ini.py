"""The seed's ``.ini`` format: text <-> values, and reading and writing one config section.

Files keep the original synister format (``[Training]``, ``[Worker]``, ``[Predict]``; lists as
``gaba, acetylcholine``, shapes as ``16, 160, 160``, downsample factors as ``(1, 2, 2), (2, 2,
2)``, ``None``, ``True``/``False``). Errors name the file, section and key.
"""

from __future__ import annotations

import configparser
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from synister.files import write_text


class ConfigError(ValueError):
    """A config file or value is missing or malformed; the message names file, section and key."""


class ConfigWarning(UserWarning):
    """A config file holds a key synister does not know; it is ignored."""


# ---- text <-> value conversion (the seed's formats) ----------------------------------------------


class _ParseError(ValueError):
    """A value's text does not fit its type; carries the message without file/section/key."""


def _is_none(text: str) -> bool:
    return text.strip() in ("", "None")


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_ints(text: str, count: int | None) -> tuple[int, ...]:
    items = _split_list(text.replace("(", "").replace(")", ""))
    what = {None: "integers", 3: "three integers"}.get(count, f"{count} integers")
    try:
        values = tuple(int(item) for item in items)
    except ValueError:
        raise _ParseError(f"expected {what} separated by commas") from None
    if count is not None and len(values) != count:
        raise _ParseError(f"expected {what}")
    if not values:
        raise _ParseError(f"expected {what}, got none")
    return values


def _parse_factor_list(text: str) -> list[tuple[int, int, int]]:
    """``(1,2,2), (1, 2, 2), (2,2,2)``: one z,y,x triple per level."""
    groups = re.findall(r"\(([^()]*)\)", text)
    leftover = re.sub(r"\(([^()]*)\)", "", text).replace(",", "").strip()
    if not groups or leftover:
        raise _ParseError("expected triples like (1, 2, 2), (2, 2, 2)")
    return [_parse_ints(group, 3) for group in groups]  # type: ignore[misc]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise _ParseError("expected True or False")


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); other annotations -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def text_to_value(text: str, annotation: Any) -> Any:
    """Convert an ini value to the Python value of a field annotated ``annotation``."""
    inner, optional = _strip_optional(annotation)
    if optional and _is_none(text):
        return None
    if inner is str and _is_none(text):
        raise _ParseError("must be set")
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if inner is bool:
        return _parse_bool(text)
    if inner is int:
        try:
            return int(text.strip())
        except ValueError:
            raise _ParseError("expected an integer") from None
    if inner is float:
        try:
            return float(text.strip())
        except ValueError:
            raise _ParseError("expected a number") from None
    if origin is tuple and args and args[0] is int:
        count = None if (len(args) == 2 and args[1] is Ellipsis) else len(args)
        return _parse_ints(text, count)
    if origin is tuple and args and args[0] is str:
        return () if _is_none(text) else tuple(_split_list(text))
    if origin is list and args and typing.get_origin(args[0]) is tuple:
        return _parse_factor_list(text)
    if origin is list and args and args[0] is str:
        return _split_list(text)
    return text.strip()


def value_to_text(value: Any) -> str:
    """The seed's text for a value: ``a, b``; ``16, 160``; ``(1, 2, 2), (2, 2, 2)``; ``None``."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list | tuple):
        if not value:
            return "None"
        if isinstance(value[0], list | tuple):
            return ", ".join("(" + ", ".join(str(v) for v in item) + ")" for item in value)
        return ", ".join(str(v) for v in value)
    return str(value)


def _plain(value: Any) -> Any:
    """Tuples (nested too) as lists: the JSON form of a config value."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class _IniModel(BaseModel):
    """A config that lives in one section of one ini file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    SECTION: ClassVar[str]
    FILE_NAME: ClassVar[str]
    KEY_ORDER: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read(cls, path: str | Path):
        """Read ``path``; unknown keys warn, bad or missing values raise :class:`ConfigError`."""
        return read_ini(path, cls)

    def write(self, path: str | Path, header: str | None = None) -> None:
        write_ini(self, path, header)


# ---- reading and writing -------------------------------------------------------------------------


def _format_validation_error(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        key = str(item["loc"][0]) if item.get("loc") else None
        if key and message.startswith(f"{key}: "):
            message = message[len(key) + 2 :]
        elif key is None and ": " in message:
            key, message = message.split(": ", 1)
        if item.get("type") == "missing":
            message = "missing (required key)"
        got = item.get("input")
        show = item.get("loc") and item.get("type") != "missing" and not isinstance(got, dict)
        suffix = f", got {value_to_text(got)!r}" if show else ""
        lines.append(f"{where} {key or ''}: {message}{suffix}".replace(" :", ":"))
    return "; ".join(lines)


def build_config(cls, values: dict[str, Any], where: str):
    """Validate ``values`` (ini text or Python values) into ``cls``; errors name ``where`` + key."""
    converted = {}
    for key, value in values.items():
        field = cls.model_fields.get(key)
        if field is None:
            raise ConfigError(f"{where} {key}: unknown key; known: {', '.join(cls.model_fields)}")
        if isinstance(value, str):
            try:
                value = text_to_value(value, field.annotation)
            except _ParseError as exc:
                raise ConfigError(f"{where} {key}: {exc}, got {value!r}") from None
        converted[key] = value
    try:
        return cls(**converted)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where)) from None


def _open_ini(path: Path, what: str) -> configparser.ConfigParser:
    """The parsed ini file ``path`` (no interpolation); a missing or invalid file raises
    :class:`ConfigError` naming it as ``what`` ("config file", "db_credentials file")."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid ini file: {exc}") from None
    return parser


def read_ini(path: str | Path, cls):
    """Read section ``cls.SECTION`` of ``path`` into ``cls``; unknown keys warn and are ignored."""
    path = Path(path)
    parser = _open_ini(path, "config file")
    if not parser.has_section(cls.SECTION):
        found = ", ".join(parser.sections()) or "none"
        raise ConfigError(f"{path}: no [{cls.SECTION}] section (sections found: {found})")
    where = f"{path} [{cls.SECTION}]"
    values = {}
    for key, text in parser.items(cls.SECTION):
        if key in cls.model_fields:
            values[key] = text
        else:
            warnings.warn(f"{where} {key}: unknown key, ignored", ConfigWarning, stacklevel=3)
    return build_config(cls, values, where)


def _key_order(config: _IniModel) -> list[str]:
    first = [key for key in config.KEY_ORDER if key in type(config).model_fields]
    return first + [key for key in type(config).model_fields if key not in first]


def write_ini(config: _IniModel, path: str | Path, header: str | None = None) -> None:
    """Write ``config`` in the seed's format, each key after a comment saying what it means."""
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    if lines:
        lines.append("")
    lines.append(f"[{config.SECTION}]")
    for key in _key_order(config):
        description = type(config).model_fields[key].description
        if description:
            lines.append(f"# {description}")
        lines.append(f"{key} = {value_to_text(getattr(config, key))}")
    write_text(path, "\n".join(lines) + "\n")
