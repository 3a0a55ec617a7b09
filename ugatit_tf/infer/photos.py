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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ugatit_tf.common.files import PHOTO_EXTENSIONS as IMAGE_EXTENSIONS
from ugatit_tf.common.files import (VIDEO_EXTENSIONS, PathError, check_path_kind, list_images,
                                    path_kind)
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
    "expand_inputs",
    "is_video",
    "attention_sheet",
    "translate_paths",
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
                if hm.ndim == 4 and hm.shape[-1] == 1:
                    hm = hm.reshape(hm.shape[0], *hm.shape[1:3])
                for h in hm:
                    h = cv2.resize(F._normalise_heatmap(h), (S, S), interpolation=cv2.INTER_LINEAR)
                    heats.append(np.clip(h, 0, 1))
        return np.stack(outs), (np.stack(heats) if has_heat and heats else None)

    # -- main entry ----------------------------------------------------------
    def translate_photo(self, rgb: np.ndarray, source: Optional[PathLike] = None) -> PhotoResult:
        """Translate one RGB photo.  ``source`` is only used in error messages.

        Raises ``NoFaceError`` when face_crop is on, no face is found and
        ``fallback='error'``.
        """
        rgb = F.as_rgb_uint8(rgb)
        faces = self._find_faces(rgb, source)
        mode, faces, crops, mats = self._crop_photo(rgb, faces)
        results = self._translate_crops(faces, crops, mats)
        out = self._compose_output(rgb, results, mode)
        sheet = None
        if self.make_sheet:
            sheet = attention_sheet([r.crop for r in results],
                                    [r.translated for r in results],
                                    [r.overlay for r in results])
        return PhotoResult(output=out, mode=mode, faces=results, sheet=sheet)

    def _find_faces(self, rgb: np.ndarray, source: Optional[PathLike]) -> list:
        """The faces to translate, largest first if capped ([] with face_crop off or none found)."""
        faces: list = []
        if self.face_crop:
            faces = self.detector.detect(rgb)
            if self.max_faces:
                faces = sorted(faces, key=lambda f: f.area, reverse=True)[: self.max_faces]
            if not faces and self.fallback == "error":
                raise NoFaceError(source)
        return faces

    def _crop_photo(self, rgb: np.ndarray, faces: list):
        """Returns (mode, faces, crops, matrices): aligned face crops, else the centre square."""
        S = self.img_size
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
        return mode, faces, crops, mats

    def _translate_crops(self, faces: list, crops: list, mats: list) -> List[FaceResult]:
        """Run the model on the crops; one ``FaceResult`` (with attention overlay) per crop."""
        outs, heats = self.run_model(crops)
        results = []
        for i, (face, c, M) in enumerate(zip(faces, crops, mats)):
            h = heats[i] if heats is not None else None
            ov = F.heatmap_overlay(c, h) if h is not None else c.copy()
            results.append(FaceResult(face=face, crop=c, translated=outs[i],
                                      heatmap=h, overlay=ov, matrix=M))
        return results

    def _compose_output(self, rgb: np.ndarray, results: List[FaceResult],
                        mode: str) -> np.ndarray:
        """The output image: crops pasted back into the photo, or the crops side by side."""
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
        return out

    __call__ = translate_photo


def _as_rows(x):
    if isinstance(x, np.ndarray) and x.ndim in (2, 3):
        return [x]
    return list(x)


# white pixels between the panels of a row and between the rows of a sheet
_SHEET_GAP = 4


def attention_sheet(input, output, heatmap_overlay, path: Optional[PathLike] = None,
                    titles: Sequence[str] = ("input", "output", "attention"),
                    height: Optional[int] = None) -> np.ndarray:
    """Side-by-side sheet ``input | output | attention`` with small titles.

    Each argument may be one image or a list of images (one row per item,
    e.g. one row per face).  Panels of a row are resized to a common height
    (``height`` or the tallest panel, capped at 512 px).  If ``path`` is given
    the sheet is written there atomically as PNG.  Returns the sheet (RGB
    uint8).
    """
    ins, outs, ovs = _as_rows(input), _as_rows(output), _as_rows(heatmap_overlay)
    if not (len(ins) == len(outs) == len(ovs)) or not ins:
        raise ValueError("input, output and heatmap_overlay need the same number of rows")
    rows = [_sheet_row((a, b, c), titles, height) for a, b, c in zip(ins, outs, ovs)]
    sheet = _stack_sheet_rows(rows)
    if path is not None:
        F.save_image(path, sheet)
    return sheet


def _sheet_row(images: Sequence, titles: Sequence[str], height: Optional[int]) -> np.ndarray:
    """One sheet row: the images at a common height, each under its title, gaps between."""
    panels = [F.as_rgb_uint8(p) for p in images]
    ph = int(height) if height else min(512, max(p.shape[0] for p in panels))
    resized = [_resize_to_height(p, ph) for p in panels]
    th = max(16, min(28, ph // 10))
    cols = []
    for p, title in zip(resized, titles):
        cols.append(_titled_panel(p, title, th))
        cols.append(np.full((th + ph, _SHEET_GAP, 3), 255, np.uint8))
    return np.hstack(cols[:-1])


def _resize_to_height(p: np.ndarray, ph: int) -> np.ndarray:
    """``p`` resized to ``ph`` pixels high, keeping its aspect ratio (``p`` itself if it is)."""
    pw = max(1, int(round(p.shape[1] * ph / float(p.shape[0]))))
    if p.shape[:2] == (ph, pw):
        return p
    interp = cv2.INTER_AREA if ph < p.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(p, (pw, ph), interpolation=interp)


def _titled_panel(p: np.ndarray, title: str, th: int) -> np.ndarray:
    """``p`` under a white strip ``th`` pixels high with ``title`` centred on it in black."""
    font_scale = th / 36.0
    strip = np.full((th, p.shape[1], 3), 255, np.uint8)
    (tw, tht), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    org = (max(2, (p.shape[1] - tw) // 2), (th + tht) // 2)
    cv2.putText(strip, title, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, p])


def _stack_sheet_rows(rows: List[np.ndarray]) -> np.ndarray:
    """The rows one under another with gaps, padded with white on the right to the widest."""
    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        if r.shape[1] < width:
            r = np.hstack([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)])
        padded.append(r)
        padded.append(np.full((_SHEET_GAP, width, 3), 255, np.uint8))
    return np.ascontiguousarray(np.vstack(padded[:-1]))


# --------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------

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
            found.extend(Path(q) for q in list_images(p, IMAGE_EXTENSIONS))
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
    translator = _ready_translator(translator, translate, img_size, face_crop=face_crop,
                                   paste_back=paste_back, fallback=fallback,
                                   detector=detector, write_sheet=write_sheet)
    paths = expand_inputs(inputs)
    output_dir = Path(output_dir).expanduser()
    _check_output_dir(output_dir, paths)
    output_dir.mkdir(parents=True, exist_ok=True)
    safe_target = _make_safe_target(output_dir, paths)
    names = _output_names(paths)
    summary = Summary(output_dir=str(output_dir))
    bar = ProgressBar(len(paths), label="translate", enabled=bool(progress))
    for path, name in zip(paths, names):
        _translate_file(path, name, translator, safe_target, summary, write_sheet=write_sheet,
                        video_face_crop=video_face_crop, max_pixels=max_pixels)
        bar.update(1, note=path.name)
    bar.close()
    summary.seconds = time.monotonic() - t0
    if verbose:
        stream.write(summary.report() + "\n")
        stream.flush()
    return summary


def _ready_translator(translator: Optional[PhotoTranslator], translate: Optional[TranslateFn],
                      img_size: int, *, face_crop: bool, paste_back: bool, fallback: str,
                      detector: Optional[F.FaceDetector], write_sheet: bool) -> PhotoTranslator:
    """``translator`` if given, else a PhotoTranslator built from ``translate`` and the options."""
    if translator is None:
        if translate is None:
            raise TypeError("pass translate= (the model callable) or translator=")
        translator = PhotoTranslator(translate, img_size, face_crop=face_crop,
                                     paste_back=paste_back, fallback=fallback,
                                     detector=detector, make_sheet=write_sheet)
    return translator


def _make_safe_target(output_dir: Path, inputs: Sequence[Path]) -> Callable[[str], Path]:
    """A function name -> ``output_dir / name`` that refuses (FileExistsError) an input file."""
    input_keys = {os.path.realpath(p) for p in inputs}

    def safe_target(name: str) -> Path:
        """``output_dir / name``, or FileExistsError when that is one of the inputs."""
        target = output_dir / name
        if os.path.realpath(target) in input_keys:
            raise FileExistsError(f"refusing to write '{target}': it is an input file")
        return target

    return safe_target


def _translate_file(path: Path, name: str, translator: PhotoTranslator,
                    safe_target: Callable[[str], Path], summary: Summary, *,
                    write_sheet: bool, video_face_crop: Optional[bool],
                    max_pixels: int) -> None:
    """Translate one photo or video; its outputs, or why it failed, go into ``summary``."""
    try:
        if is_video(path):
            outs = _translate_video_file(path, name, translator, safe_target, video_face_crop,
                                         max_pixels)
        else:
            outs, res = _translate_photo_file(path, name, translator, safe_target,
                                              write_sheet, max_pixels)
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


def _translate_video_file(path: Path, name: str, translator: PhotoTranslator,
                          safe_target: Callable[[str], Path],
                          video_face_crop: Optional[bool], max_pixels: int) -> List[str]:
    """Translate one video to ``NAME_translated.mp4`` (or .avi); returns [its output path]."""
    from ugatit_tf.infer.video import translate_video  # video builds on photos
    vs = translate_video(
        path, safe_target(f"{name}_translated.mp4"), translator=translator,
        face_crop=translator.face_crop if video_face_crop is None else video_face_crop,
        fallback="center" if translator.fallback == "center" else "copy",
        progress=False, max_pixels=max_pixels)
    return [vs.output]


def _translate_photo_file(path: Path, name: str, translator: PhotoTranslator,
                          safe_target: Callable[[str], Path], write_sheet: bool,
                          max_pixels: int) -> Tuple[List[str], PhotoResult]:
    """Write ``NAME_translated.png`` (and ``NAME_sheet.png``); returns (outputs, result)."""
    rgb = load_rgb(path, max_pixels)
    res = translator.translate_photo(rgb, source=path)
    outs = [str(F.save_image(safe_target(f"{name}_translated.png"), res.output))]
    if write_sheet and res.sheet is not None:
        outs.append(str(F.save_image(safe_target(f"{name}_sheet.png"), res.sheet)))
    return outs, res
