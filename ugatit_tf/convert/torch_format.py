"""Read and write PyTorch checkpoint files (`torch.save`'s zip format) without torch.

Reading is safe for untrusted files: the pickle inside is read by a restricted unpickler that
can only build dicts (`collections.OrderedDict`), tensors (`torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter`) and the typed storages they point to (`torch.FloatStorage`,
...), all mapped to numpy. Any other global (a function, a class, `os.system`, ...) stops the
load with an `UnsafePickleError` naming it, before anything is called.

The zip format (torch >= 1.6), as written by `save()` below:

    <name>/data.pkl      protocol-2 pickle of the object; each tensor is
                         _rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
                         backward_hooks) and each storage a persistent id
                         ('storage', torch.<Type>Storage, key, location, numel)
    <name>/byteorder     'little' (absent in old files: little)
    <name>/data/<key>    the raw bytes of storage <key> (numel * element size)
    <name>/version       '3\\n'

Entries are stored uncompressed, their data aligned to 64 bytes (an extra field 'FB' of
padding in the local header, as torch does). All entries share one top folder <name>.

The legacy format (torch < 1.6, a bare pickle stream or a tar file) is refused with a message
telling how to re-save it.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["TorchFormatError", "UnsafePickleError", "load", "loads_pickle", "save",
           "RestrictedUnpickler", "STORAGE_DTYPES"]


class TorchFormatError(ValueError):
    """The file is not a readable torch zip checkpoint (truncated, corrupt, legacy, ...)."""


class UnsafePickleError(TorchFormatError, pickle.UnpicklingError):
    """The pickle references something outside the allowed set of globals."""


# torch storage type name -> numpy dtype ('bfloat16' is special-cased: numpy has none)
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("float32"),
    "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
}
_DTYPE_TO_STORAGE = {np.dtype(v): k for k, v in STORAGE_DTYPES.items() if k != "BFloat16Storage"}

_ALIGN = 64


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

class _StorageType:
    """Stand-in for a torch storage class (`torch.FloatStorage`). Not callable, so a pickle
    cannot instantiate anything through it."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A flat numpy array standing for one torch storage."""

    __slots__ = ("array", "key")

    def __init__(self, array, key):
        self.array = array
        self.key = key


def _itemsize(dtype):
    return 2 if isinstance(dtype, str) else dtype.itemsize


def _check_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TorchFormatError(f"tensor {what} must be an integer, got {type(value).__name__}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """numpy version of torch._utils._rebuild_tensor_v2 (the extra arguments requires_grad,
    backward_hooks and metadata do not matter for the values). Every index is bounds-checked:
    a crafted file cannot make this read outside the storage."""
    if not isinstance(storage, _Storage):
        raise TorchFormatError("tensor storage is not a storage persistent id")
    if len(rest) > 3:
        raise TorchFormatError("too many arguments to _rebuild_tensor_v2")
    offset = _check_int(storage_offset, "offset")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise TorchFormatError("tensor size and stride must be tuples")
    size = tuple(_check_int(s, "size") for s in size)
    stride = tuple(_check_int(s, "stride") for s in stride)
    if len(size) != len(stride):
        raise TorchFormatError(f"tensor size {size} and stride {stride} differ in length")
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise TorchFormatError(f"negative tensor offset, size or stride: {offset} {size} {stride}")
    flat = storage.array
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=flat.dtype)
    count = 1
    for n in size:
        count *= n
    if count > flat.size:  # only possible with overlapping (e.g. zero) strides
        raise TorchFormatError(f"tensor of size {size} has more elements than its storage "
                               f"{storage.key} ({flat.size}); overlapping strides are not "
                               f"supported")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchFormatError(
            f"tensor of size {size}, stride {stride}, offset {offset} reaches element {last} "
            f"of storage {storage.key} which has only {flat.size} (truncated or corrupt file)")
    if not size:  # a 0-d tensor
        return np.array(flat[offset], dtype=flat.dtype)
    base = flat[offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False)
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, np.ndarray):
        raise TorchFormatError("parameter data is not a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a state_dict needs (see module docstring).

    `storage_loader(key, dtype, numel)` returns the flat numpy array of a storage; it is
    called once per distinct key."""

    def __init__(self, file, storage_loader):
        super().__init__(file)
        self._storage_loader = storage_loader
        self._storages = {}

    def find_class(self, module, name):
        target = _ALLOWED.get((module, name))
        if target is not None:
            return target
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: a weights file may only contain tensors and "
            f"dicts (allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
            f"torch._utils._rebuild_parameter and torch storage types)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise UnsafePickleError(f"unsupported persistent id {_short(pid)}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"persistent id names no torch storage type: "
                                    f"{_short(storage_type)}")
        key = str(key)
        numel = _check_int(numel, "storage size")
        if numel < 0:
            raise TorchFormatError(f"negative storage size {numel}")
        cached = self._storages.get(key)
        if cached is None:
            dtype = STORAGE_DTYPES[storage_type.name]
            cached = _Storage(self._storage_loader(key, dtype, numel), key)
            self._storages[key] = cached
        elif cached.array.size != numel:
            raise TorchFormatError(f"storage {key} is referenced with two sizes")
        return cached


def _short(obj, limit=80):
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + "..."


def loads_pickle(data: bytes, storage_loader=None):
    """Unpickle `data` with the restricted unpickler (storages from `storage_loader`)."""

    def no_storages(key, dtype, numel):
        raise TorchFormatError("this pickle refers to tensor storages but none are available")

    try:
        return RestrictedUnpickler(io.BytesIO(data), storage_loader or no_storages).load()
    except TorchFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError, OverflowError, struct.error) as e:
        raise TorchFormatError(f"corrupt or truncated pickle: {type(e).__name__}: {e}") from e


def _decode(raw: bytes, dtype, little: bool):
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2" if little else ">u2").astype(np.uint32)
        return (bits << 16).view(np.float32)
    dt = dtype.newbyteorder("<" if little else ">") if dtype.itemsize > 1 else dtype
    return np.frombuffer(raw, dtype=dt).astype(dtype, copy=True)


def _archive_root(names):
    roots = sorted({n.split("/", 1)[0] for n in names if n.count("/") == 1
                    and n.endswith("/data.pkl")})
    if len(roots) != 1:
        raise TorchFormatError(
            "not a torch checkpoint: expected exactly one '<name>/data.pkl' in the zip, found "
            f"{len(roots)} (a TorchScript archive or another zip file?)")
    return roots[0]


def _legacy_error(path):
    return TorchFormatError(
        f"{path}: unsupported legacy (pre-1.6) torch format. Re-save it with torch>=1.6: "
        f"python -c \"import torch; torch.save(torch.load('OLD.pt', weights_only=True), "
        f"'NEW.pt')\"")


def load(path):
    """Load a torch zip checkpoint (path or binary file object): nested dicts / OrderedDicts of
    numpy arrays. Raises TorchFormatError (UnsafePickleError for forbidden content)."""
    name = getattr(path, "name", path)
    try:
        if isinstance(path, (str, os.PathLike)):
            with open(path, "rb") as f:
                head = f.read(4)
        else:
            pos = path.tell()
            head = path.read(4)
            path.seek(pos)
    except OSError as e:
        raise TorchFormatError(f"cannot read {name}: {e}") from e
    if head[:2] != b"PK":
        if head[:1] == b"\x80" or _is_tar(path):
            raise _legacy_error(name)
        raise TorchFormatError(f"{name}: not a torch checkpoint (no zip or pickle header)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _load_zip(zf, name)
    except TorchFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error,
            ValueError, KeyError) as e:
        raise TorchFormatError(f"{name}: corrupt or truncated torch checkpoint "
                               f"({type(e).__name__}: {e})") from e


def _is_tar(path):
    if not isinstance(path, (str, os.PathLike)):
        return False
    import tarfile
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _load_zip(zf: zipfile.ZipFile, name):
    infos = {i.filename: i for i in zf.infolist()}
    root = _archive_root(infos)
    byteorder = "little"
    if f"{root}/byteorder" in infos:
        byteorder = zf.read(f"{root}/byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise TorchFormatError(f"{name}: unknown byteorder {byteorder!r}")
    little = byteorder == "little"

    def storage_loader(key, dtype, numel):
        entry = f"{root}/data/{key}"
        info = infos.get(entry)
        if info is None:
            raise TorchFormatError(f"{name}: storage {entry} is missing (truncated file?)")
        if info.compress_type != zipfile.ZIP_STORED:
            raise TorchFormatError(f"{name}: storage {entry} is compressed; torch stores "
                                   f"storages uncompressed")
        want = numel * _itemsize(dtype)
        if info.file_size != want:
            raise TorchFormatError(f"{name}: storage {entry} has {info.file_size} bytes, "
                                   f"expected {want} ({numel} elements)")
        return _decode(zf.read(info), dtype, little)

    return loads_pickle(zf.read(f"{root}/data.pkl"), storage_loader)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

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
