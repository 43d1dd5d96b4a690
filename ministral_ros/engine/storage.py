"""Where the KV cache lives: host memory or onnxruntime device memory, addressed by raw pointer.

Both caches (kv_cache.py, gqa_cache.py) allocate their buffers through a ``Storage`` and bind them
to the graph by pointer, so the same cache code runs on the CPU provider (``HostStorage``: numpy
arrays, memmove copies) and on a GPU provider (``DeviceStorage``: onnxruntime ``OrtValue``
allocations, copies by a one-node Identity graph, so nothing crosses to the host). ``alloc`` returns
``(pointer, owner)``: the owner keeps the memory alive and, for tests, exposes it (``numpy`` array, or
``OrtValue.numpy()`` where the device is the CPU).
"""
from __future__ import annotations

import ctypes
from typing import Protocol

import numpy as np


class Storage(Protocol):
    """The three operations a cache needs from its memory; ``device`` names it for IO binding."""

    device: str
    device_id: int

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, object]: ...

    def copy(self, dst: int, src: int, nbytes: int) -> None: ...

    def zero(self, dst: int, nbytes: int) -> None: ...


class HostStorage:
    """numpy buffers addressed by pointer; copies are memmoves."""

    device = 'cpu'
    device_id = 0

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, object]:
        array = np.zeros(shape, dtype=dtype)
        return array.ctypes.data, array

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes:
            ctypes.memmove(dst, src, nbytes)

    def zero(self, dst: int, nbytes: int) -> None:
        ctypes.memset(dst, 0, nbytes)


class DeviceStorage:
    """onnxruntime device allocations; copies run a one-node Identity graph through IO binding, so
    snapshot/restore stays on the device (no host round trip)."""

    def __init__(self, device: str, device_id: int, providers: list[str]) -> None:
        from onnx import helper, TensorProto
        import onnxruntime

        self.device, self.device_id = device, device_id
        graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'copy',
                                  [helper.make_tensor_value_info('x', TensorProto.UINT8, ['n'])],
                                  [helper.make_tensor_value_info('y', TensorProto.UINT8, ['n'])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
        model.ir_version = 8
        self._session = onnxruntime.InferenceSession(model.SerializeToString(), providers=providers)
        self._onnxruntime = onnxruntime

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, object]:
        value = self._onnxruntime.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype).type, self.device,
                                                                        self.device_id)
        return value.data_ptr(), value

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        if not nbytes:
            return
        binding = self._session.io_binding()
        binding.bind_input('x', self.device, self.device_id, np.uint8, [nbytes], src)
        binding.bind_output('y', self.device, self.device_id, np.uint8, [nbytes], dst)
        self._session.run_with_iobinding(binding)

    def zero(self, dst: int, nbytes: int) -> None:
        """Host zeros copied onto the device region (used once per buffer, at allocation)."""
        binding = self._session.io_binding()
        binding.bind_cpu_input('x', np.zeros(nbytes, np.uint8))
        binding.bind_output('y', self.device, self.device_id, np.uint8, [nbytes], dst)
        self._session.run_with_iobinding(binding)
