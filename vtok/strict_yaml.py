"""YAML as vtok reads it: ``safe_load`` that refuses duplicate keys, alias bombs and deep nesting.

PyYAML's ``safe_load`` lets a second ``train:`` block replace the first whole, and a
repeated key silently keep its last value; a preset written that way trains with
settings nobody wrote. :class:`StrictLoader` refuses both, naming the key and line.
Nesting is bounded before the parser recurses (an override 20,000 brackets deep
would otherwise end in ``RecursionError``).
"""

from __future__ import annotations

from typing import Any

import yaml

from vtok.errors import VtokError

MAX_DEPTH = 64  # a preset nests 4 or 5 levels


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings refuse a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' merges are YAML's own reuse, not a repeat
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if repeated:
                line = key_node.start_mark.line + 1
                raise VtokError(f"key {key!r} is given twice (line {line}); a repeated key would replace the first")
        return super().construct_mapping(node, deep=deep)


def _depth(text: str) -> int:
    """The deepest bracket nesting of flow collections in ``text`` (an upper bound; quotes are not parsed)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def strict_load(text: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; nesting deeper than :data:`MAX_DEPTH` is refused first."""
    if _depth(text) > MAX_DEPTH:
        raise VtokError(f"nests brackets more than {MAX_DEPTH} deep; a preset value nests a few levels")
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise VtokError("nests more than Python can parse; a preset value nests a few levels") from None
