"""Moving pipeline results between processes as plain JSON: `to_data` is `dataclasses.asdict`,
`from_data` rebuilds a frozen dataclass (nested dataclasses, tuples, optionals, dicts) from that
data using the class's own type hints, so no type needs custom serialisation code."""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def to_data(value: Any) -> Any:
    """A dataclass instance as JSON-ready data (other values are returned as they are)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _build(kind: Any, data: Any) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = _hints(kind)
        return kind(**{f.name: _build(hints[f.name], data[f.name])
                       for f in dataclasses.fields(kind) if f.init and f.name in data})
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        if data is None:
            return None
        (inner, *rest) = [a for a in get_args(kind) if a is not type(None)]
        return _build(inner, data) if not rest else data
    if origin is tuple:
        args = get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], item) for item in data)
        return tuple(_build(a, item) for a, item in zip(args, data, strict=True))
    if origin is list:
        return [_build(get_args(kind)[0], item) for item in data]
    if origin is dict:
        return {key: _build(get_args(kind)[1], item) for key, item in data.items()}
    if kind is float and isinstance(data, int):
        return float(data)
    return data


def from_data(cls: type[T], data: Any) -> T:
    """Rebuild an instance of dataclass `cls` from `to_data` output (after a JSON round trip)."""
    return typing.cast(T, _build(cls, data))
