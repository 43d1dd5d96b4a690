"""Append initializers to the external-data file one block at a time (the streaming export's output side).

``ExternalDataWriter.add`` takes a tensor as an iterable of row blocks, writes each block to
``model.onnx_data`` as it comes and returns a ``TensorProto`` that only REFERS to the bytes
(``data_location = EXTERNAL`` with location/offset/length), so the graph proto stays a few
megabytes whatever the model size and no tensor is ever held whole. Tensors start at 4 KiB
boundaries so onnxruntime can map them directly.

``MatMulWeights`` turns Hugging Face ``[out, in]`` Linear weights (one, or several fused along the
output axis, e.g. q/k/v) into the blocks of the ONNX MatMul operand ``[in, out]``: blocks of input
rows, each read as a column block of every part, transposed and concatenated, about
``BLOCK_ELEMENTS`` numbers at a time. The export's resident set is therefore bounded by one block
plus the mapping of the tensor being read, independent of the number of layers.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ministral_ros.export.checkpoint_reader import Checkpoint
import numpy as np
from onnx import helper, TensorProto

ALIGNMENT = 4096
BLOCK_ELEMENTS = 1 << 24  # 16M numbers: 64 MiB in float32 per block
ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
              np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32}


class ExternalDataWriter:
    """Appends tensors to one external-data file; see the module docstring. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, 'wb')
        self.offset = 0

    def __enter__(self) -> ExternalDataWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def add(self, name: str, dtype, dims: tuple[int, ...], blocks: Iterable[np.ndarray]) -> TensorProto:
        """Write ``blocks`` (row blocks of a C-ordered ``dims`` tensor, converted to ``dtype``) and return the
        initializer referring to them."""
        dtype = np.dtype(dtype)
        padding = -self.offset % ALIGNMENT
        if padding:
            self._handle.write(b'\0' * padding)
            self.offset += padding
        start, written = self.offset, 0
        for block in blocks:
            data = np.ascontiguousarray(block, dtype=dtype).tobytes()
            self._handle.write(data)
            written += len(data)
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if written != expected:
            raise RuntimeError(f'{name}: wrote {written} bytes for dims {dims} ({expected} expected)')
        self.offset += written
        tensor = TensorProto(name=name, data_type=ONNX_TYPES[dtype], dims=list(dims))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (('location', self.path.name), ('offset', str(start)), ('length', str(written))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def add_array(self, name: str, array: np.ndarray, dtype=None) -> TensorProto:
        array = np.asarray(array, dtype=dtype)
        return self.add(name, array.dtype, tuple(array.shape), [array])


def small_constant(name: str, array: np.ndarray) -> TensorProto:
    """An inline initializer for shapes, indices and the like (bytes, not weights)."""
    array = np.asarray(array)
    return helper.make_tensor(name, ONNX_TYPES[array.dtype], list(array.shape), array.ravel().tolist())


class MatMulWeights:
    """The MatMul operand ``[in, out]`` of Linear weights ``parts`` (HF ``[out_j, in]``, fused along out)."""

    def __init__(self, checkpoint: Checkpoint, parts: list[str]) -> None:
        self.checkpoint, self.parts = checkpoint, parts
        shapes = [checkpoint.shape(name) for name in parts]
        inputs = {shape[1] for shape in shapes}
        if len(inputs) != 1:
            raise ValueError(f'{parts} disagree on their input width: {shapes}')
        self.inputs = inputs.pop()
        self.outputs = sum(shape[0] for shape in shapes)

    @property
    def dims(self) -> tuple[int, int]:
        return self.inputs, self.outputs

    def blocks(self) -> Iterator[np.ndarray]:
        """Row blocks of ``[in, out]`` float32."""
        step = max(1, BLOCK_ELEMENTS // self.outputs)
        for start in range(0, self.inputs, step):
            columns = slice(start, min(start + step, self.inputs))
            yield np.concatenate([self.checkpoint.read(name, cols=columns).T for name in self.parts], axis=1)

    def output_rows(self) -> Iterator[np.ndarray]:
        """The HF ``[out, in]`` float32 weight (parts concatenated along out) in blocks of whole rows: what
        per-output-channel quantizers consume."""
        for name in self.parts:
            yield from self.checkpoint.row_blocks(name, BLOCK_ELEMENTS)
