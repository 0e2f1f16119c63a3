"""Typed command configs from YAML files and ``--key value`` flags, with every field's docstring in ``--help``.

Precedence: dataclass defaults < ``--config FILE.yaml`` < command-line flags. Unknown keys are errors that name
the key, where it came from, and the closest known key. Configs are frozen: derived values go elsewhere.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ValueError(f"{path}: not valid YAML{where} ({problem})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of field: value")
    return data


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad flag raises ValueError (the CLI prints it on one line) instead of
    printing the whole usage text."""

    def error(self, message: str):
        known = [a for action in self._actions for a in action.option_strings if a.startswith("--")]
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flag = unknown.group(1).split("=")[0]
            close = difflib.get_close_matches(flag, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; `{self.prog} --help` lists them"
            raise ValueError(f"{self.prog} has no option {flag}{hint}")
        needs = re.match(r"argument (--\S+): expected one argument", message)
        if needs:
            raise ValueError(f"{self.prog}: {needs.group(1)} needs a value")
        raise ValueError(f"{self.prog}: {message}")


_NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--lr -1e-4`` → ``--lr=-1e-4``: argparse takes a negative number in exponent form for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i].startswith("--") and "=" not in argv[i] and i + 1 < len(argv) and _NEGATIVE_NUMBER.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def parse_values(
    cls: type,
    argv: list[str],
    prog: str,
    description: str,
    extra: dict[str, tuple[Any, str]] | None = None,
) -> tuple[dict, dict]:
    """The values given for ``cls`` by ``--config FILE`` and ``--field value`` flags, converted to the field types:
    ({field: value}, {extra flag: value}). Fields not given are absent (the dataclass default applies).

    ``extra`` maps further flag names (e.g. ``antisd_*`` settings) to (type, help).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    docs = field_docs(cls)
    extra = extra or {}
    parser = _Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("--config", help="YAML file of field: value pairs (flags given here override it)")
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        parser.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar=_base_type(hints[name])[0].__name__.upper(), help=f"{docs.get(name, '')} (default: {default})".replace("%", "%%"))
    if extra:
        group = parser.add_argument_group("trainer fields (override the preset)")
        for name, (tp, help_text) in extra.items():
            group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
    renamed = getattr(cls, "RENAMED_OPTIONS", {})  # old option names, refused with the new one
    for arg in argv:
        old = arg[2:].split("=")[0] if arg.startswith("--") else None
        if old in renamed:
            raise ValueError(f"{prog}: --{old} was renamed --{renamed[old]}")
    args = vars(parser.parse_args(_join_negative_values(argv)))

    values: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    config_path = args.pop("config", None)
    if config_path:
        for key, value in load_yaml(config_path).items():
            if key in fields:
                values[key] = convert(value, hints[key], f"{config_path}: {key}")
            elif key in extra:
                extras[key] = convert(value, extra[key][0], f"{config_path}: {key}")
            elif key in renamed:
                raise ValueError(f"{config_path}: {key} was renamed {renamed[key]}")
            else:
                raise _unknown(str(key), sorted([*fields, *extra]), str(config_path))
    for key, value in args.items():
        if key in fields:
            values[key] = convert(value, hints[key], f"--{key}")
        else:
            extras[key] = convert(value, extra[key][0], f"--{key}")
    return values, extras


def parse(
    cls: type,
    argv: list[str],
    prog: str,
    description: str,
    extra: dict[str, tuple[Any, str]] | None = None,
    combine: Callable[[dict, dict], dict] | None = None,
) -> Any:
    """Build ``cls`` from ``--config FILE`` and ``--field value`` flags (:func:`parse_values`); the ``extra``
    values are passed, with the field values, to ``combine(values, extras) -> values``, which folds them in."""
    values, extras = parse_values(cls, argv, prog, description, extra)
    if combine is not None:
        values = combine(values, extras)
    return cls(**values)


# --- checks every command config runs in __post_init__ (one line naming the option, the value and the rule) -----


def check_at_least(cfg: Any, bounds: dict[str, int | float]) -> None:
    for name, low in bounds.items():
        if getattr(cfg, name) < low:
            raise ValueError(f"--{name} must be ≥ {low}, got {getattr(cfg, name)}")


def check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name} must be a finite number > 0, got {value}")


def check_between(cfg: Any, bounds: dict[str, tuple[float, float]]) -> None:
    """Each field in [low, high] (both ends allowed)."""
    for name, (low, high) in bounds.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"--{name} must be in [{low}, {high}], got {value}")


def check_choice(cfg: Any, choices: dict[str, tuple[str, ...]]) -> None:
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--{name} must be one of {list(allowed)}, got {value!r}{hint}")


def check_nonempty(cfg: Any, names: tuple[str, ...]) -> None:
    """Text fields that must name something (an empty output directory would mean the working directory)."""
    for name in names:
        if not str(getattr(cfg, name)).strip():
            raise ValueError(f"--{name} is empty")


SEED_LIMIT = 2**32  # numpy's and TRL's seeding take 32-bit seeds


def check_seed(cfg: Any, name: str = "seed") -> None:
    value = getattr(cfg, name)
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"--{name} must be in [0, 2^32 − 1], got {value}")


def check_output_dir(path: str | Path, flag: str) -> None:
    """An output directory that can be made: it is a directory or does not exist yet, and its nearest existing
    ancestor is a writable directory (not a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory")
    _check_ancestors(path, flag, path)


def check_output_file(path: str | Path, flag: str) -> None:
    """An output file that can be written: not a directory, in a directory that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name, e.g. {path / 'check.json'}")
    _check_ancestors(path.parent, flag, path)


def _check_ancestors(path: Path, flag: str, given: Path) -> None:
    """The nearest existing one of ``path`` and its parents is a writable directory."""
    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"{flag} {given}: {ancestor} is a file, so nothing can be written under it")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {given}: {ancestor} is not writable")
            return


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
