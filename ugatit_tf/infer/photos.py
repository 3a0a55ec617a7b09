"""Translate users' photos, folders of photos and videos with a U-GAT-IT model.

The model is abstracted as a callable::

    translate(batch) -> (images, heatmaps)

``batch`` is float32 NHWC in [-1, 1] (``img_size`` square), ``images`` is the
translated batch in [-1, 1] (same layout) and ``heatmaps`` is ``[N, h, w]``
(or ``[N, h, w, 1]``) CAM attention at any resolution.  A callable that
returns only ``images`` is accepted too (no attention panel then).

Typical use (what ``main.py --phase test --input PATH`` does)::

    summary = translate_paths(PATH, "results/test", translate=fn, img_size=256,
                              face_crop=True, paste_back=True, fallback="center")

Paths are checked before anything is read or written (``PathError``, one line: a missing
``--input``, a FIFO or device, an ``--output`` that is an existing file), and each photo is
refused before decoding when its headers declare more than the pixel budget
(common.images.load_rgb; the refusal is listed among the failed files).
"""

from __future__ import annotations

import glob as _glob
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ugatit_tf.common.files import PHOTO_EXTENSIONS as IMAGE_EXTENSIONS
from ugatit_tf.common.files import VIDEO_EXTENSIONS, PathError, check_path_kind, path_kind
from ugatit_tf.common.images import DEFAULT_MAX_PIXELS, load_rgb, to_uint8
from ugatit_tf.common.progress import ProgressBar
from ugatit_tf.infer import faces as F

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "NoFaceError",
    "FaceResult",
    "PhotoResult",
    "PhotoTranslator",
    "Summary",
    "VideoSummary",
    "expand_inputs",
    "is_video",
    "translate_paths",
    "translate_video",
]

PathLike = Union[str, os.PathLike]
TranslateFn = Callable[[np.ndarray], object]

FALLBACKS = ("error", "center")


class NoFaceError(ValueError):
    """No face was found and ``fallback='error'``."""

    def __init__(self, source: Optional[PathLike] = None):
        self.source = None if source is None else str(source)
        where = self.source if self.source is not None else "the image"
        super().__init__(
            f"no face found in {where}; use --fallback center to centre-crop instead")


# --------------------------------------------------------------------------
# Single photo
# --------------------------------------------------------------------------

@dataclass
class FaceResult:
    """One translated crop (a face, or the centre crop in fallback mode)."""

    face: Optional[F.Face]     # None for a centre crop
    crop: np.ndarray           # model input, uint8 [S, S, 3]
    translated: np.ndarray     # model output, uint8 [S, S, 3]
    heatmap: Optional[np.ndarray]  # float32 [S, S] in [0, 1] (None if the model gives none)
    overlay: np.ndarray        # attention overlay on the crop, uint8 [S, S, 3]
    matrix: np.ndarray         # 2x3 affine crop <- photo


@dataclass
class PhotoResult:
    """Result of ``PhotoTranslator.translate_photo``.

    output: the final image: the photo with translated faces pasted back
        (same size as the input) when ``paste_back``; otherwise the translated
        crop (several faces: crops side by side).
    mode: "face" or "center" (fallback / ``face_crop=False``).
    faces: one ``FaceResult`` per translated crop.
    sheet: ``input | output | attention`` sheet (one row per crop) or None.
    """

    output: np.ndarray
    mode: str
    faces: List[FaceResult] = field(default_factory=list)
    sheet: Optional[np.ndarray] = None

    @property
    def crops(self) -> List[np.ndarray]:
        return [f.crop for f in self.faces]

    @property
    def translated_crops(self) -> List[np.ndarray]:
        return [f.translated for f in self.faces]

    @property
    def heatmaps(self) -> List[Optional[np.ndarray]]:
        return [f.heatmap for f in self.faces]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


class PhotoTranslator:
    """Detect faces, crop them like the training data, translate, paste back.

    Args:
        translate: the model callable (see module docstring).
        img_size: the model's square input size.
        face_crop: detect faces and translate aligned head crops; if False,
            the centre square of the photo is translated (classic behaviour).
        paste_back: blend translated crops back into the photo (output has
            the photo's size).  Without it the output is the translated
            crop(s) at ``img_size``.  In centre mode the centre square is
            replaced (no feathering).
        fallback: what to do when no face is found: "error" (raise
            ``NoFaceError``) or "center" (translate the centre crop).
        detector: a ``FaceDetector`` (created on first use if None).
        margin, center_y, rotate: crop geometry, see ``faces.align_face``.
        feather, mask_shape: paste-back mask, see ``faces.paste_back``.
        max_faces: translate at most this many faces (largest first).
        batch_size: crops per ``translate`` call.
        make_sheet: build the attention sheet in the result.
    """

    def __init__(self, translate: TranslateFn, img_size: int = 256,
                 face_crop: bool = True, paste_back: bool = True,
                 fallback: str = "error", detector: Optional[F.FaceDetector] = None,
                 margin: float = F.DEFAULT_MARGIN, center_y: float = F.DEFAULT_CENTER_Y,
                 rotate: bool = True, feather: float = F.DEFAULT_FEATHER,
                 mask_shape: str = "ellipse", max_faces: Optional[int] = None,
                 batch_size: int = 8, make_sheet: bool = True):
        if not callable(translate):
            raise TypeError("translate must be a callable batch -> (images, heatmaps)")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        self.translate = translate
        self.img_size = int(img_size)
        self.face_crop = bool(face_crop)
        self.paste_back = bool(paste_back)
        self.fallback = fallback
        self._detector = detector
        self.margin = margin
        self.center_y = center_y
        self.rotate = rotate
        self.feather = feather
        self.mask_shape = mask_shape
        self.max_faces = max_faces
        self.batch_size = max(1, int(batch_size))
        self.make_sheet = make_sheet

    @property
    def detector(self) -> F.FaceDetector:
        if self._detector is None:
            self._detector = F.FaceDetector()
        return self._detector

    # -- model call ----------------------------------------------------------
    def run_model(self, crops: Sequence[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Translate uint8 crops; returns (uint8 [N,S,S,3], heatmaps [N,S,S] in [0,1] or None)."""
        S = self.img_size
        outs, heats = [], []
        has_heat = True
        for i in range(0, len(crops), self.batch_size):
            chunk = np.stack(crops[i:i + self.batch_size]).astype(np.float32) / 127.5 - 1.0
            res = self.translate(chunk)
            if isinstance(res, (tuple, list)):
                imgs = _to_numpy(res[0])
                hm = _to_numpy(res[1]) if len(res) > 1 and res[1] is not None else None
            else:
                imgs, hm = _to_numpy(res), None
            if imgs.ndim != 4 or imgs.shape[0] != len(chunk):
                raise ValueError(
                    f"translate returned images of shape {imgs.shape}, expected "
                    f"[{len(chunk)}, H, W, 3]")
            imgs = to_uint8(imgs)
            if imgs.shape[-1] == 1:
                imgs = np.repeat(imgs, 3, axis=-1)
            for im in imgs:
                if im.shape[:2] != (S, S):
                    im = cv2.resize(im, (S, S), interpolation=cv2.INTER_LINEAR)
                outs.append(im)
            if hm is None:
                has_heat = False
            else:
                hm = hm.reshape(hm.shape[0], *hm.shape[1:3]) if hm.ndim == 4 and hm.shape[-1] == 1 else hm
                for h in hm:
                    h = F._normalise_heatmap(h)
                    heats.append(np.clip(cv2.resize(h, (S, S), interpolation=cv2.INTER_LINEAR), 0, 1))
        return np.stack(outs), (np.stack(heats) if has_heat and heats else None)

    # -- main entry ----------------------------------------------------------
    def translate_photo(self, rgb: np.ndarray, source: Optional[PathLike] = None) -> PhotoResult:
        """Translate one RGB photo.  ``source`` is only used in error messages.

        Raises ``NoFaceError`` when face_crop is on, no face is found and
        ``fallback='error'``.
        """
        rgb = F.as_rgb_uint8(rgb)
        S = self.img_size
        faces: list = []
        if self.face_crop:
            faces = self.detector.detect(rgb)
            if self.max_faces:
                faces = sorted(faces, key=lambda f: f.area, reverse=True)[: self.max_faces]
            if not faces and self.fallback == "error":
                raise NoFaceError(source)
        crops, mats = [], []
        if faces:
            mode = "face"
            for f in faces:
                c, M = F.align_face(rgb, f, S, margin=self.margin,
                                    center_y=self.center_y, rotate=self.rotate)
                crops.append(c)
                mats.append(M)
        else:
            mode = "center"
            c, M = F.center_crop(rgb, S)
            crops.append(c)
            mats.append(M)
            faces = [None]

        outs, heats = self.run_model(crops)
        results = []
        for i, (face, c, M) in enumerate(zip(faces, crops, mats)):
            h = heats[i] if heats is not None else None
            ov = F.heatmap_overlay(c, h) if h is not None else c.copy()
            results.append(FaceResult(face=face, crop=c, translated=outs[i],
                                      heatmap=h, overlay=ov, matrix=M))

        if self.paste_back:
            out = rgb
            for r in results:
                if mode == "face":
                    out = F.paste_back(out, r.translated, r.matrix,
                                       feather=self.feather, shape=self.mask_shape)
                else:
                    out = F.paste_back(out, r.translated, r.matrix, feather=0.0,
                                       shape="rect")
        else:
            out = np.hstack([r.translated for r in results]) if len(results) > 1 \
                else results[0].translated.copy()

        sheet = None
        if self.make_sheet:
            sheet = F.attention_sheet([r.crop for r in results],
                                      [r.translated for r in results],
                                      [r.overlay for r in results])
        return PhotoResult(output=out, mode=mode, faces=results, sheet=sheet)

    __call__ = translate_photo


# --------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------

def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def is_video(p: PathLike) -> bool:
    return Path(p).suffix.lower() in VIDEO_EXTENSIONS


def expand_inputs(inputs: Union[PathLike, Iterable[PathLike]]) -> List[Path]:
    """Expand a file, a folder (non-recursive, image extensions, hidden files
    skipped) or a glob pattern (``**`` allowed) -- or a list of those -- to a
    sorted, de-duplicated list of regular files.  Raises ``PathError`` (one line
    naming --input) for a missing path, a FIFO, device or socket, or when
    nothing matches."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: List[Path] = []
    for item in items:
        p = Path(item).expanduser()
        kind = path_kind(p)
        if kind == "file":
            found.append(p)
        elif kind == "folder":
            found.extend(sorted(q for q in p.iterdir()
                                if q.is_file() and _is_image(q) and not q.name.startswith(".")))
        elif kind == "missing" and _glob.has_magic(str(item)):
            found.extend(sorted(Path(q) for q in _glob.glob(os.path.expanduser(str(item)),
                                                            recursive=True)
                                if os.path.isfile(q)))
        else:
            check_path_kind(p, "--input", ("file", "folder"), "an image, a video or a folder")
    seen, out = set(), []
    for p in found:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    if not out:
        raise PathError(f"--input {inputs!s}: no images or videos found there "
                        f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
    return out


def _output_names(paths: Sequence[Path]) -> List[str]:
    """Base names for outputs: the file stem, disambiguated on collisions
    (``a.jpg`` + ``a.png`` -> ``a_jpg`` / ``a_png``; still clashing -> ``_2``...)."""
    stems = [p.stem for p in paths]
    counts = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    names, used = [], set()
    for p, s in zip(paths, stems):
        name = s if counts[s.lower()] == 1 else f"{s}_{p.suffix.lstrip('.').lower() or 'noext'}"
        base, k = name, 2
        while name.lower() in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name.lower())
        names.append(name)
    return names


def _check_output_dir(output_dir: Path, inputs: Sequence[Path]) -> None:
    """PathError unless `output_dir` is a folder or can be made one (its first existing
    ancestor a folder), and no input lives in it."""
    check_path_kind(output_dir, "--output", ("folder", "missing"), "a folder")
    parent = output_dir.absolute().parent
    while path_kind(parent) == "missing":
        parent = parent.parent
    check_path_kind(parent, "--output", ("folder",), "a folder")  # names the ancestor
    out_real = os.path.realpath(output_dir)
    for p in inputs:
        if os.path.realpath(p.parent) == out_real:
            raise ValueError(
                f"output folder '{output_dir}' is the folder of input '{p}'; choose "
                "another --output folder (inputs are never written over)")


@dataclass
class Summary:
    """Outcome of ``translate_paths``."""

    output_dir: str
    ok: List[Tuple[str, List[str]]] = field(default_factory=list)   # (input, [outputs])
    failed: List[Tuple[str, str]] = field(default_factory=list)     # (input, reason)
    seconds: float = 0.0
    n_faces: int = 0
    n_fallback: int = 0

    @property
    def n_ok(self) -> int:
        return len(self.ok)

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    def report(self) -> str:
        n = self.n_ok + self.n_failed
        lines = [f"{self.n_ok}/{n} translated, {self.n_failed} failed "
                 f"({self.n_faces} faces, {self.n_fallback} centre-cropped) in "
                 f"{self.seconds:.1f}s -> {self.output_dir}"]
        for path, reason in self.failed:
            lines.append(f"  FAILED {path}: {reason}")
        return "\n".join(lines)

    __str__ = report


def translate_paths(inputs: Union[PathLike, Iterable[PathLike]], output_dir: PathLike,
                    translate: Optional[TranslateFn] = None, img_size: int = 256, *,
                    translator: Optional[PhotoTranslator] = None,
                    face_crop: bool = True, paste_back: bool = True,
                    fallback: str = "error", detector: Optional[F.FaceDetector] = None,
                    write_sheet: bool = True, video_face_crop: Optional[bool] = None,
                    progress: bool = True, stream=None, verbose: bool = True,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Summary:
    """Translate a file, a folder (non-recursive) or a glob pattern.

    Writes ``NAME_translated.png`` and (``write_sheet``) ``NAME_sheet.png``
    into ``output_dir``, atomically.  Video files named explicitly (or
    matched by a glob) go through ``translate_video`` -> ``NAME_translated.mp4``
    (in face mode their frames without a face are centre-cropped with
    ``fallback='center'`` and copied unchanged otherwise).
    Refuses an ``output_dir`` that is the folder of any input (so inputs are
    never overwritten), or that is a file, FIFO or device (``PathError``).
    Per-file errors (unreadable file, over ``max_pixels``, no face found...)
    are recorded in the returned ``Summary`` and the remaining files are
    processed.  Pass either ``translate`` + options or a ready ``translator``.
    """
    stream = sys.stdout if stream is None else stream
    t0 = time.monotonic()
    if translator is None:
        if translate is None:
            raise TypeError("pass translate= (the model callable) or translator=")
        translator = PhotoTranslator(translate, img_size, face_crop=face_crop,
                                     paste_back=paste_back, fallback=fallback,
                                     detector=detector, make_sheet=write_sheet)
    paths = expand_inputs(inputs)
    output_dir = Path(output_dir).expanduser()
    _check_output_dir(output_dir, paths)
    output_dir.mkdir(parents=True, exist_ok=True)
    input_keys = {os.path.realpath(p) for p in paths}
    names = _output_names(paths)
    summary = Summary(output_dir=str(output_dir))

    def safe_target(name: str) -> Path:
        target = output_dir / name
        if os.path.realpath(target) in input_keys:
            raise FileExistsError(f"refusing to write '{target}': it is an input file")
        return target

    bar = ProgressBar(len(paths), label="translate", enabled=bool(progress))
    for path, name in zip(paths, names):
        try:
            if is_video(path):
                vs = translate_video(
                    path, safe_target(f"{name}_translated.mp4"), translator=translator,
                    face_crop=translator.face_crop if video_face_crop is None else video_face_crop,
                    fallback="center" if translator.fallback == "center" else "copy",
                    progress=False)
                summary.ok.append((str(path), [vs.output]))
            else:
                rgb = load_rgb(path, max_pixels)
                res = translator.translate_photo(rgb, source=path)
                outs = [str(F.save_image(safe_target(f"{name}_translated.png"), res.output))]
                if write_sheet and res.sheet is not None:
                    outs.append(str(F.save_image(safe_target(f"{name}_sheet.png"), res.sheet)))
                if res.mode == "face":
                    summary.n_faces += len(res.faces)
                else:
                    summary.n_fallback += 1
                summary.ok.append((str(path), outs))
        except NoFaceError:
            summary.failed.append((str(path), str(NoFaceError(path))))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # per-file failure: report and go on
            summary.failed.append((str(path), f"{type(e).__name__}: {e}"))
        bar.update(1, note=path.name)
    bar.close()
    summary.seconds = time.monotonic() - t0
    if verbose:
        stream.write(summary.report() + "\n")
        stream.flush()
    return summary


# --------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------

@dataclass
class VideoSummary:
    input: str
    output: str
    frames: int
    fps: float
    size: Tuple[int, int]       # (width, height)
    codec: str
    face_frames: int = 0        # frames translated with face crops
    fallback_frames: int = 0    # frames translated via the centre crop
    copied_frames: int = 0      # frames without a face written unchanged
    seconds: float = 0.0

    def report(self) -> str:
        return (f"{self.frames} frames {self.size[0]}x{self.size[1]} @ {self.fps:g} fps "
                f"({self.codec}) -> {self.output}: {self.face_frames} with faces, "
                f"{self.fallback_frames} centre-cropped, {self.copied_frames} unchanged, "
                f"{self.seconds:.1f}s")

    __str__ = report


def _same_file(a: PathLike, b: PathLike) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _open_writer(out_path: Path, fps: float, size: Tuple[int, int]):
    """Open a VideoWriter on a temp file next to the target: mp4v/.mp4 first,
    MJPG/.avi as fallback.  Returns (writer, tmp_path, final_path, codec)."""
    attempts = [("mp4v", ".mp4"), ("MJPG", ".avi")]
    if out_path.suffix.lower() == ".avi":
        attempts = [("MJPG", ".avi"), ("mp4v", ".mp4")]
    for codec, ext in attempts:
        final = out_path.with_suffix(ext)
        fd, tmp = tempfile.mkstemp(dir=str(out_path.parent), prefix=f".{final.stem}.",
                                   suffix=".tmp" + ext)
        os.close(fd)
        w = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), fps, size)
        if w.isOpened():
            return w, Path(tmp), final, codec
        w.release()
        try:
            os.unlink(tmp)
        except OSError:
            pass
    raise RuntimeError(f"cannot open a video writer for '{out_path}' (tried mp4v/.mp4 "
                       "and MJPG/.avi)")


def translate_video(in_path: PathLike, out_path: PathLike,
                    translate: Optional[TranslateFn] = None, img_size: int = 256, *,
                    translator: Optional[PhotoTranslator] = None,
                    face_crop: bool = False, fallback: str = "center",
                    detector: Optional[F.FaceDetector] = None,
                    max_frames: Optional[int] = None,
                    progress: bool = True, stream=None) -> VideoSummary:
    """Translate a video frame by frame; output keeps fps and frame size.

    Writes ``out_path`` (mp4v fourcc, .mp4); if that writer cannot be opened
    it falls back to MJPG in ``out_path`` with an .avi suffix (see the
    returned ``VideoSummary.output``).  The file is written to a temp name
    and moved into place at the end.  Refuses to write over the input.

    face_crop: translate detected faces and paste them back into each frame;
        otherwise the centre square of each frame is translated and put back.
    fallback (face mode, frames without a face): "center" -> translate the
        centre crop, "copy" -> write the frame unchanged, "error" -> stop with
        ``NoFaceError`` (no output file is left behind).
    """
    t0 = time.monotonic()
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.is_file():
        raise FileNotFoundError(f"video '{in_path}' does not exist")
    if fallback not in ("center", "copy", "error"):
        raise ValueError(f"fallback must be 'center', 'copy' or 'error', got {fallback!r}")
    for cand in {out_path, out_path.with_suffix(".mp4"), out_path.with_suffix(".avi")}:
        if _same_file(cand, in_path):
            raise ValueError(f"refusing to write the output over the input video '{in_path}'")
    if translator is None:
        if translate is None:
            raise TypeError("pass translate= (the model callable) or translator=")
        translator = PhotoTranslator(translate, img_size, detector=detector,
                                     make_sheet=False)
    # a per-frame translator: always pasted back (frame size is kept)
    vt = PhotoTranslator(
        translator.translate, translator.img_size, face_crop=face_crop, paste_back=True,
        fallback="center" if fallback == "center" else "error",
        detector=translator._detector if detector is None else detector,
        margin=translator.margin, center_y=translator.center_y, rotate=translator.rotate,
        feather=translator.feather, mask_shape=translator.mask_shape,
        max_faces=translator.max_faces, batch_size=translator.batch_size, make_sheet=False)

    cap = cv2.VideoCapture(str(in_path))
    if not cap.isOpened():
        raise F.ImageLoadError(f"cannot open video '{in_path}'")
    writer = tmp = None
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(fps) or fps <= 0:
            fps = 25.0
        W = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        H = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if max_frames:
            total = min(total, max_frames) if total > 0 else max_frames
        out_path.parent.mkdir(parents=True, exist_ok=True)
        bar = ProgressBar(total, label="video", stream=stream, enabled=bool(progress))
        summary = VideoSummary(input=str(in_path), output="", frames=0, fps=fps,
                               size=(W, H), codec="")
        while True:
            if max_frames and summary.frames >= max_frames:
                break
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if writer is None:
                H, W = bgr.shape[:2]
                summary.size = (W, H)
                writer, tmp, final, codec = _open_writer(out_path, fps, (W, H))
                if _same_file(final, in_path):
                    raise ValueError(f"refusing to write over the input video '{in_path}'")
                summary.output, summary.codec = str(final), codec
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            try:
                res = vt.translate_photo(rgb, source=f"{in_path} frame {summary.frames}")
                out = res.output
                if res.mode == "face":
                    summary.face_frames += 1
                else:
                    summary.fallback_frames += 1
            except NoFaceError:
                if fallback != "copy":
                    raise
                out = rgb
                summary.copied_frames += 1
            if out.shape[:2] != (H, W):
                out = cv2.resize(out, (W, H), interpolation=cv2.INTER_LINEAR)
            writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
            summary.frames += 1
            bar.update(1)
        bar.close()
        if writer is None:
            raise F.ImageLoadError(f"video '{in_path}' has no readable frames")
        writer.release()
        writer = None
        os.replace(tmp, summary.output)
        tmp = None
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    summary.seconds = time.monotonic() - t0
    return summary
