"""The generated parts of docs/: the CLI reference (docs/cli.md) and the configuration reference (docs/config.md).

Both are written by cog from the code itself, so they cannot drift: every command's `--help` text, walked
from the click group, and every key of the Settings model with its type, default, bounds and description.
Regenerate both with `make docs` (cog -r -I docs docs/cli.md docs/config.md); tests/test_docs.py fails when
either is out of date.
"""

from __future__ import annotations

import datetime as dt
import json
import types
import typing

import annotated_types
import click
from pydantic import BaseModel

WIDTH = 100  # the group's max_content_width: what a terminal of 100 columns or more shows


# -- the CLI reference ------------------------------------------------------------------------------

def cli_markdown() -> str:
    """Every visible command's --help, the group's first, each under its own heading."""
    from digest.cli import cli

    root = click.Context(cli, info_name="digest", terminal_width=WIDTH, **cli.context_settings)
    parts = [_help_block("digest", cli, root)]
    for path, command, ctx in _commands(cli, root, ("digest",)):
        parts.append(_help_block(" ".join(path), command, ctx))
    return "\n".join(parts)


def _commands(group: click.Group, parent: click.Context, path: tuple[str, ...]):
    for name in sorted(group.list_commands(parent)):
        command = group.get_command(parent, name)
        if command is None or command.hidden:
            continue
        ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
        yield path + (name,), command, ctx
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, path + (name,))


def _help_block(title: str, command: click.Command, ctx: click.Context) -> str:
    level = "##" if title == "digest" else "###"
    text = command.get_help(ctx).rstrip()
    return f"{level} {title}\n\n```\n{text}\n```\n"


# -- the configuration reference --------------------------------------------------------------------

def config_markdown() -> str:
    """One table per TOML table of the configuration, walked from the Settings model."""
    from digest.config import Settings

    out = []
    for title, model, note in _tables(Settings, ()):
        out.append(f"## `[{title}]`\n")
        if note:
            out.append(f"{note}\n")
        out.append("| key | type | default | bounds | what it is |\n| --- | --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            if field.exclude or _model_of(field.annotation) is not None:
                continue  # not a key of the file, or a table of its own (below)
            out.append(_row(field.alias or name, field))
        out.append("")
    return "\n".join(out)


def _tables(model: type[BaseModel], path: tuple[str, ...]):
    """(heading, model, note) for the model and every table under it, depth first, in declaration order."""
    if path:
        yield ".".join(path), model, _first_line(model.__doc__)
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        nested = _model_of(field.annotation)
        if nested is None:
            continue
        if typing.get_origin(field.annotation) is dict:
            yield from _tables(nested, path + (name, "NAME"))
        else:
            yield from _tables(nested, path + (name,))


def _model_of(annotation) -> type[BaseModel] | None:
    """The model a table (or a dict of tables) holds; None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        return value if isinstance(value, type) and issubclass(value, BaseModel) else None
    return None


def _row(key: str, field) -> str:
    from digest.secrets import Secret

    if Secret in (typing.get_args(field.annotation) or (field.annotation,)):
        key = f"`{key}` / `{key}_env` / `{key}_file`"
        kind = "secret: inline, an environment variable's name, or a file (relative: in `$CREDENTIALS_DIRECTORY`)"
    else:
        key = f"`{key}`"
        kind = _type_name(field.annotation)
    default = "required" if field.is_required() else f"`{_toml(field.default)}`"
    if field.default is None and not field.is_required():
        default = "unset"
    cells = [key, kind, default, _bounds(field.metadata), (field.description or "").replace("|", "\\|")]
    return "| " + " | ".join(cells) + " |"


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names)
    if origin is list:
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return f"list of strings or {{{', '.join(inner.model_fields)}}} tables"
        return f"list of {_type_name(inner)}s"
    return {str: "string", int: "integer", float: "number", bool: "true or false", dt.date: "date"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(metadata: list) -> str:
    signs = {annotated_types.Ge: (">=", "ge"), annotated_types.Gt: (">", "gt"), annotated_types.Le: ("<=", "le"),
             annotated_types.Lt: ("<", "lt"), annotated_types.MinLen: ("length >=", "min_length")}
    parts = [f"{signs[type(m)][0]} {getattr(m, signs[type(m)][1])}" for m in metadata if type(m) in signs]
    return ", ".join(parts)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _first_line(doc: str | None) -> str:
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""
