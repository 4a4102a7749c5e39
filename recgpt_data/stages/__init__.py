"""The registered stages: one module per stage, named after it, each a thin adapter (its parameters,
the tables it reads and writes, the call into library code, its stats and drops).

:func:`get` finds a stage by name. The first call imports every module of this package and every
module an installed distribution names in the :data:`ENTRY_POINTS` entry-point group, so that a
plugin package adds a stage by registering it with :func:`recgpt_data.stage.stage` in a module it
declares there, for example in its ``pyproject.toml``::

    [project.entry-points."recgpt_data.stages"]
    my_stage = "my_package.my_stage"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Mapping

from recgpt_data.stage import REGISTRY, StageDef

ENTRY_POINTS = "recgpt_data.stages"


def builtin_modules() -> list[str]:
    """The module names of this package's stages, sorted."""
    return sorted(f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__) if not info.ispkg)


def load() -> Mapping[str, StageDef]:
    """Every stage of this package and of the installed plugins, by name (imports them once)."""
    for module in builtin_modules():
        importlib.import_module(module)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        entry.load()
    return REGISTRY


def get(name: str) -> StageDef:
    """The registered stage ``name``, with a clear error listing the known ones."""
    stages = REGISTRY if name in REGISTRY else load()
    try:
        return stages[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(stages))}") from None
