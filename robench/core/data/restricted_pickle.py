"""A restricted unpickler that builds nothing but plain containers and numeric numpy arrays.

Used for the CIFAR batches (:mod:`robench.core.data.cifar`), which are Python
pickles (protocols 2 to 5; https://docs.python.org/3/library/pickle.html) of
untrusted origin. :class:`RestrictedUnpickler` resolves only the globals in
``_ALLOWED_GLOBALS``: the builtin containers, strings and numbers, the latin-1
``_codecs.encode`` that protocol 2 uses for ``bytes``, and stand-ins for
``numpy.ndarray``, ``numpy.dtype``, ``_reconstruct`` and ``_frombuffer`` that
rebuild an array from its raw bytes without numpy's own unpickling code. Only
bool, integer and float dtypes are accepted (no objects, records or
sub-arrays). Any other global (``os.system``, ``builtins.eval``, arbitrary
classes, ...) is refused before it is imported, so a malicious file cannot run
code.

An array comes back wrapped until its state is set; :func:`unwrap` turns such
a wrapper into the ``numpy.ndarray`` and leaves other values as they are.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray`` in a pickle; it is only ever an argument to ``_reconstruct``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError("numpy.ndarray may only appear as the type argument of _reconstruct")


_DTYPE_KINDS = frozenset("biuf")  # bool, signed, unsigned, float: plain numbers, no objects or records


def _plain_dtype(spec: object) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or len(spec) > 8:
        raise pickle.UnpicklingError(f"unsupported dtype specification {spec!r}")
    dtype = np.dtype(spec)
    if dtype.kind not in _DTYPE_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"unsupported dtype {dtype}")
    return dtype


class _PickledDtype:
    """A numpy dtype rebuilt from a pickle; only plain numeric types are accepted."""

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        self.dtype = _plain_dtype(spec)

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or any(item is not None for item in state[2:5]):
            raise pickle.UnpicklingError("unsupported dtype state (structured or sub-array dtype)")
        endian = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
        if endian in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(endian)
        elif endian not in ("|", "="):
            raise pickle.UnpicklingError(f"unsupported dtype byte order {endian!r}")


class _PickledArray:
    """A numpy array rebuilt from ``_reconstruct`` + ``__setstate__`` without numpy's own unpickling code."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, data)
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("unsupported ndarray state")
        shape, dtype, fortran, data = state
        if not isinstance(dtype, _PickledDtype) or not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError("unsupported ndarray state (only plain numeric arrays are allowed)")
        self.array = _array_from_bytes(data, dtype, shape, "F" if fortran else "C")


def _array_from_bytes(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if not isinstance(dtype, _PickledDtype) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("unsupported array data")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError(f"invalid array shape {shape!r}")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"invalid array order {order!r}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.dtype.itemsize != len(data):
        raise pickle.UnpicklingError(
            f"array of shape {shape} needs {count * dtype.dtype.itemsize} bytes, got {len(data)}"
        )
    return np.frombuffer(bytes(data), dtype=dtype.dtype).reshape(shape, order=order)


def _reconstruct(subtype: object, shape: object, dtype_spec: object) -> _PickledArray:
    if subtype is not _NdarrayMarker:
        raise pickle.UnpicklingError("_reconstruct may only build numpy.ndarray")
    return _PickledArray()


def _frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """Protocol-5 ndarray pickles: ``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``."""
    return _array_from_bytes(buffer, dtype, shape, order)


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    """Protocol-2 pickles written by Python 3 spell ``bytes`` as ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 strings")
    return text.encode("latin-1")


_PLAIN_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "bytes": bytes,
    "bytearray": bytearray,
    "str": str,
    "int": int,
    "float": float,
    "set": set,
    "frozenset": frozenset,
}

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, key): value for module in ("builtins", "__builtin__") for key, value in _PLAIN_BUILTINS.items()},
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _PickledDtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers, strings, numbers and numeric numpy arrays only.

    Any other global (``os.system``, ``builtins.eval``, arbitrary classes, ...)
    is refused before it is imported, so a malicious file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: object) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def unwrap(value: object) -> object:
    """The ``numpy.ndarray`` behind an unpickled array wrapper; any other value unchanged."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise pickle.UnpicklingError("ndarray without state")
        return value.array
    return value
