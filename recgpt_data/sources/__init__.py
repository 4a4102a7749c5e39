"""The source formats RecGPT draws on, one module each, looked up by name.

A format is a module declaring ``SOURCE`` (a :class:`~recgpt_data.sources.base.Source`): this
package's modules named in :data:`FORMATS`, or a module an installed distribution names in the
:data:`ENTRY_POINTS` entry-point group, so that a plugin package adds a format, for example in its
``pyproject.toml``::

    [project.entry-points."recgpt_data.sources"]
    my_format = "my_package.my_format"
"""

from __future__ import annotations

import importlib
import importlib.metadata

from recgpt_data.errors import UsageError
from recgpt_data.sources.base import Source

FORMATS = (
    "amazon2014",
    "amazon2018",
    "amazon2023",
    "yelp",
    "movielens",
    "goodreads",
    "steam",
    "bookcrossing",
    "anime",
    "netflix",
    "foodcom",
    "hotelrec",
    "wikirec",
)

ENTRY_POINTS = "recgpt_data.sources"


def plugin_modules() -> dict[str, str]:
    """The formats installed distributions declare, by name: the module of each."""
    return {entry.name: entry.value for entry in importlib.metadata.entry_points(group=ENTRY_POINTS)}


def get_source(name: str) -> Source:
    """The :class:`Source` of format ``name``: ``recgpt_data.sources.<name>``, else a plugin's."""
    if name in FORMATS:
        return importlib.import_module(f"{__name__}.{name}").SOURCE
    plugins = plugin_modules()
    if name not in plugins:
        raise UsageError(f"unknown format {name!r}; known: {', '.join((*FORMATS, *sorted(plugins)))}")
    return importlib.import_module(plugins[name]).SOURCE
