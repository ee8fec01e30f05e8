"""A small explicit registry for swappable backends: names are checked unique at registration and
an unknown name gives an error listing the known ones."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Backends of one kind (`kind` names it in errors), keyed by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        """Add `entry` under `name`; a name registered twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry registered under `name`."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ValueError(f"no {self.kind} named {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)
