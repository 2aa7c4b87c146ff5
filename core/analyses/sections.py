"""Analysis sections by name: a section is a name, the tables it returns, a version and the function computing
it; a registry holds one analysis's sections and runs one through the disk cache.

Every analysis with named sections (depth, Top-k order) declares its names and tables in its torch-free params
module (the command line checks ``--table`` against them before torch loads) and registers its compute functions
here, in a table rather than an if-chain. A cached run is keyed the same way for every analysis: the caller's
parts (model identity, inputs, parameters) plus the section's name and, when it has one, its version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from core.cache import cached, is_cached

if TYPE_CHECKING:
    import pandas as pd

Frames = dict[str, "pd.DataFrame"]  # a section's result: table name -> tidy frame


@dataclass(frozen=True)
class Section:
    """One section: ``compute(*args) -> frames`` named exactly ``tables``; ``version`` ("" = none) is part of
    its cache key, bumped when its maths or frames change."""

    name: str
    tables: tuple[str, ...]
    compute: Callable[..., Frames]
    version: str = ""


class SectionRegistry:
    """The sections of one analysis (``analysis`` names it in messages), cached under ``namespace``."""

    def __init__(self, analysis: str, namespace: str, sections: list[Section]) -> None:
        self.analysis = analysis
        self.namespace = namespace
        self._sections = {section.name: section for section in sections}

    @classmethod
    def declare(cls, analysis: str, namespace: str, tables: Mapping[str, tuple[str, ...]],
                compute: Mapping[str, Callable[..., Frames]], version: str = "") -> "SectionRegistry":
        """A registry from the declared ``tables`` (section -> its tables, in order) and one compute function per
        declared section, all of one ``version``."""
        if set(tables) != set(compute):
            raise ValueError(f"The {analysis} sections declared ({', '.join(tables)}) and computed "
                             f"({', '.join(compute)}) differ.")
        return cls(analysis, namespace, [Section(name, tuple(names), compute[name], version)
                                         for name, names in tables.items()])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._sections)

    @property
    def tables(self) -> dict[str, tuple[str, ...]]:
        return {name: section.tables for name, section in self._sections.items()}

    def get(self, name: str) -> Section:
        """Section ``name``; ValueError naming the sections there are."""
        if name not in self._sections:
            raise ValueError(f"Unknown {self.analysis} section {name!r}; choose from {', '.join(self._sections)}.")
        return self._sections[name]

    def compute(self, name: str, *args: Any, **kwargs: Any) -> Frames:
        """Section ``name`` computed now (no cache) -> its frames."""
        section = self.get(name)
        frames = section.compute(*args, **kwargs)
        assert tuple(frames) == section.tables, (name, tuple(frames), section.tables)
        return frames

    def cache_parts(self, name: str, key: Mapping[str, Any]) -> dict[str, Any]:
        """The disk-cache key parts of section ``name``: ``key`` plus the section's name and version (none when
        the version is "": sections whose keys predate versions keep their stored results)."""
        section = self.get(name)
        return {**key, "section": name, **({"version": section.version} if section.version else {})}

    def is_cached(self, name: str, key: Mapping[str, Any]) -> bool:
        """Whether :meth:`run` with this key would read its result from the disk cache."""
        return is_cached(self.namespace, **self.cache_parts(name, key))

    def run(self, name: str, key: Mapping[str, Any], *args: Any, **kwargs: Any) -> Frames:
        """:meth:`compute`, stored in the disk cache under this registry's namespace and :meth:`cache_parts`."""
        parts = self.cache_parts(name, key)
        return cached(self.namespace, lambda: self.compute(name, *args, **kwargs), **parts)
