"""Registries by name, with third-party plugins through entry points.

Every family that a scientist extends (methods, readers, converters, metrics) is a
:class:`Registry`: climai's own entries, plus the entry points that installed packages declare in
the family's group, e.g. in a plugin's ``pyproject.toml``::

    [project.entry-points."climai.metrics"]
    fss = "my_package.metrics:fss"

Plugins are listed without importing them and loaded on first use, one by one, so a broken or
heavy plugin costs nothing until it is named. An unknown name gets an error listing every valid
name, plugins included. This module imports nothing heavy (the Snakefile reads it at parse time).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")

GROUPS = {
    "method": "climai.methods",
    "reader": "climai.readers",
    "converter": "climai.converters",
    "metric": "climai.metrics",
}
"""Entry-point group of each family."""

_SHADOWED: set[tuple[str, str, str]] = set()
"""Plugins named like a built-in entry, warned about once per process."""


def plugin_names(family: str) -> list[str]:
    """Names of the installed plugins of ``family`` (sorted), without loading them."""
    return sorted({ep.name for ep in entry_points(group=GROUPS[family])})


def unbindable(func: Callable[..., object], nargs: int) -> str | None:
    """``func``'s signature (text) when it cannot be called with ``nargs`` positional arguments,
    the way climai calls a plugin's function; ``None`` when it can, or when it has no signature
    to inspect (a builtin: trusted)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*[None] * nargs)
    except TypeError:
        return str(sig)
    return None


class PluginError(KeyError, ValueError):
    """An unknown name, or a plugin that cannot be loaded; the message names it and what is valid.

    A ``KeyError`` (a failed lookup) and a ``ValueError`` (what the CLI reports as a user error).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Names → objects of one family: built-in entries first, then installed plugins.

    ``builtins`` is a mapping, or a function returning one (called once, on first use, so that a
    registry can be declared before the modules that fill it are imported). ``check`` turns a
    loaded plugin object into the family's type (or raises ``TypeError`` saying what is wrong).
    """

    def __init__(
        self,
        family: str,
        builtins: dict[str, T] | Callable[[], dict[str, T]],
        check: Callable[[str, object], T] | None = None,
    ) -> None:
        self.family = family
        self.group = GROUPS[family]
        self._builtins_source = builtins
        self._builtins: dict[str, T] | None = None
        self._check = check
        self._loaded: dict[str, T] = {}
        self._extra: dict[str, T] = {}

    # ------------------------------------------------------------------ listing

    @property
    def builtins(self) -> dict[str, T]:
        """climai's own entries (and those added with :meth:`register`)."""
        if self._builtins is None:
            src = self._builtins_source
            self._builtins = src() if callable(src) else src
        return {**self._builtins, **self._extra}

    def plugin_entry_points(self) -> dict[str, EntryPoint]:
        """Installed plugins of this family by name (not loaded); a built-in name wins."""
        own, out = self.builtins, {}
        for ep in entry_points(group=self.group):
            if ep.name not in own:
                out[ep.name] = ep
            elif (self.group, ep.name, ep.value) not in _SHADOWED:
                _SHADOWED.add((self.group, ep.name, ep.value))
                warnings.warn(
                    f"{self.family} plugin {ep.name!r} (entry point {ep.value!r} in group "
                    f"{self.group!r}) is not used: climai's own {self.family} {ep.name!r} has "
                    "that name; rename the entry point",
                    stacklevel=2,
                )
        return out

    def names(self) -> list[str]:
        """Every valid name: built-in ones in registry order, then plugins sorted by name."""
        return [*self.builtins, *sorted(self.plugin_entry_points())]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.builtins or name in self._plugin(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def _plugin(self, name: str) -> dict[str, EntryPoint]:
        return {n: ep for n, ep in self.plugin_entry_points().items() if n == name}

    # ------------------------------------------------------------------ lookup

    def get(self, name: str) -> T:
        """The entry called ``name``; loads a plugin on first use."""
        own = self.builtins
        if name in own:
            return own[name]
        if name in self._loaded:
            return self._loaded[name]
        eps = self._plugin(name)
        if not eps:
            raise PluginError(self.unknown_message(name))
        ep = eps[name]
        where = f"{self.family} plugin {name!r} (entry point {ep.value!r} in group {self.group!r})"
        try:
            obj = ep.load()
        except Exception as err:  # any import-time failure of third-party code: name the plugin
            raise PluginError(f"{where} cannot be loaded: {type(err).__name__}: {err}") from err
        if self._check is not None:
            try:
                obj = self._check(name, obj)
            except TypeError as err:
                raise PluginError(f"{where} is not a valid {self.family}: {err}") from None
        self._loaded[name] = obj  # type: ignore[assignment]
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        """``unknown <family> 'x'; valid <family>s: a, b, c`` (plugins included)."""
        return f"unknown {self.family} {name!r}; valid {self.family}s: {', '.join(self.names())}"

    def register(self, name: str, obj: T) -> T:
        """Add an entry in-process (tests, notebooks); entry points are the way for packages."""
        self.builtins  # noqa: B018 - fill the built-ins first so that the new entry is kept
        self._extra[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry added with :meth:`register`, and forget a loaded plugin."""
        self._extra.pop(name, None)
        self._loaded.pop(name, None)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"
