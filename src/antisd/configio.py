"""Typed command configs from YAML files and ``--key value`` flags, with every field's docstring in ``--help``.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags. Unknown keys are errors that name
the key, where it came from, and the closest known key. Configs are frozen: derived values go elsewhere.
"""

from __future__ import annotations

import argparse
import ast
import math
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable

import yaml


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right under a field) of a dataclass, by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of an annotation such as ``int``, ``float | None`` or ``Optional[str]``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def convert(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML or string value to the field type, with an error that says where it came from."""
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional or value is None and base is type(None):
            return None
        raise ValueError(f"{where}: None is not allowed (type {base.__name__})")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            converted = base(value)
            if base is float and not math.isfinite(converted):
                raise ValueError(f"{where}: {value!r} is not a finite number")
            return converted
        if base is dict or typing.get_origin(base) is dict:
            try:
                parsed = yaml.safe_load(value) if isinstance(value, str) else value
            except yaml.YAMLError:
                raise ValueError from None
            if not isinstance(parsed, dict):
                raise ValueError
            return parsed
        if dataclasses.is_dataclass(base):
            if isinstance(value, base):
                return value
            value = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise ValueError
            known = {f.name for f in dataclasses.fields(base)}
            for key in value:
                if key not in known:
                    raise _unknown(key, sorted(known), where)
            return base(**value)
        if typing.get_origin(base) is list or base is list:
            items = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
            inner = (typing.get_args(base) or (str,))[0]
            return [convert(v, inner, where) for v in items]
    except (TypeError, ValueError) as e:
        if e.args and str(e.args[0]).startswith(where):
            raise
        raise ValueError(f"{where}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def _unknown(key: str, known: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"{where}: unknown key {key!r}.{hint}")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or type(e).__name__})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of field: value")
    return data


def parse(
    cls: type,
    argv: list[str],
    prog: str,
    description: str,
    extra: dict[str, tuple[Any, str]] | None = None,
    combine: Callable[[dict, dict], dict] | None = None,
) -> Any:
    """Build ``cls`` from ``--config FILE`` and ``--field value`` flags.

    ``extra`` maps further flag names (e.g. ``antisd_*`` settings) to (type, help); the values given for them
    are passed, with the field values, to ``combine(values, extras) -> values``, which folds them into a field.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    docs = field_docs(cls)
    extra = extra or {}
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML file of field: value pairs (flags given here override it)")
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        parser.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar=_base_type(hints[name])[0].__name__.upper(), help=f"{docs.get(name, '')} (default: {default})".replace("%", "%%"))
    if extra:
        group = parser.add_argument_group("trainer fields (override the preset)")
        for name, (tp, help_text) in extra.items():
            group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
    args = vars(parser.parse_args(argv))

    values: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    config_path = args.pop("config", None)
    if config_path:
        for key, value in load_yaml(config_path).items():
            if key in fields:
                values[key] = convert(value, hints[key], f"{config_path}: {key}")
            elif key in extra:
                extras[key] = convert(value, extra[key][0], f"{config_path}: {key}")
            else:
                raise _unknown(key, sorted([*fields, *extra]), str(config_path))
    for key, value in args.items():
        if key in fields:
            values[key] = convert(value, hints[key], f"--{key}")
        else:
            extras[key] = convert(value, extra[key][0], f"--{key}")
    if combine is not None:
        values = combine(values, extras)
    return cls(**values)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
