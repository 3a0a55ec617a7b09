"""Pre-flight scan of a data set: every file of trainA, trainB, testA, testB opened with PIL.

    python main.py --phase check --dataset NAME

`scan_folder(folder, img_size)` returns one `FileReport` per folder entry; `check_dataset(config)`
returns a `DatasetReport` (`.usable`, `.text()`, `.counts`, and per domain the usable files and
the files that need conversion). Training uses the same scan (data.domain_files): skipped files
are left out with one warning line each, and the files TensorFlow's decoders would mis-read are
converted to 8-bit RGB PNG copies outside the data set (data.prepare_training_files).

What each file gets (`FileReport.action`):

    use      read as is by tf.io.decode_image (maybe with a warning: grayscale, tiny, animated)
    convert  PIL reads it but TensorFlow would mis-decode it (alpha, 16-bit, CMYK, EXIF
             rotation, 8-bit BMP, content that is not JPEG/PNG/GIF/BMP/WebP): an 8-bit RGB
             PNG copy is used instead
    skip     unusable: unreadable, empty, truncated or corrupt, not an image, too large (the
             pixel budget of common/images.py, read from the headers of every frame before
             anything is decoded)
    ignore   not a training file: folders, hidden files, other extensions

This module only needs PIL and numpy (no TensorFlow), so the check phase is quick.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import io
import os
import re
import time
import warnings
from dataclasses import dataclass, field

from ugatit_tf.common.files import IMAGE_EXTENSIONS, write_bytes_atomic
from ugatit_tf.common.images import (DEFAULT_MAX_PIXELS, ImageHeader, ImageOverBudget,
                                     ImageRejected, check_image_file, image_format,
                                     read_image_header_file, to_rgb8)

DOMAINS = ("trainA", "trainB", "testA", "testB")
TRAIN_DOMAINS = ("trainA", "trainB")

# Image-like extensions that the data pipeline does not read: reported as "unsupported".
OTHER_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k",
                          ".ico", ".ppm", ".pgm", ".pbm", ".pnm", ".psd", ".svg", ".raw",
                          ".cr2", ".nef", ".arw", ".dng", ".tga", ".exr", ".hdr", ".jfif")

# Decompression-bomb guards: larger images are skipped without being decoded.
MAX_PIXELS = DEFAULT_MAX_PIXELS  # largest frame x frames, from the headers
MAX_BYTES = 100 * 1024 * 1024
# Smaller than this (shorter side) is worth a warning: max(16, img_size // 4).
TINY_MIN = 16

# Formats tf.io.decode_image reads (PIL's format names; MPO is a multi-picture JPEG).
TF_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")

SKIP, CONVERT, USE, IGNORE = "skip", "convert", "use", "ignore"
_SEVERITY = {IGNORE: 3, SKIP: 2, CONVERT: 1, USE: 0}

# problem code -> action
PROBLEMS = {
    "unreadable": SKIP, "empty": SKIP, "truncated": SKIP, "corrupt": SKIP,
    "not_an_image": SKIP, "huge": SKIP,
    "alpha": CONVERT, "16bit": CONVERT, "cmyk": CONVERT, "exif_rotated": CONVERT,
    "bmp_mode": CONVERT, "other_format": CONVERT, "color_mode": CONVERT,
    "grayscale": USE, "tiny": USE, "animated": USE,
    "folder": IGNORE, "hidden": IGNORE, "not_image_file": IGNORE,
    "unsupported_extension": IGNORE, "broken_link": IGNORE,
}


class DataError(ValueError):
    """A data folder is missing, empty or unusable; the message names it."""


@dataclass(frozen=True)
class FileReport:
    """What the scan found about one folder entry."""
    path: str
    action: str                        # use / convert / skip / ignore
    problems: tuple[str, ...] = ()     # codes of PROBLEMS, most severe first
    reason: str = ""                   # human-readable, "" for a clean file
    detail: str = ""                   # the decoder's own message, when there is one
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def usable(self) -> bool:
        return self.action in (USE, CONVERT)

    def line(self) -> str:
        text = f"{self.name}: {self.reason}"
        return text + (f" ({self.detail})" if self.detail else "")


def _report(path, found, **info) -> FileReport:
    """`found`: list of (code, reason); the action is that of the most severe problem."""
    if not found:
        return FileReport(path, USE, **info)
    found = sorted(found, key=lambda cr: -_SEVERITY[PROBLEMS[cr[0]]])
    action = PROBLEMS[found[0][0]]
    if action in (SKIP, IGNORE):  # one reason is enough for a file that is not used
        found = found[:1]
    return FileReport(path, action, tuple(c for c, _ in found), "; ".join(r for _, r in found),
                      **info)


# ---------------------------------------------------------------------------
# PIL settings for a scan
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def pil_guard(max_pixels: int = MAX_PIXELS):
    """PIL's decompression-bomb limit set to `max_pixels` (PIL raises DecompressionBombError
    beyond twice that; the scan skips anything beyond it before decoding), truncated images
    made errors, and PIL's bomb warnings silenced (the scan reports them)."""
    from PIL import Image, ImageFile
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


# ---------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------

def _sniff(head: bytes) -> str:
    """What a file that PIL cannot identify probably is."""
    if not head:
        return "unrecognised content"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "ZIP archive"
    if head.startswith(b"%PDF"):
        return "PDF document"
    if head.startswith(b"\x1f\x8b"):
        return "gzip archive"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC/HEIF image, not supported: convert it to JPEG or PNG"
        if brand in (b"avif", b"avis"):
            return "AVIF image, not supported: convert it to JPEG or PNG"
        return "MP4/QuickTime video"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML page"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "XML/SVG document"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text file"
        except UnicodeDecodeError:
            pass
    return "unrecognised content"


def _magic_format(head: bytes) -> str | None:
    """The format a file's first bytes announce, in PIL's names (WebP is "WEBP")."""
    fmt = image_format(head)
    return fmt.upper() if fmt in ("JPEG", "PNG", "GIF", "WebP") else None


def _decode_problem(exc: BaseException, fmt: str | None) -> tuple[str, str, str]:
    message = str(exc) or type(exc).__name__
    what = fmt or "image"
    if isinstance(exc, EOFError) or "truncat" in message.lower() or "ended prematurely" in message:
        return "truncated", f"truncated {what}: the file is cut short", message
    return "corrupt", f"corrupt {what}: the image data cannot be decoded", message


def _png_bit_depth(head: bytes) -> int | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 25:
        return head[24]
    return None


def _too_large(header: ImageHeader, max_pixels: int) -> str:
    limit = f"limit {max_pixels / 1e6:g} Mpx"
    if header.frames <= 1 and header.pixels == header.width * header.height:
        return f"too large: {header.width}x{header.height} pixels ({limit})"
    frames = f"{header.frames} frame{'s' if header.frames != 1 else ''}"
    return (f"too large: {header.format} of {header.width}x{header.height} with {frames} of up "
            f"to {header.max_frame_pixels:,} pixels = {header.pixels:,} pixels ({limit}, "
            f"frames x largest frame)")


def _header_problem(path: str, max_pixels: int) -> FileReport | None:
    """A "huge" report when the headers of all frames declare more than `max_pixels`, or a
    JPEG has more scans than MAX_JPEG_SCANS; None otherwise (also when the headers cannot be
    read: PIL then says what is wrong)."""
    try:
        header = read_image_header_file(path)
    except (ImageRejected, OSError):
        return None
    size = dict(width=header.width, height=header.height, format=header.format.upper())
    if header.pixels > max_pixels:
        return _report(path, [("huge", _too_large(header, max_pixels))], **size)
    if header.format != "JPEG":  # the headers above were all of the budget
        return None
    try:  # the scan count (reads the file once more)
        check_image_file(path, max_pixels)
    except ImageOverBudget as e:  # too many scans: the message after "path: "
        return _report(path, [("huge", f"too large: {str(e)[len(path) + 2:]}")], **size)
    except (ImageRejected, OSError):
        return None
    return None


def _unreadable_report(path: str, e: OSError) -> FileReport:
    """An "unreadable" report with the operating system's message."""
    return _report(path, [("unreadable", f"unreadable: {e.strerror or e}")])


def _size_problem(path: str, max_bytes: int) -> FileReport | None:
    """A report when the file cannot be stat'ed, is empty or has more than `max_bytes`."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return _unreadable_report(path, e)
    if size == 0:
        return _report(path, [("empty", "empty file (0 bytes)")])
    if size > max_bytes:
        return _report(path, [("huge", f"too large: {size:,} bytes (limit {max_bytes:,} "
                                       f"bytes)")])
    return None


@dataclass(frozen=True)
class _Decoded:
    """What PIL found in an image that opened, verified and loaded."""
    format: str | None
    mode: str
    width: int
    height: int
    transparency: bool
    orientation: int
    n_frames: int


def _bomb_report(path: str, e: BaseException, max_pixels: int) -> FileReport:
    """A "huge" report for PIL's DecompressionBombError (with its pixel count when it has one)."""
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    amount = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
    return _report(path, [("huge", f"too large: {amount} (limit {max_pixels / 1e6:g} "
                                   f"Mpx; decompression bomb guard)")])


def _unidentified_report(path: str, head: bytes) -> FileReport:
    """A report for a file PIL cannot identify: a corrupt image or not an image at all."""
    magic = _magic_format(head)
    if magic:  # starts like an image, but the header is broken
        return _report(path, [("corrupt", f"corrupt {magic}: the image data cannot be "
                                          f"decoded")], detail="unreadable header",
                       format=magic)
    return _report(path, [("not_an_image", f"not an image: {_sniff(head)}")])


def _decoder_error_report(path: str, e: BaseException, fmt: str | None,
                          head: bytes) -> FileReport:
    """A report for an error while decoding: unreadable (permission), truncated or corrupt."""
    if isinstance(e, PermissionError):
        return _unreadable_report(path, e)
    fmt = fmt or _magic_format(head)
    code, reason, detail = _decode_problem(e, fmt)
    return _report(path, [(code, reason)], detail=detail, format=fmt)


def _decode(path: str, f, head: bytes, max_pixels: int) -> _Decoded | FileReport:
    """Open, verify and load the image in `f`: what it holds, or why it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    fmt = None
    try:
        with Image.open(f) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            info = dict(width=w, height=h, format=fmt, mode=mode)
            if w * h > max_pixels:
                return _report(path, [("huge", f"too large: {w}x{h} pixels (limit "
                                               f"{max_pixels / 1e6:g} Mpx)")], **info)
            im.verify()
        f.seek(0)
        with Image.open(f) as im:
            im.load()
            transparency = "transparency" in im.info
            orientation = im.getexif().get(0x0112, 1)
            n_frames = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) \
                else 1
    except Image.DecompressionBombError as e:
        return _bomb_report(path, e, max_pixels)
    except UnidentifiedImageError:
        return _unidentified_report(path, head)
    except MemoryError:
        return _report(path, [("huge", "too large: out of memory while decoding")])
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        return _decoder_error_report(path, e, fmt, head)
    return _Decoded(fmt, mode, w, h, transparency, orientation, n_frames)


def _conversions(path: str, head: bytes, d: _Decoded) -> list[tuple[str, str]]:
    """The (code, reason) of everything that makes TensorFlow mis-decode the image."""
    found = []
    mode, fmt = d.mode, d.format
    bit_depth = _png_bit_depth(head)
    if mode.startswith("I;16") or mode in ("I", "F") or bit_depth == 16:
        found.append(("16bit", "16-bit: converted to 8-bit"))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or d.transparency:
        found.append(("alpha", f"transparency ({mode}): converted, flattened onto white"))
    if mode == "CMYK":
        found.append(("cmyk", f"CMYK {fmt}: converted to RGB"))
    elif mode not in ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "RGBa", "La", "CMYK", "F",
                      "I") and not mode.startswith("I;16"):
        found.append(("color_mode", f"{mode} pixels: converted to RGB"))
    if d.orientation in (2, 3, 4, 5, 6, 7, 8):
        found.append(("exif_rotated", f"EXIF orientation {d.orientation}: converted upright"))
    if fmt not in TF_FORMATS:
        found.append(("other_format", f"{fmt} content with a {os.path.splitext(path)[1]} "
                                      f"extension: converted"))
    elif fmt == "BMP" and mode != "RGB":
        found.append(("bmp_mode", f"BMP with {mode} pixels: converted (TensorFlow "
                                  f"mis-decodes it)"))
    return found


def _warnings(d: _Decoded, img_size: int) -> list[tuple[str, str]]:
    """The (code, reason) of what is worth a warning in an image used as is."""
    found = []
    if d.mode in ("L", "1"):
        found.append(("grayscale", "grayscale: used as RGB"))
    if d.n_frames > 1:
        found.append(("animated", f"animated {d.format} ({d.n_frames} frames): first frame "
                                  f"used"))
    if min(d.width, d.height) < max(TINY_MIN, img_size // 4):
        found.append(("tiny", f"tiny: {d.width}x{d.height} pixels (upscaled to "
                              f"{img_size}x{img_size})"))
    return found


def scan_file(path: str, img_size: int, max_pixels: int = MAX_PIXELS,
              max_bytes: int = MAX_BYTES) -> FileReport:
    """Classify one file with an image extension (call inside `pil_guard`)."""
    problem = _size_problem(path, max_bytes)
    if problem:
        return problem
    huge = _header_problem(path, max_pixels)
    if huge:
        return huge
    try:
        f = open(path, "rb")
    except OSError as e:
        return _unreadable_report(path, e)
    with f:
        try:
            head = f.read(64)
            f.seek(0)
        except OSError as e:
            return _unreadable_report(path, e)
        decoded = _decode(path, f, head, max_pixels)
    if isinstance(decoded, FileReport):
        return decoded
    found = _conversions(path, head, decoded) + _warnings(decoded, img_size)
    return _report(path, found, width=decoded.width, height=decoded.height,
                   format=decoded.format, mode=decoded.mode)


def _classify_entry(folder: str, name: str) -> tuple[str, FileReport | None]:
    """('scan', None) for a candidate image file, else ('ignore', report)."""
    path = os.path.join(folder, name)
    ext = os.path.splitext(name)[1].lower()
    if os.path.isdir(path):
        return IGNORE, _report(path, [("folder", "folder: ignored (images in subfolders are "
                                                 "not used)")])
    if name.startswith("."):
        return IGNORE, _report(path, [("hidden", "hidden file: ignored")])
    if os.path.islink(path) and not os.path.exists(path):
        return IGNORE, _report(path, [("broken_link", "broken symbolic link: ignored")])
    if not os.path.isfile(path):
        return IGNORE, _report(path, [("not_image_file", "not a regular file: ignored")])
    if ext in IMAGE_EXTENSIONS:
        return "scan", None
    if ext in OTHER_IMAGE_EXTENSIONS:
        return IGNORE, _report(path, [("unsupported_extension", f"unsupported extension {ext}: "
                                       f"ignored (convert it to "
                                       f"{', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")])
    return IGNORE, _report(path, [("not_image_file", "not an image file: ignored")])


def scan_folder(folder: str, img_size: int, max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_BYTES, workers: int | None = None) -> list[FileReport]:
    """One FileReport per entry of `folder`, sorted by path (the training order). Raises
    DataError if the folder does not exist."""
    if not os.path.isdir(folder):
        raise DataError(f"data folder {folder} does not exist")
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise DataError(f"cannot list data folder {folder}: {e.strerror or e}") from e
    reports, candidates = [], []
    for name in names:
        kind, report = _classify_entry(folder, name)
        if kind == IGNORE:
            reports.append(report)
        else:
            candidates.append(os.path.join(folder, name))
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with pil_guard(max_pixels):
        if workers > 1 and len(candidates) > 16:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                reports += pool.map(lambda p: scan_file(p, img_size, max_pixels, max_bytes),
                                    candidates, chunksize=8)
        else:
            reports += [scan_file(p, img_size, max_pixels, max_bytes) for p in candidates]
    return sorted(reports, key=lambda r: r.path)


# ---------------------------------------------------------------------------
# Conversion (training and test time use the same pixels)
# ---------------------------------------------------------------------------

def convert_to_png(src: str, dst: str) -> None:
    """Write an 8-bit RGB PNG copy of `src` (`to_rgb8`) at `dst` atomically."""
    from PIL import Image
    with pil_guard(), Image.open(src) as im:
        buffer = io.BytesIO()
        to_rgb8(im).save(buffer, format="PNG", compress_level=1)
    write_bytes_atomic(dst, buffer.getvalue())


# ---------------------------------------------------------------------------
# Whole data set
# ---------------------------------------------------------------------------

@dataclass
class DomainReport:
    domain: str
    folder: str
    files: list[FileReport] = field(default_factory=list)
    error: str | None = None  # the folder is missing or cannot be listed

    def _paths(self, *actions) -> list[str]:
        return [r.path for r in self.files if r.action in actions]

    @property
    def usable(self) -> list[str]:
        """Usable files (as is or after conversion), in training order."""
        return self._paths(USE, CONVERT)

    @property
    def convert(self) -> list[str]:
        return self._paths(CONVERT)

    @property
    def skipped(self) -> list[FileReport]:
        return [r for r in self.files if r.action == SKIP]

    @property
    def ignored(self) -> list[FileReport]:
        return [r for r in self.files if r.action == IGNORE]

    @property
    def warned(self) -> list[FileReport]:
        return [r for r in self.files if r.action == USE and r.problems]

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(c for r in self.files for c in r.problems))

    def summary(self) -> str:
        if self.error:
            return f"{self.domain}: {self.error}"
        n_images = sum(r.action != IGNORE for r in self.files)
        text = f"{self.domain}: {len(self.usable)} usable of {n_images} image files"
        parts = []
        if self.convert:
            parts.append(f"{len(self.convert)} to convert")
        if self.warned:
            parts.append(f"{len(self.warned)} with warnings")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.ignored:
            parts.append(f"{len(self.ignored)} other entries ignored")
        return text + (f" ({', '.join(parts)})" if parts else "")


@dataclass
class DatasetReport:
    root: str
    img_size: int
    domains: dict[str, DomainReport]
    required: tuple[str, ...] = TRAIN_DOMAINS
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        """Training can proceed: every training domain has at least one usable image."""
        return all(d in self.domains and self.domains[d].usable for d in self.required)

    @property
    def counts(self) -> dict[str, int]:
        total = collections.Counter()
        for d in self.domains.values():
            total.update(d.counts)
        return dict(sorted(total.items()))

    def problems(self) -> list[str]:
        """Why training cannot proceed (empty when it can)."""
        out = []
        for name in self.required:
            d = self.domains.get(name)
            if d is None or d.error:
                out.append(f"{name}: {d.error if d else 'not checked'}")
            elif not d.usable:
                out.append(f"{name}: no usable image in {d.folder}")
        return out

    def text(self, max_lines: int = 100) -> str:
        lines = [f"Data set check of {self.root} (--img_size {self.img_size}): "
                 f"{sum(len(d.files) for d in self.domains.values())} entries in "
                 f"{self.seconds:.1f}s"]
        labels = ((SKIP, "skipped "), (CONVERT, "convert "), (USE, "warning "),
                  (IGNORE, "ignored "))
        for d in self.domains.values():
            lines.append(d.summary())
            for action, label in labels:
                listed = [r for r in d.files if r.action == action and r.problems]
                for r in listed[:max_lines]:
                    lines.append(f"  {label} {r.line()}")
                if len(listed) > max_lines:
                    lines.append(f"  {label} ... and {len(listed) - max_lines} more")
        counts = self.counts
        if counts:
            lines.append("Problems: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if self.usable:
            usable = ", ".join(f"{n} {len(self.domains[n].usable)}" for n in self.required)
            lines.append(f"OK: training can proceed ({usable} usable images)")
        else:
            lines.append("NOT USABLE: training cannot proceed: " + "; ".join(self.problems()))
        return "\n".join(lines)


def check_folders(root: str, img_size: int, domains=DOMAINS, required=TRAIN_DOMAINS,
                  max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> DatasetReport:
    t0 = time.monotonic()
    out = {}
    for name in domains:
        folder = os.path.join(root, name)
        report = DomainReport(name, folder)
        if not os.path.isdir(folder):
            need = "needed for training" if name in required else "needed by --phase test"
            report.error = f"missing folder {folder} ({need})"
        else:
            try:
                report.files = scan_folder(folder, img_size, max_pixels, max_bytes)
            except DataError as e:
                report.error = str(e)
        out[name] = report
    return DatasetReport(root, img_size, out, tuple(required), time.monotonic() - t0)


def require_demo_dataset(config) -> None:
    """`--dataset demo` needs the committed demo data set: DataError with the command that
    makes it when it is missing (the runtime never draws it itself)."""
    root = os.path.join(config.dataset_dir, config.dataset)
    if config.dataset == "demo" and not os.path.isdir(os.path.join(root, "trainA")):
        raise DataError(f"the demo data set is missing ({root}/trainA does not exist): run "
                        f"python tools/make_demo_dataset.py --out {root}")


def check_dataset(config, domains=DOMAINS) -> DatasetReport:
    """Scan dataset_dir/dataset/{trainA,trainB,testA,testB} for `config.img_size`."""
    require_demo_dataset(config)
    return check_folders(os.path.join(config.dataset_dir, config.dataset), config.img_size,
                         domains)
