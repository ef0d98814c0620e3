"""The generated reference pages of the docs site: CLI, config files and service API.

Each function returns one Markdown page made from the code itself (the click command tree of
``synister``, the pydantic models of the ``.ini`` files and of ``service.toml``, the service's
OpenAPI schema), so the pages cannot drift from ``--help`` or from the models.
``scripts/docs/gen_pages.py`` writes them into the site at build time (mkdocs-gen-files);
``tests/test_docs.py`` checks that they list every command, option and key.
"""

from __future__ import annotations

import html
import inspect
import re
import tempfile
import typing
from pathlib import Path

import typer

CLI_PAGE = "reference/cli.md"
CONFIG_PAGE = "reference/config.md"
SERVICE_API_PAGE = "reference/service-api.md"


# ---- Markdown helpers ------------------------------------------------------------------------


def text(value: str) -> str:
    """``value`` as inline Markdown: code spans kept, HTML and emphasis characters escaped
    outside them (help texts say ``<ID>``, ``setup_t0_p*``)."""
    value = re.sub(r":\w+:`~?([^`]*)`", r"`\1`", value.replace("``", "`"))  # reST roles
    parts = re.split(r"(`[^`]*`)", value)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part)
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]])", r"\\\1", part))
    return "".join(out)


def cell(value: str) -> str:
    """``value`` for a table cell: one line, pipes escaped."""
    return text(" ".join(value.split())).replace("|", "\\|")


def anchor(words: str) -> str:
    """The heading id the pages link to, e.g. ``synister db import`` -> ``synister-db-import``."""
    return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")


def paragraphs(help_text: str) -> list[str]:
    """A click help text as Markdown paragraphs; click's ``\\b`` paragraphs keep their lines."""
    blocks = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(help_text).split("\f")[0].strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            blocks.append("```text\n" + "\n".join(line.strip() for line in lines[1:]) + "\n```")
        elif block.strip():
            blocks.append(text(" ".join(block.split())))
    return blocks


# ---- the CLI ---------------------------------------------------------------------------------


def cli_root():
    """The click command of ``synister`` (typer's), as ``synister --help`` shows it."""
    from synister.cli import app

    return typer.main.get_command(app)


def cli_commands(root=None):
    """``(words, command, context)`` for every command and group of the tree that ``--help``
    lists (hidden ones left out), depth first in the order ``--help`` lists them."""
    root = root or cli_root()
    found = []

    def walk(command, ctx, words):
        found.append((words, command, ctx))
        for name, sub in getattr(command, "commands", {}).items():
            if sub.hidden:
                continue
            walk(sub, sub.context_class(sub, info_name=name, parent=ctx), [*words, name])

    walk(root, root.context_class(root, info_name="synister"), ["synister"])
    return found


def visible_params(command):
    """The arguments and options ``--help`` shows (``--help`` itself left out)."""
    return [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]


def _param_row(param, ctx) -> str:
    record = param.get_help_record(ctx)
    names, help_text = record if record else (param.name.upper(), "")
    return f"| `{names}` | {cell(help_text or '')} |"


def cli_reference() -> str:
    """The CLI reference page: every command with its usage, help and every option."""
    lines = [
        "# CLI reference",
        "",
        "Generated from the `synister` command itself when the site is built, so it says what",
        "`synister COMMAND --help` says. Options that take a list are repeated",
        "(`--nt gaba --nt acetylcholine`); positions and voxel sizes are x,y,z everywhere.",
        "",
    ]
    commands = cli_commands()
    index = [
        f"- [`{' '.join(words)}`](#{anchor(' '.join(words))})"
        + (f": {cell(command.short_help or '')}" if command.short_help else "")
        for words, command, _ in commands[1:]
    ]
    lines += ["## Commands", "", *index, ""]
    for words, command, ctx in commands:
        name = " ".join(words)
        level = "##" if len(words) <= 2 else "###"
        lines += [f"{level} {name} {{#{anchor(name)}}}", ""]
        lines += ["```text", command.get_usage(ctx).strip(), "```", ""]
        for block in paragraphs(command.help or ""):
            lines += [block, ""]
        params = visible_params(command)
        if params:
            lines += ["| argument or option | meaning |", "|---|---|"]
            lines += [_param_row(p, ctx) for p in params]
            lines.append("")
    return "\n".join(lines)


# ---- the .ini files and service.toml ------------------------------------------------------------


def type_text(annotation) -> str:
    """A field's type as a reader knows it (``int``, ``list[str]``, ``VGG | ResNet18``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(type_text(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field) -> str:
    marks = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                marks.append(f"{sign} {value}")
    return f" ({', '.join(marks)})" if marks else ""


def ini_models():
    """The typed configs of the setup folders' ``.ini`` files."""
    from synister.config import PredictConfig, TrainConfig, WorkerConfig

    return [TrainConfig, PredictConfig, WorkerConfig]


def _ini_default(field) -> str:
    from synister.config import value_to_text

    if field.is_required():
        return "required"
    if field.default is None and field.json_schema_extra is None and field.validate_default:
        return "one per level: 2"  # fmap_inc, n_convolutions: filled per downsample level
    return f"`{value_to_text(field.default)}`" if field.default not in ("", ()) else "empty"


def config_reference() -> str:
    """The config reference page: every key of the ``.ini`` files and of ``service.toml``."""
    lines = [
        "# Configuration files",
        "",
        "Generated from the typed configs (pydantic models) when the site is built. The `.ini`",
        "files keep the original synister format: lists as `gaba, acetylcholine`, shapes as",
        "`16, 160, 160`, downsample factors as `(1, 2, 2), (2, 2, 2)`, `None`, `True`/`False`.",
        "Relative paths are relative to BASE, the folder that holds the experiment folder.",
        "Shapes and voxel sizes in these files are z, y, x, as the original's files have",
        "them (the command line takes x,y,z). Any key can also be set at set-up time with",
        "`synister prepare-training --set KEY=VALUE`.",
        "",
    ]
    for model in ini_models():
        lines += [
            f"## {model.FILE_NAME} {{#{anchor(model.FILE_NAME)}}}",
            "",
            text(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")),
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, field in model.model_fields.items():
            kind = type_text(field.annotation) + _constraints(field)
            lines.append(
                f"| `{key}` | {kind} | {_ini_default(field)} | {cell(field.description or '')} |"
            )
        lines.append("")
    lines += service_config_reference()
    return "\n".join(lines)


def _comments(cls) -> dict[str, str]:
    """The ``#:`` comment above each field of ``cls``'s source."""
    found, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            found[match.group(1)] = " ".join(pending)
        pending = []
    return found


def _example_comments() -> dict[tuple[str, str], str]:
    """The comments of the example ``service.toml`` (``synister serve example-config``), by
    section kind and key."""
    from synister.serve.config import EXAMPLE

    found, section = {}, ""
    for line in EXAMPLE.splitlines():
        header = re.match(r"\s*\[([\w.]+)\]", line)
        if header:
            section = header.group(1).split(".")[0]
            continue
        match = re.match(r"\s*#?\s*(\w+)\s*=\s*[^#]*#\s*(.+)", line)
        if match:
            found[(section, match.group(1))] = match.group(2).strip()
    return found


#: Meanings of the service.toml keys that neither a ``#:`` comment nor the example explains.
SERVICE_MEANINGS = {
    ("service", "port"): "port to listen on",
    ("limits", "rows_per_job"): "rows (synapses) per uploaded table",
    ("limits", "file_types"): "table formats users may upload",
    ("bundles", "path"): "the bundle's folder (written by `synister export-model`)",
    ("bundles", "description"): "shown to users beside the name",
}


def toml_value(value) -> str:
    """``value`` as written in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return '"' + str(value) + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if value is None:
        return "not set"
    return str(value)


def service_sections():
    """``(table name, model)`` of each table of ``service.toml``."""
    from synister.serve.config import ServiceConfig

    sections = []
    for name, field in ServiceConfig.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            sections.append((f"{name}.NAME", typing.get_args(annotation)[1]))
        elif isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            sections.append((name, annotation))
    return sections


def service_config_reference() -> list[str]:
    examples = _example_comments()
    lines = [
        "## service.toml {#service-toml}",
        "",
        "The configuration of `synister serve` (`synister serve init` writes one, `synister",
        "serve example-config` prints an example). Relative paths are relative to the folder",
        "that holds the file.",
        "",
    ]
    for table, model in service_sections():
        comments = _comments(model)
        lines += [
            f"### [{table}]",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, field in model.model_fields.items():
            meaning = (
                comments.get(key)
                or examples.get((table.split(".")[0], key))
                or SERVICE_MEANINGS.get((table.split(".")[0], key), "")
            )
            default = "required" if field.is_required() else f"`{toml_value(field.default)}`"
            kind = type_text(field.annotation) + _constraints(field)
            lines.append(f"| `{key}` | {kind} | {cell(default)} | {cell(meaning)} |")
        lines.append("")
    return lines


# ---- the service's HTTP API --------------------------------------------------------------------


def service_openapi() -> dict:
    """The OpenAPI schema of the service's app (made on an empty service in a temporary
    folder; the running service serves the same at ``/api/openapi.json``)."""
    from synister.serve.app import create_app
    from synister.serve.config import ServiceConfig, ServiceSection

    with tempfile.TemporaryDirectory() as folder:
        section = ServiceSection(
            database=f"sqlite:///{Path(folder) / 'service.db'}", results=Path(folder)
        )
        app = create_app(ServiceConfig(service=section))
        schema = app.openapi()
        store = getattr(app.state, "store", None)
        if store is not None and hasattr(store, "close"):
            store.close()
    return schema


def service_routes(schema: dict) -> list[tuple[str, str, dict]]:
    """``(METHOD, path, operation)`` of every route in ``schema``."""
    return [
        (method.upper(), path, operation)
        for path, methods in schema.get("paths", {}).items()
        for method, operation in methods.items()
    ]


def service_api_reference() -> str:
    schema = service_openapi()
    info = schema.get("info", {})
    lines = [
        "# Service API",
        "",
        "Generated from the service's OpenAPI schema when the site is built; a running",
        "service serves the same schema at `/api/openapi.json` (with a token).",
        "",
        text(info.get("description", "")),
        "",
        "| method | path | what |",
        "|---|---|---|",
    ]
    schemas = schema.get("components", {}).get("schemas", {})
    routes = service_routes(schema)
    for method, path, operation in routes:
        lines.append(
            f"| {method} | [`{path}`](#{anchor(method + ' ' + path)}) | "
            f"{cell(_first_line(operation))} |"
        )
    lines.append("")
    for method, path, operation in routes:
        lines += [f"## {method} `{path}` {{#{anchor(method + ' ' + path)}}}", ""]
        description = operation.get("description") or operation.get("summary") or ""
        for block in paragraphs(description):
            lines += [block, ""]
        params = operation.get("parameters", [])
        if params:
            lines += ["| parameter | in | type | required | meaning |", "|---|---|---|---|---|"]
            for param in params:
                kind = _schema_type(param.get("schema", {}))
                lines.append(
                    f"| `{param['name']}` | {param.get('in', '')} | {cell(kind)} | "
                    f"{'yes' if param.get('required') else 'no'} | "
                    f"{cell(param.get('description', ''))} |"
                )
            lines.append("")
        body = operation.get("requestBody", {}).get("content", {})
        if body:
            lines += ["Request body: " + ", ".join(f"`{kind}`" for kind in body), ""]
        responses = operation.get("responses", {})
        if responses:
            lines += ["| status | meaning |", "|---|---|"]
            for status, response in responses.items():
                content = response.get("content", {}).get("application/json", {})
                returns = _schema_type(content.get("schema", {})) if content else ""
                returns = f" ([{returns}](#{anchor(returns)}))" if returns in schemas else ""
                lines.append(f"| {status} | {cell(response.get('description', ''))}{returns} |")
            lines.append("")
    lines += ["## Response and request bodies", ""]
    for name, body in schemas.items():
        lines += [f"### {name} {{#{anchor(name)}}}", ""]
        if body.get("description"):
            lines += [cell(body["description"]), ""]
        props = body.get("properties", {})
        if props:
            required = set(body.get("required", []))
            lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
            for field, spec in props.items():
                lines.append(
                    f"| `{field}` | {cell(_schema_type(spec))} | "
                    f"{'yes' if field in required else 'no'} | "
                    f"{cell(spec.get('description', spec.get('title', '')))} |"
                )
            lines.append("")
    return "\n".join(lines)


def _first_line(operation: dict) -> str:
    description = operation.get("description") or operation.get("summary") or ""
    return description.strip().split("\n\n")[0]


def _schema_type(schema: dict) -> str:
    if "anyOf" in schema:
        return " | ".join(_schema_type(s) for s in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    return kind


PAGES = {
    CLI_PAGE: cli_reference,
    CONFIG_PAGE: config_reference,
    SERVICE_API_PAGE: service_api_reference,
}
