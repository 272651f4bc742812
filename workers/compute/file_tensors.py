"""Tensors read straight from their files with numpy, by dtype, byte offset, shape and strides: no torch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Elements read at a time when scanning values, so a tensor of any size is held in memory a slice at a time.
SCAN_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ElementType:
    """How one dtype (named as safetensors names them) is laid out in memory."""

    itemsize: int
    numpy_code: str  # numpy has no bfloat16, so BF16 is read as its raw 16-bit patterns
    # A float is infinite or NaN exactly when all its exponent bits are ones; None for integers.
    exponent_mask: int | None = None


ELEMENT_TYPES: dict[str, ElementType] = {
    "F64": ElementType(8, "f8", 0x7FF0000000000000),
    "F32": ElementType(4, "f4", 0x7F800000),
    "F16": ElementType(2, "f2", 0x7C00),
    "BF16": ElementType(2, "u2", 0x7F80),
    "I64": ElementType(8, "i8"),
    "I32": ElementType(4, "i4"),
    "I16": ElementType(2, "i2"),
    "I8": ElementType(1, "i1"),
    "U8": ElementType(1, "u1"),
    "BOOL": ElementType(1, "b1"),
}


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides, in elements, of a dense tensor of this shape."""
    strides: list[int] = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class FileTensor:
    """A tensor inside a file: a storage of `storage_elements` elements starting at byte `storage_start`, and a
    view of it (offset, shape and strides in elements), as torch describes tensors."""

    path: Path
    dtype: str
    storage_start: int
    storage_elements: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    big_endian: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def fits_storage(self) -> bool:
        """Whether every element of the view lies inside the storage."""
        if len(self.strides) != len(self.shape) or min((*self.shape, *self.strides, self.offset), default=0) < 0:
            return False
        if self.numel == 0:
            return self.offset <= self.storage_elements
        last = self.offset + sum((size - 1) * stride for size, stride in zip(self.shape, self.strides, strict=True))
        return last < self.storage_elements

    def transposed(self) -> FileTensor:
        """The view with its dimensions reversed, as torch's .T: no element moves."""
        return replace(self, shape=self.shape[::-1], strides=self.strides[::-1])

    def expanded(self, size: int) -> FileTensor:
        """A one-element tensor repeated `size` times, as torch's expand: no element is copied."""
        if self.numel != 1:
            raise ValueError(f"only a one-element tensor can be expanded, not one of shape {list(self.shape)}")
        return replace(self, shape=(size,), strides=(0,))

    def array(self) -> npt.NDArray[Any]:
        """The elements as a numpy view of the file (copy-on-write, so the file never changes); BF16 as uint16 bits."""
        dtype = self._numpy_dtype(ELEMENT_TYPES[self.dtype].numpy_code)
        view = self._strided(dtype)
        return view.astype(dtype.newbyteorder("=")) if self.big_endian else view

    def nonfinite_count(self) -> int:
        """How many elements are NaN or infinite, read from their raw bits a chunk at a time; 0 for integers."""
        element = ELEMENT_TYPES[self.dtype]
        if element.exponent_mask is None or self.numel == 0:
            return 0
        mask = element.exponent_mask
        return sum(int(np.count_nonzero((bits & mask) == mask)) for bits in self._bit_chunks(element))

    def _numpy_dtype(self, code: str) -> np.dtype[Any]:
        return np.dtype(("<", ">")[self.big_endian] + code)

    def _bit_chunks(self, element: ElementType) -> Iterator[npt.NDArray[np.unsignedinteger[Any]]]:
        bits_dtype = self._numpy_dtype(f"u{element.itemsize}")
        if self._is_dense():
            yield from self._file_chunks(bits_dtype, self.storage_start + self.offset * element.itemsize, self.numel)
            return
        # A view that skips or repeats elements (rare in a state dict): its own elements only, a slice at a time.
        view = self._strided(bits_dtype)
        if view.ndim == 0:
            yield view.reshape(1)
            return
        rows = max(1, SCAN_CHUNK_ELEMENTS // max(1, self.numel // self.shape[0]))
        for first in range(0, self.shape[0], rows):
            yield np.ascontiguousarray(view[first : first + rows])

    def _strided(self, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        if self.numel == 0:
            return np.empty(self.shape, dtype=dtype)
        storage = np.memmap(self.path, dtype=dtype, mode="c", offset=self.storage_start,
                            shape=(self.storage_elements,))
        itemsize = dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            storage[self.offset :], shape=self.shape, strides=[stride * itemsize for stride in self.strides]
        )

    def _file_chunks(self, dtype: np.dtype[Any], start: int, count: int) -> Iterator[npt.NDArray[Any]]:
        with self.path.open("rb") as file:
            file.seek(start)
            while count > 0:
                chunk = np.fromfile(file, dtype=dtype, count=min(count, SCAN_CHUNK_ELEMENTS))
                if chunk.size == 0:
                    raise OSError(f"{self.path.name} ended before its tensor's last element")
                count -= chunk.size
                yield chunk

    def _is_dense(self) -> bool:
        """Whether the view covers `numel` consecutive elements once each, in whatever order (a transpose does)."""
        dims = sorted((stride, size) for size, stride in zip(self.shape, self.strides, strict=True) if size != 1)
        step = 1
        for stride, size in dims:
            if stride != step:
                return False
            step *= size
        return True
