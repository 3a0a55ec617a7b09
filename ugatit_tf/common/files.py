"""Files: atomic writes with the usual permissions, and the image/video file names we read.

Every output of the project (checkpoints' config.json, PNGs, HTML, exports, reports) is written
through `atomic_write`: a temporary file in the same folder, flushed and fsynced, then
`os.replace`d over the target, so a crash never leaves a half-written file and a reader never
sees one. The file gets the permissions an ordinary `open()` would give it (0666 less the umask),
not mkstemp's owner-only 0600.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Callable, IO

# Extensions of the images we read (training data, test data, photos, uploads): the formats
# tf.io.decode_image and Pillow both read. TIFF is read by the photo path only (Pillow).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS + (".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from open(): 0666 less the process umask."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = True,
                 make_parents: bool = True) -> str:
    """Write `path` through `write(f)` atomically; returns the path as a string.

    `f` is the open temporary file ("wb" or "w"). On any failure the temporary file is removed
    and the previous content of `path`, if any, is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if make_parents:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
    return atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 2,
                      sort_keys: bool = True) -> str:
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def is_image_name(name: str, extensions=IMAGE_EXTENSIONS) -> bool:
    return name.lower().endswith(extensions) and not os.path.basename(name).startswith(".")


def list_images(folder: str | os.PathLike, extensions=IMAGE_EXTENSIONS) -> list[str]:
    """Sorted image files directly in `folder` (no recursion, hidden files skipped).
    The caller decides what an empty list or a missing folder means."""
    folder = os.fspath(folder)
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if is_image_name(f, extensions) and os.path.isfile(os.path.join(folder, f)))


class PathError(ValueError):
    """A path given by the user names the wrong kind of thing (a file where a folder is
    expected, a FIFO, a device, nothing). The message is one line naming the flag and path."""


def describe_mode(mode: int) -> str:
    """What an st_mode is, in the words of error messages: "file", "folder", "FIFO", ..."""
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def path_kind(path: str | os.PathLike) -> str:
    """What `path` names, following symlinks: "file", "folder", "FIFO", "character device",
    "block device", "socket", "special file", "missing" (also a dangling symlink, or a path
    below a file) or
    "unreadable" (a symlink loop, a permission problem on the way)."""
    try:
        return describe_mode(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):  # also "a_file/below"
        return "missing"
    except OSError:
        return "unreadable"


def check_path_kind(path: str | os.PathLike, flag: str, allowed: tuple[str, ...],
                    expected: str) -> str:
    """The kind of `path` (see `path_kind`) if it is one of `allowed`; otherwise PathError:
    "FLAG PATH: is a FIFO, not EXPECTED" (or "does not exist")."""
    kind = path_kind(path)
    if kind in allowed:
        return kind
    if kind == "missing":
        problem = "does not exist"
    elif kind == "unreadable":
        problem = f"cannot be read (a symbolic link loop or no permission), not {expected}"
    else:
        problem = f"is {'an existing' if kind == 'file' else 'a'} {kind}, not {expected}"
    raise PathError(f"{flag} {os.fspath(path)}: {problem}")
