"""Unpickling that runs no pickled code: plain containers and scalars only.

``pickle.load`` calls whatever a file names (``os.system`` included). :class:`PlainUnpickler`
refuses every global except ``set``/``frozenset`` and numpy's bool, integer and float scalars
(P5's split files hold ``numpy.int64`` index lists), which it decodes itself from their bytes
without importing numpy. A file that names anything else fails with one line and runs nothing.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

from recgpt_data.errors import UsageError

NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
STRUCT_CODES = {
    "b1": "?",
    "i1": "b",
    "i2": "h",
    "i4": "i",
    "i8": "q",
    "u1": "B",
    "u2": "H",
    "u4": "I",
    "u8": "Q",
    "f2": "e",
    "f4": "f",
    "f8": "d",
}


class UnsafePickle(Exception):
    """A pickle named a global that :class:`PlainUnpickler` does not build."""


class NumpyDtype:
    """A pickled numpy dtype, as far as decoding a scalar needs it: type code and byte order."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if code not in STRUCT_CODES:
            raise UnsafePickle(f"numpy dtype {code!r}")
        self.code, self.order = str(code), "<"

    def __setstate__(self, state: object) -> None:
        """numpy's dtype state tuple: (version, byte order, ...)."""
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.order = "<" if state[1] == "|" else state[1]


def numpy_scalar(dtype: object, data: object) -> bool | int | float:
    """A numpy integer, float or bool scalar as the Python value its bytes hold."""
    if not isinstance(dtype, NumpyDtype) or not isinstance(data, bytes):
        raise UnsafePickle("numpy scalar of an unknown dtype")
    code = dtype.order + STRUCT_CODES[dtype.code]
    if struct.calcsize(code) != len(data):
        raise UnsafePickle(f"numpy {dtype.code} scalar of {len(data)} bytes")
    return struct.unpack(code, data)[0]


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "dtype"): NumpyDtype,
    **{name: numpy_scalar for name in NUMPY_SCALAR},
}


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and scalars (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[module, name]
        raise UnsafePickle(f"{module}.{name}")


def load_plain_pickle(path: Path) -> Any:
    """The plain data pickled in ``path``; a one-line :class:`UsageError` for anything else."""
    try:
        with open(path, "rb") as stream:
            return PlainUnpickler(stream).load()
    except UnsafePickle as refused:
        raise UsageError(f"{path}: refused to unpickle {refused}: only plain containers and scalars are read") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as bad:
        raise UsageError(f"{path}: not a readable pickle ({type(bad).__name__}: {bad})") from None
