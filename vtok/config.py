"""Typed configuration: dataclasses beside each component, YAML presets, dotted overrides.

A *component spec* is a mapping ``{"name": <registered name>, **fields}``; the
fields are those of the registered class's ``Config`` dataclass. A dataclass field
that holds a nested component is declared with :func:`component`, naming the
registry kind it draws from. :func:`resolve` turns raw YAML into a complete,
type-checked tree (every default filled in), so what is saved in ``config.json``
rebuilds exactly the same object. Unknown keys, wrong types, non-finite numbers
and values outside a field's declared :class:`Range` raise
:class:`~vtok.errors.VtokError` naming the dotted key. The same ranges type the
CLI's flags (:func:`number_arg`), so a value is checked alike wherever it enters.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from vtok import registry
from vtok.errors import VtokError

# The ranges live in their own module; these names stay importable from here, where every part reads them.
from vtok.ranges import (  # noqa: F401
    AT_LEAST_1,
    DECAY,
    LEVEL,
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    UNIT,
    Range,
    check_range,
    check_ranges,
    fail,
    field_arg,
    number_arg,
    ranged,
)


def component(kind: str, default: Mapping[str, Any] | None = None, optional: bool = False) -> Any:
    """Declare a dataclass field holding a component spec of registry ``kind``."""
    meta = {"component": kind}
    if default is None and optional:
        return dataclasses.field(default=None, metadata=meta)
    if default is None:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)


_YAML_TRUE, _YAML_FALSE = ("yes", "on", "true", "y"), ("no", "off", "false", "n")


def _check_value(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it normalised (lists, floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own message says more than "expected X | None"
            return _check_value(options[0], value, where)
        for option in options:
            try:
                return _check_value(option, value, where)
            except VtokError:
                pass
        fail(where, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        # YAML 1.1 reads a bare no / yes / off / on as a bool; where the options are those words, take the word.
        if isinstance(value, bool):
            value = next((a for a in args if str(a).lower() in (_YAML_TRUE if value else _YAML_FALSE)), value)
        if value not in args:
            fail(where, f"expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            fail(where, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                fail(where, f"expected {len(args)} items, got {len(value)}")
            return [_check_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        item = args[0] if args else Any
        return [_check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            fail(where, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(where, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        # PyYAML reads "1e-4" (no dot) as a string: accept numeric strings here.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                fail(where, f"expected a number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            fail(where, f"expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail(where, f"expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            fail(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return resolve(tp, value, where)
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def resolve(cls: type, raw: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
    """Validate ``raw`` against dataclass ``cls`` and fill in every default.

    Args:
        cls: a dataclass type.
        raw: the user's mapping (from YAML or JSON); None means all defaults.
        where: dotted prefix used in error messages.

    Returns:
        A plain dict with every field of ``cls``; nested components and dataclasses
        are resolved the same way.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        fail(where or "<root>", f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{_join(where, close[0])}'?)" if close else ""
            raise VtokError(f"unknown config key '{_join(where, key)}'{hint}")
    out: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name in raw:
            value = raw[name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise VtokError(f"config key '{key}' is required")
        kind = f.metadata.get("component")
        if kind is not None:
            out[name] = None if value is None else resolve_component(kind, value, key)
        elif dataclasses.is_dataclass(hints[name]) and dataclasses.is_dataclass(value):
            out[name] = resolve(hints[name], dataclasses.asdict(value), key)
        else:
            out[name] = _check_value(hints[name], value, key)
            if "range" in f.metadata:
                check_range(f.metadata["range"], out[name], key)
    return out


def resolve_component(kind: str, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Resolve a component spec ``{"name": ..., **fields}`` of registry ``kind``."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise VtokError(
            f"config key '{where}' must be a mapping with a 'name' (one of: {', '.join(registry.names(kind))})"
        )
    try:
        cls = registry.lookup(kind, spec["name"])
    except VtokError as err:
        raise VtokError(f"config key '{where}.name': {err}") from None
    fields = {k: v for k, v in spec.items() if k != "name"}
    return {"name": spec["name"], **resolve(cls.Config, fields, where)}


def instantiate(cls: type, resolved: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from a resolved dict (nested dataclasses included)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = resolved[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, Mapping):
            value = instantiate(hints[f.name], value)
        elif isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def build_component(kind: str, spec: Mapping[str, Any], where: str = "") -> Any:
    """Instantiate the registered ``kind`` named in ``spec`` with its validated config."""
    resolved = resolve_component(kind, spec, where or kind)
    cls = registry.lookup(kind, resolved["name"])
    try:
        with warnings.catch_warnings(record=True) as caught:  # shown only once the part is built (below)
            warnings.simplefilter("always")
            obj = cls(instantiate(cls.Config, {k: v for k, v in resolved.items() if k != "name"}))
    except VtokError:
        raise
    except (ValueError, RuntimeError, ZeroDivisionError, IndexError, AssertionError) as err:
        # Values every field accepts alone can still be impossible together (a width no head count divides).
        reason = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise VtokError(f"config key '{where or kind}': cannot build {kind} {resolved['name']!r}: {reason}") from None
    if hasattr(obj, "named_parameters"):  # a torch module (config itself does not import torch)
        empty = next(((n, tuple(p.shape)) for n, p in obj.named_parameters() if p.numel() == 0), None)
        if empty is not None:
            raise VtokError(
                f"config key '{where or kind}': builds an empty layer ({empty[0]} has shape {empty[1]}); "
                "a width, channel count or size is 0"
            )
    for warning in caught:  # a part that built: its warnings are worth seeing (a refused one's were noise)
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return obj  # its ``spec`` (== resolved) was recorded by the registry's wrapper of __init__


def spec_of(cls: type, cfg: Any) -> dict[str, Any]:
    """The resolved spec ``{"name": ..., **fields}`` of registered ``cls`` built with ``cfg`` (None: defaults).

    Checked like a spec read from YAML, so what ``save_pretrained`` writes rebuilds the same object.
    """
    if cfg is None:
        fields: dict[str, Any] = {}
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        fields = dataclasses.asdict(cfg)
    elif isinstance(cfg, Mapping):
        fields = dict(cfg)
    else:
        raise VtokError(f"{cls.__name__} takes a {cls.__name__}.Config, got {type(cfg).__name__}")
    return resolve_component(cls.registry_kind, {"name": cls.registry_name, **fields}, cls.registry_kind)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


# --- files and overrides ------------------------------------------------------


MAX_YAML_BYTES = 1_000_000
MAX_YAML_VALUES = 100_000  # values after expanding aliases: a preset has a few hundred


def _count_values(node: Any, budget: int) -> int:
    """Values in ``node`` with aliases expanded, stopping as soon as ``budget`` is spent (so it stays cheap)."""
    stack, count = [node], 0
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` refusing alias bombs: shared nodes that expand past ``MAX_YAML_VALUES`` values."""
    from vtok.strict_yaml import strict_load

    data = strict_load(text)  # duplicate keys and deep nesting refused
    if _count_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise VtokError(f"expands to more than {MAX_YAML_VALUES} values (nested YAML aliases?)")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; one-line errors for missing or malformed files."""
    path = Path(path)
    from vtok.io import check_regular_file

    check_regular_file(path, "config file")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise VtokError(f"config file {path} is over {MAX_YAML_BYTES // 1000} kB; a preset is a few kB")
    try:
        data = safe_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise VtokError(f"config file {path} is not valid YAML{at}") from None
    except (UnicodeDecodeError, RecursionError):
        raise VtokError(f"config file {path} is not a YAML text file") from None
    except VtokError as err:
        raise VtokError(f"config file {path}: {err}") from None
    if not isinstance(data, dict):
        raise VtokError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value``; the value is read as YAML (``true``, ``[1, 2]``, ``null``)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise VtokError(f"override {text!r} must look like key.subkey=value")
    try:
        parsed = safe_yaml(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    except VtokError as err:
        raise VtokError(f"override {key}: {err}") from None
    return key.split("."), parsed


def apply_overrides(cls: type, raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted overrides to ``raw`` and return the resolved tree.

    A key must exist in the resolved tree (defaults included), so a typo fails
    naming the key instead of being silently ignored.
    """
    raw = _deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        current = resolve(cls, raw)
        node: Any = current
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                options = list(node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(k, options, n=1)
                hint = f" (did you mean '{'.'.join([*keys[:i], close[0]])}'?)" if close else ""
                raise VtokError(f"unknown config key '{'.'.join(keys[: i + 1])}'{hint}")
            node = node[k]
        target = raw
        for i, k in enumerate(keys[:-1]):
            if not isinstance(target.get(k), dict):
                target[k] = _deepcopy(_get(current, keys[: i + 1])) if k not in target else target[k]
            target = target[k]
        target[keys[-1]] = value
    return resolve(cls, raw)


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merge key by key, any other value replaces."""
    out = _deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = _deepcopy(value)
    return out


def _get(tree: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        tree = tree[k]
    return tree


def _deepcopy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _deepcopy(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_deepcopy(v) for v in tree]
    return tree
