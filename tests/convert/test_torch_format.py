"""Reading crafted torch files (ugatit_tf/convert/torch_format.py): every attack of issue 17
ends in a one-line TorchFormatError within a memory budget, measured as the peak RSS of a
child process that imports only the reader (numpy, no TensorFlow). The zips are written byte
by byte here (`raw_zip`), so an entry can declare any size, method and CRC.
"""

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import pytest

from ugatit_tf.convert import torch_format as T
from ugatit_tf.convert import torch_writer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GiB, MiB = 2 ** 30, 2 ** 20

_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from ugatit_tf.convert import torch_format as T
def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) restarts from here
    f.write("5")
base = status_kb("VmRSS")
out = {}
try:
    obj = T.load(sys.argv[2])
    arrays = [v for sd in obj.values() for v in sd.values()] if isinstance(obj, dict) else []
    out["loaded"] = len(arrays)
    out["shared"] = all(np.shares_memory(arrays[0], a) for a in arrays)
except T.TorchFormatError as e:
    out["error"] = str(e)
except BaseException as e:
    out["crash"] = type(e).__name__
out["base_mb"] = base / 1024
out["peak_mb"] = status_kb("VmHWM") / 1024
print(json.dumps(out))
"""


def load_in_child(path, root=ROOT) -> dict:
    """T.load(path) in a fresh process: its outcome, and how far its peak RSS (MB, VmHWM reset
    after the imports) rose above its resident size then."""
    done = subprocess.run([sys.executable, "-c", _CHILD, root, str(path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["grew_mb"] = out["peak_mb"] - out["base_mb"]
    return out


def raw_zip(path, entries):
    """A zip from [(name, method, data as stored, crc, declared inflated size)]."""
    with open(path, "wb") as f:
        central = []
        for name, method, data, crc, size in entries:
            offset = f.tell()
            raw = name.encode()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc,
                                len(data), size, len(raw), 0) + raw + data)
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0,
                                       0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0,
                                       offset) + raw)
        start = f.tell()
        f.write(b"".join(central))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central),
                            f.tell() - start, start, 0))


def zeros_deflated(n_mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of n_mib MiB of zero bytes, and its CRC. Each MiB is one block
    compressed from a fresh state (Z_FULL_FLUSH), so the block is made once and repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * MiB) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    zero = b"\0" * MiB
    for _ in range(n_mib):
        crc = zlib.crc32(zero, crc)
    return block * n_mib + c.flush(), crc


def test_deflate_bomb_refused_before_inflating(tmp_path):
    data, crc = zeros_deflated(1024)  # data.pkl: 1 GiB of zeros in ~1 MB
    assert zlib.decompressobj(-15).decompress(data, 4 * MiB) == b"\0" * (4 * MiB)
    path = tmp_path / "bomb.pt"
    raw_zip(path, [("archive/data.pkl", zipfile.ZIP_DEFLATED, data, crc, GiB)])
    out = load_in_child(path)
    assert out["error"] == (f"{path}: entry archive/data.pkl declares {GiB} bytes, more than "
                            f"the {T.MAX_PICKLE_BYTES} bytes allowed for it")
    assert out["grew_mb"] < 20, out


def test_bz2_and_lying_sizes_refused(tmp_path):
    import bz2
    path = tmp_path / "bz2.pt"
    raw_zip(path, [("archive/data.pkl", zipfile.ZIP_BZIP2, bz2.compress(b"\0" * MiB),
                    zlib.crc32(b"\0" * MiB), MiB)])
    with pytest.raises(T.TorchFormatError, match=r"^\S+bz2\.pt: entry archive/data\.pkl uses "
                       r"zip compression method 12; torch files are stored uncompressed"):
        T.load(str(path))
    # a ratio bomb under the size cap: 3 MiB of zeros in ~3 KB
    data, crc = zeros_deflated(3)
    raw_zip(path, [("archive/data.pkl", zipfile.ZIP_DEFLATED, data, crc, 3 * MiB)])
    with pytest.raises(T.TorchFormatError, match=r"inflates \d+-fold .*; at most 100-fold"):
        T.load(str(path))
    # a header that understates the size: reading stops at the declared size
    data, crc = zeros_deflated(64)
    raw_zip(path, [("archive/data.pkl", zipfile.ZIP_DEFLATED, data, crc, 100 * 1024)])
    out = load_in_child(path)
    assert "error" in out and "\n" not in out["error"] and out["grew_mb"] < 20, out


def _shared_storage_file(path, n_tensors, numel):
    """n_tensors tensors, each a view of all of ONE float32 storage of numel elements."""
    class SharedWriter(torch_writer._PickleWriter):
        def save_tensor(self, array):
            self.glob("torch._utils", "_rebuild_tensor_v2")
            self.w(b"((")
            self.save("storage")
            self.glob("torch", "FloatStorage")
            for item in ("0", "cpu", numel):
                self.save(item)
            self.w(b"tQ")
            self.save(0)
            self.save_tuple((numel,))
            self.save_tuple((1,))
            self.w(b"\x89")
            self.glob("collections", "OrderedDict")
            self.w(b")RtR")

    sd = OrderedDict((f"t{i}", np.zeros(1, np.float32)) for i in range(n_tensors))
    pkl = SharedWriter().dump({"sd": sd})
    storage = np.arange(numel, dtype="<f4").tobytes()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/data/0", storage)
        zf.writestr("archive/version", "3\n")


def test_shared_storage_loads_once_as_views(tmp_path):
    path = tmp_path / "shared.pt"
    _shared_storage_file(path, 200, 2 * MiB)  # 200 tensors on one 8 MiB storage
    back = T.load(str(path))["sd"]
    assert len(back) == 200
    first = back["t0"]
    np.testing.assert_array_equal(first[:5], [0, 1, 2, 3, 4])
    assert all(np.shares_memory(first, t) for t in back.values())
    assert not first.flags.writeable  # a view of a shared storage is read-only
    out = load_in_child(path)
    assert out["loaded"] == 200 and out["shared"] and out["grew_mb"] < 8 * 3, out


@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
def test_deep_nesting_refused_in_one_line(tmp_path, kind):
    n = 200_000
    body = {"tuple": b")" + b"\x85" * n,                      # EMPTY_TUPLE, TUPLE1 ...
            "list": b"]" + b"]" * n + b"a" * n,              # EMPTY_LIST ..., APPEND ...
            "dict": b"}" + b"K\x01}" * n + b"s" * n}[kind]   # d[1] = {1: {...}}
    data = b"\x80\x02" + body + b"."
    with pytest.raises(T.TorchFormatError) as err:
        T.loads_pickle(data)
    assert str(err.value).startswith(f"the pickle nests objects more than {T.MAX_NESTING} "
                                     f"levels deep")
    path = tmp_path / "deep.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
    out = load_in_child(path)
    assert "nests objects more than" in out["error"] and out["grew_mb"] < 20, out


def test_nesting_check_passes_real_pickles():
    ok = [{"a": [1, (2, 3), {"x": None}]}, OrderedDict(a=1), [[[[]]]] * 3,
          [[i] for i in range(1000)], {"k": [[]] * 5000}]
    for obj in ok:
        for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
            T.check_nesting(pickle.dumps(obj, protocol=protocol))
    deep = []
    for _ in range(T.MAX_NESTING - 1):
        deep = [deep]
    T.check_nesting(pickle.dumps(deep, protocol=2))  # 100 lists, one inside the other
    with pytest.raises(T.TorchFormatError, match="more than 100 levels"):
        T.check_nesting(pickle.dumps([deep], protocol=2))


def _filled_through_the_memo(n, order):
    """n empty lists memoized first, then list i filled with list i - 1 through the memo (in
    `order`): each list's opcodes say depth 1, what is built nests n deep."""
    put = [b"]r" + struct.pack("<I", i) + b"0" for i in range(n)]
    get = lambda i: b"j" + struct.pack("<I", i)  # noqa: E731
    fill = [get(i) + get(i - 1) + b"a0" for i in order(range(1, n))]
    return b"\x80\x02" + b"".join(put + fill) + get(n - 1) + b"."


@pytest.mark.parametrize("order", [list, reversed], ids=["forward", "reversed"])
def test_nesting_built_through_the_memo_is_refused(order):
    data = _filled_through_the_memo(5000, order)
    T.check_nesting(data)  # the opcodes alone cannot tell
    with pytest.raises(T.TorchFormatError) as err:
        T.loads_pickle(data)
    assert str(err.value) == (f"the pickle nests objects more than {T.MAX_NESTING} levels deep; "
                              f"a weights file nests about 6")
    built = T.loads_pickle(_filled_through_the_memo(T.MAX_NESTING, order))
    assert len(built) == 1  # exactly the limit: loaded


def test_a_container_inside_itself_is_refused():
    data = b"\x80\x02]r\0\0\0\0j\0\0\0\0a."  # L = []; L.append(L)
    with pytest.raises(T.TorchFormatError) as err:
        T.loads_pickle(data)
    assert str(err.value) == "the pickle builds a container that contains itself"
    shared = [[1]] * 3  # one list three times: no cycle
    assert T.loads_pickle(pickle.dumps([shared, shared], protocol=2)) == [shared, shared]
