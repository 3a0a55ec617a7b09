"""Write PyTorch checkpoint files (`torch.save`'s zip format) without torch.

The tests use it to make the originals' checkpoints; the files load with `torch.load` (also
with weights_only=True) and with `torch_format.load`. The layout, as torch writes it:

    <name>/data.pkl      protocol-2 pickle of the object; each tensor is
                         _rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
                         backward_hooks) and each storage a persistent id
                         ('storage', torch.<Type>Storage, key, location, numel)
    <name>/byteorder     'little'
    <name>/data/<key>    the raw bytes of storage <key> (numel * element size)
    <name>/version       '3\\n'

Entries are stored uncompressed, their data aligned to 64 bytes (an extra field 'FB' of
padding in the local header, as torch does).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from ugatit_tf.convert.torch_format import STORAGE_DTYPES

__all__ = ["save"]

_DTYPE_TO_STORAGE = {np.dtype(v): k for k, v in STORAGE_DTYPES.items() if k != "BFloat16Storage"}
_ALIGN = 64


class _PickleWriter:
    """A protocol-2 pickle emitter for the few types a checkpoint holds: dict, OrderedDict,
    list, tuple, str, int, float, bool, None and numpy arrays (written as torch tensors)."""

    def __init__(self):
        self.out = io.BytesIO()
        self.storages = []  # (key, bytes, storage type name, numel)

    def w(self, b):
        self.out.write(b)

    def dump(self, obj):
        self.w(b"\x80\x02")  # PROTO 2
        self.save(obj)
        self.w(b".")  # STOP
        return self.out.getvalue()

    def glob(self, module, name):
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")  # GLOBAL

    def save(self, obj):
        if obj is None:
            self.w(b"N")
        elif obj is True:
            self.w(b"\x88")
        elif obj is False:
            self.w(b"\x89")
        elif isinstance(obj, (int, np.integer)):
            self.save_int(int(obj))
        elif isinstance(obj, (float, np.floating)):
            self.w(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            data = obj.encode("utf-8")
            self.w(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(obj, tuple):
            self.save_tuple(obj)
        elif isinstance(obj, list):
            self.w(b"]")  # EMPTY_LIST
            if obj:
                self.w(b"(")
                for item in obj:
                    self.save(item)
                self.w(b"e")  # APPENDS
        elif isinstance(obj, OrderedDict):
            self.glob("collections", "OrderedDict")
            self.w(b")R")  # EMPTY_TUPLE, REDUCE
            self.save_items(obj)
        elif isinstance(obj, dict):
            self.w(b"}")
            self.save_items(obj)
        elif isinstance(obj, np.ndarray):
            self.save_tensor(obj)
        else:
            raise TypeError(f"cannot write {type(obj).__name__} to a torch checkpoint")

    def save_int(self, value):
        if 0 <= value < 256:
            self.w(b"K" + bytes([value]))
        elif 0 <= value < 65536:
            self.w(b"M" + struct.pack("<H", value))
        elif -2 ** 31 <= value < 2 ** 31:
            self.w(b"J" + struct.pack("<i", value))
        else:
            n = (value.bit_length() + 8) // 8
            self.w(b"\x8a" + bytes([n]) + value.to_bytes(n, "little", signed=True))  # LONG1

    def save_tuple(self, items):
        if not items:
            self.w(b")")
            return
        if len(items) <= 3:
            for item in items:
                self.save(item)
            self.w({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(items)])
            return
        self.w(b"(")
        for item in items:
            self.save(item)
        self.w(b"t")

    def save_items(self, mapping):
        if not mapping:
            return
        self.w(b"(")
        for key, value in mapping.items():
            self.save(key)
            self.save(value)
        self.w(b"u")  # SETITEMS

    def save_tensor(self, array):
        dtype = array.dtype
        storage_type = _DTYPE_TO_STORAGE.get(np.dtype(dtype))
        if storage_type is None:
            raise TypeError(f"no torch storage type for numpy dtype {dtype}")
        array = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d 1-d)
        key = str(len(self.storages))
        self.storages.append((key, array.astype(dtype.newbyteorder("<")).tobytes(),
                              storage_type, array.size))
        stride, step = [], 1
        for n in reversed(array.shape):
            stride.append(step)
            step *= n
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.w(b"(")  # MARK for the argument tuple
        # persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel)
        self.w(b"(")
        self.save("storage")
        self.glob("torch", storage_type)
        self.save(key)
        self.save("cpu")
        self.save(int(array.size))
        self.w(b"tQ")  # TUPLE, BINPERSID
        self.save(0)  # storage offset
        self.save_tuple(tuple(int(n) for n in array.shape))
        self.save_tuple(tuple(reversed(stride)))
        self.w(b"\x89")  # requires_grad False
        self.glob("collections", "OrderedDict")
        self.w(b")R")  # backward_hooks = OrderedDict()
        self.w(b"tR")  # TUPLE, REDUCE


def _aligned_info(zf: zipfile.ZipFile, name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16
    offset = zf.fp.tell()
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile adds a 20-byte zip64 extra then
    base = offset + 30 + len(name.encode("utf-8")) + 4 + (20 if zip64 else 0)
    pad = (-base) % _ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding, as torch
    return info


def save(obj, path, archive_name: str = "archive") -> None:
    """Write `obj` (nested dict / OrderedDict of numpy arrays, plus plain scalars) in torch's
    zip format, loadable by `torch.load` (also with weights_only=True) and by `load()`."""
    writer = _PickleWriter()
    pkl = writer.dump(obj)
    records = [("data.pkl", pkl), ("byteorder", b"little")]
    records += [(f"data/{key}", raw) for key, raw, _, _ in writer.storages]
    records.append(("version", b"3\n"))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for rel, data in records:
            name = f"{archive_name}/{rel}"
            zf.writestr(_aligned_info(zf, name, len(data)), data)
