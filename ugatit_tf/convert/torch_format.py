"""Read PyTorch checkpoint files (`torch.save`'s zip format) without torch, safely.

Reading is safe for untrusted files. The pickle inside is read by a restricted unpickler that
can only build dicts (`collections.OrderedDict`), tensors (`torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter`) and the typed storages they point to (`torch.FloatStorage`,
...), all mapped to numpy; any other global stops the load with an `UnsafePickleError` naming
it, before anything is called. Memory is bounded by the file's size: sizes and compression
ratios are checked from the zip directory before anything is inflated, storages must be stored
uncompressed and together fit in the file, data.pkl is capped and its nesting depth checked
before it is unpickled, and tensors are read-only views of their storage (shared storages are
read once). Every refusal is a one-line `TorchFormatError`. The layout (torch >= 1.6; the
legacy format is refused with how to re-save it) and the budget are in docs/conversion.md;
`torch_writer.py` writes the same format.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["TorchFormatError", "UnsafePickleError", "load", "loads_pickle", "check_nesting",
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
# The reading budget (see the module docstring).
MAX_PICKLE_BYTES = 4 * 2 ** 20    # data.pkl, inflated (U-GAT-IT's: about 60 KB)
MAX_RATIO = 100                   # inflated / compressed size of any entry read
MAX_NESTING = 100                 # objects inside objects in data.pkl
_CHUNK = 2 ** 20                  # entries are read in pieces of this size


class _StorageType:
    """Stand-in for a torch storage class (`torch.FloatStorage`). Not callable, so a pickle
    cannot instantiate anything through it."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A flat numpy array standing for one torch storage; its tensors are views of it."""

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
    a crafted file cannot make this read outside the storage. The tensor is a read-only view
    of its storage, so tensors sharing a storage share its memory, as in torch."""
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
    count = math.prod(size)
    if count > flat.size:  # only possible with overlapping (e.g. zero) strides
        raise TorchFormatError(f"tensor of size {size} has more elements than its storage "
                               f"{storage.key} ({flat.size}); overlapping strides are not "
                               f"supported")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchFormatError(
            f"tensor of size {size}, stride {stride}, offset {offset} reaches element {last} "
            f"of storage {storage.key} which has only {flat.size} (truncated or corrupt file)")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride),
        writeable=False)
    return view


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
    if isinstance(obj, (tuple, list, dict)):  # never repr a (possibly deep) container
        return f"a {type(obj).__name__} of {len(obj)} items"
    text = obj if isinstance(obj, str) else repr(obj)
    return text if len(text) <= limit else text[:limit] + "..."


# Opcodes that add to the container below them on the stack instead of making a new object.
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_EMPTY_CONTAINERS = {"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET"}


def check_nesting(data: bytes, limit: int = MAX_NESTING) -> None:
    """Refuse a pickle whose objects nest deeper than `limit` (a state_dict nests about 6
    levels), before anything is built. Simulates the unpickler's stack with each item's
    nesting depth, from the opcodes alone (pickletools.genops executes nothing)."""
    stack, marks, memo = [], [], {}
    try:
        for op, arg, pos in pickletools.genops(data):
            if _moved_only(op.name, arg, stack, marks, memo):
                continue
            taken = _take(op, stack, marks)
            if not op.stack_after:  # POP, POP_MARK, STOP
                continue
            depth = _pushed_depth(op, taken, stack)
            if depth > limit:
                raise TorchFormatError(f"the pickle nests objects more than {limit} levels "
                                       f"deep (at byte {pos}); a weights file nests about 6")
            stack.extend([depth] * len(op.stack_after))
    except TorchFormatError:
        raise
    except (ValueError, IndexError) as e:
        raise TorchFormatError(f"corrupt or truncated pickle: {type(e).__name__}: {e}") from e


def _moved_only(name, arg, stack, marks, memo) -> bool:
    """Apply an opcode that only marks, memoizes or copies depths (MARK, GET, PUT, MEMOIZE,
    DUP) and say so; False, with nothing done, for any other opcode."""
    if name == "MARK":
        marks.append(len(stack))
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo.get(arg, 0))
    elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
        memo[arg if name != "MEMOIZE" else len(memo)] = stack[-1]
    elif name == "DUP":
        stack.append(stack[-1])
    else:
        return False
    return True


def _take(op, stack, marks) -> list:
    """Pop the depths of the items `op` takes off the stack: all above the last mark, or its
    fixed number."""
    taken = []
    if op.stack_before and op.stack_before[-1] is pickletools.stackslice:
        start = marks.pop()
        taken, stack[start:] = stack[start:], []
    else:
        n = len(op.stack_before)
        if n:
            taken, stack[-n:] = stack[-n:], []
    return taken


def _pushed_depth(op, taken, stack) -> int:
    """The nesting depth of what `op` pushes, from the depths it took (a container that an
    in-place opcode fills from above a mark is popped off `stack` here)."""
    if op.name in _IN_PLACE:  # the container stays, its items go one level down
        if op.stack_before[-1] is pickletools.stackslice:
            container, items = stack.pop(), taken
        else:
            container, items = taken[0], taken[1:]
        return max([container] + [d + 1 for d in items])
    if op.name in _EMPTY_CONTAINERS:
        return 1
    return max(taken) + 1 if taken else 0


def loads_pickle(data: bytes, storage_loader=None):
    """Unpickle `data` with the restricted unpickler (storages from `storage_loader`), after
    `check_nesting`."""

    def no_storages(key, dtype, numel):
        raise TorchFormatError("this pickle refers to tensor storages but none are available")

    check_nesting(data)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), storage_loader or no_storages).load()
    except TorchFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError, OverflowError, RecursionError, struct.error) as e:
        raise TorchFormatError(f"corrupt or truncated pickle: {type(e).__name__}: "
                               f"{_short(str(e), 200)}") from e
    check_built_nesting(obj)
    return obj


_CONTAINERS = (dict, list, tuple, set, frozenset)


def _children(obj) -> list:
    """The containers among the items (and a dict's keys) of a container."""
    items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
    return [c for c in items if isinstance(c, _CONTAINERS)]


def check_built_nesting(obj, limit: int = MAX_NESTING) -> None:
    """Refuse an unpickled object whose containers nest deeper than `limit` or contain
    themselves. `check_nesting` reads the opcodes, but a container memoized empty and filled
    later through the memo keeps the depth it had when memoized; this walks what was built,
    without recursion, each container once (depth: a container is 1 + its deepest child)."""
    if not isinstance(obj, _CONTAINERS):
        return
    depth = {}  # id -> nesting depth of the containers walked so far
    path = [(obj, _children(obj))]  # containers being walked, with the children left
    on_path = {id(obj)}
    while path:
        node, left = path[-1]
        if not left:
            path.pop()
            on_path.discard(id(node))
            kids = [depth[id(c)] for c in _children(node)]
            depth[id(node)] = 1 + max(kids, default=0)
            continue
        child = left.pop()
        if id(child) in on_path:
            raise TorchFormatError("the pickle builds a container that contains itself")
        if id(child) not in depth:
            if len(path) >= limit:
                raise TorchFormatError(f"the pickle nests objects more than {limit} levels "
                                       f"deep; a weights file nests about 6")
            path.append((child, _children(child)))
            on_path.add(id(child))
    if depth[id(obj)] > limit:
        raise TorchFormatError(f"the pickle nests objects more than {limit} levels deep; a "
                               f"weights file nests about 6")


def _decode(raw: np.ndarray, dtype, little: bool):
    """The storage's bytes (a uint8 array) as `dtype`: a view when the byte order is the
    machine's, a converted copy otherwise (and for bfloat16)."""
    if dtype == "bfloat16":
        bits = raw.view("<u2" if little else ">u2").astype(np.uint32)
        return (bits << 16).view(np.float32)
    dt = dtype.newbyteorder("<" if little else ">") if dtype.itemsize > 1 else dtype
    if dt.isnative:
        return raw.view(dtype)
    return raw.view(dt).astype(dtype)


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


def _file_size(path) -> int:
    if isinstance(path, (str, os.PathLike)):
        return os.path.getsize(path)
    pos = path.tell()
    size = path.seek(0, os.SEEK_END)
    path.seek(pos)
    return size


def load(path):
    """Load a torch zip checkpoint (path or binary file object): nested dicts / OrderedDicts of
    numpy arrays (read-only views of their storages). Raises TorchFormatError
    (UnsafePickleError for forbidden content)."""
    name = getattr(path, "name", path)
    try:
        if isinstance(path, (str, os.PathLike)):
            with open(path, "rb") as f:
                head = f.read(4)
        else:
            pos = path.tell()
            head = path.read(4)
            path.seek(pos)
        size = _file_size(path)
    except OSError as e:
        raise TorchFormatError(f"cannot read {name}: {e}") from e
    if head[:2] != b"PK":
        if head[:1] == b"\x80" or _is_tar(path):
            raise _legacy_error(name)
        raise TorchFormatError(f"{name}: not a torch checkpoint (no zip or pickle header)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _ZipReader(zf, name, size).load()
    except TorchFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error,
            ValueError, KeyError, NotImplementedError, RuntimeError) as e:
        raise TorchFormatError(f"{name}: corrupt or truncated torch checkpoint "
                               f"({type(e).__name__}: {_short(str(e), 200)})") from e


def _is_tar(path):
    if not isinstance(path, (str, os.PathLike)):
        return False
    import tarfile
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


class _ZipReader:
    """Reads the entries of one torch zip within the budget of the module docstring: every
    size is checked from the zip's directory before a byte is inflated, and every read is
    capped at the declared size."""

    def __init__(self, zf: zipfile.ZipFile, name, archive_size: int):
        self.zf, self.name, self.archive_size = zf, name, archive_size
        self.infos = {i.filename: i for i in zf.infolist()}
        self.root = _archive_root(self.infos)
        self.storage_bytes = 0

    def refuse(self, entry, why):
        return TorchFormatError(f"{self.name}: entry {entry} {why}")

    def info(self, entry, limit):
        info = self.infos[entry]
        method = info.compress_type
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.refuse(entry, f"uses zip compression method {method}; torch files are "
                                     f"stored uncompressed (only stored or deflated entries "
                                     f"are read)")
        if info.file_size > limit:
            raise self.refuse(entry, f"declares {info.file_size} bytes, more than the "
                                     f"{limit} bytes allowed for it")
        if method == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise self.refuse(entry, f"is stored with {info.compress_size} bytes but declares "
                                     f"{info.file_size}")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise self.refuse(entry, f"inflates {info.file_size / max(info.compress_size, 1):.0f}"
                                     f"-fold ({info.compress_size} -> {info.file_size} bytes); "
                                     f"at most {MAX_RATIO}-fold is allowed")
        return info

    def read_into(self, info, out: np.ndarray) -> None:
        """Stream the entry into `out` (uint8, its declared size) in chunks."""
        pos = 0
        with self.zf.open(info) as f:
            while pos < out.size:
                chunk = f.read(min(_CHUNK, out.size - pos))
                if not chunk:
                    break
                out[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                pos += len(chunk)
            if pos != out.size or f.read(1):
                raise self.refuse(info.filename, f"holds other than its declared "
                                                 f"{out.size} bytes (corrupt file)")

    def read_small(self, entry, limit) -> bytes:
        info = self.info(entry, limit)
        out = np.empty(info.file_size, np.uint8)
        self.read_into(info, out)
        return out.tobytes()

    def storage(self, key, dtype, numel, little):
        entry = f"{self.root}/data/{key}"
        if entry not in self.infos:
            raise TorchFormatError(f"{self.name}: storage {entry} is missing (truncated file?)")
        want = numel * _itemsize(dtype)
        info = self.info(entry, self.archive_size)
        if info.compress_type != zipfile.ZIP_STORED:
            raise TorchFormatError(f"{self.name}: storage {entry} is compressed; torch stores "
                                   f"storages uncompressed")
        if info.file_size != want:
            raise TorchFormatError(f"{self.name}: storage {entry} has {info.file_size} bytes, "
                                   f"expected {want} ({numel} elements)")
        self.storage_bytes += want
        if self.storage_bytes > self.archive_size:  # entries overlapping in the zip
            raise TorchFormatError(f"{self.name}: its storages add up to more than the file's "
                                   f"{self.archive_size} bytes (overlapping zip entries?)")
        raw = np.empty(want, np.uint8)
        self.read_into(info, raw)
        return _decode(raw, dtype, little)

    def load(self):
        root = self.root
        byteorder = "little"
        if f"{root}/byteorder" in self.infos:
            byteorder = self.read_small(f"{root}/byteorder", 16).decode("ascii", "replace")
            byteorder = byteorder.strip()
            if byteorder not in ("little", "big"):
                raise TorchFormatError(f"{self.name}: unknown byteorder {byteorder!r}")
        little = byteorder == "little"
        data = self.read_small(f"{root}/data.pkl", MAX_PICKLE_BYTES)
        return loads_pickle(data, lambda key, dtype, numel: self.storage(key, dtype, numel,
                                                                          little))
