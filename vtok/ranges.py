"""Numeric ranges: declared on config fields, checked alike wherever a value enters.

Every int or float field of a config dataclass is declared with :func:`ranged`, so
:func:`vtok.config.resolve` (YAML, JSON, overrides), :func:`check_ranges` (objects
built in code) and the CLI's flags (:func:`number_arg`, :func:`field_arg`) refuse
the same values with the same one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Any

from vtok.errors import VtokError


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a numeric value must lie in; an open end (``low_open``) excludes the bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None when it is in."""
        if not isinstance(value, int) and not math.isfinite(value):  # ints compare exactly, however large
            return f"must be a finite number, got {value}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self}, got {value}" if below or above else None

    def __str__(self) -> str:
        if self.high is None:
            return f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        if self.low is None:
            return f"{'less than' if self.high_open else 'at most'} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)
AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
UNIT = Range(0, 1)  # shares, ratios, dropout probabilities
DECAY = Range(0, 1, high_open=True)  # EMA decays, Adam betas
SHARE = Range(0, 1, low_open=True)  # a share that must keep something: crop sides, top-p
# A level of a CNN counted from the highest resolution; negative ones count from the lowest (Python's indexing).
# Checked against the actual number of levels when the network is built; the bound only refuses nonsense early.
LEVEL = Range(-16, 15)


def ranged(default: Any, valid: Range) -> Any:
    """Declare a numeric dataclass field (or a list of numbers) whose values must lie in ``valid``."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"range": valid})
    return dataclasses.field(default=default, metadata={"range": valid})


def number_arg(kind: type, valid: Range) -> typing.Callable[[str], Any]:
    """An argparse ``type`` reading an int or float that must lie in ``valid``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        problem = valid.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def field_arg(cls: type, name: str) -> typing.Callable[[str], Any]:
    """The argparse ``type`` of a CLI flag that sets field ``name`` of dataclass ``cls``: its type and range."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = typing.get_type_hints(cls)[name]
    return number_arg(kind, f.metadata.get("range", Range()))


def check_ranges(obj: Any, where: str) -> None:
    """Check every ranged field of dataclass instance ``obj`` (for objects built in code, not from YAML)."""
    for f in dataclasses.fields(obj):
        if "range" in f.metadata:
            check_range(f.metadata["range"], getattr(obj, f.name), f"{where}.{f.name}")


def check_range(valid: Range, value: Any, where: str) -> None:
    """Check a number, or every number of a (nested) list, against ``valid``; None passes."""
    if isinstance(value, list | tuple):
        for v in value:
            check_range(valid, v, where)
        return
    problem = None if value is None else valid.problem(value)
    if problem:
        fail(where, problem)


def fail(where: str, message: str) -> typing.NoReturn:
    """Raise the one-line error of a bad config value at dotted key ``where``."""
    raise VtokError(f"config key '{where}': {message}")
