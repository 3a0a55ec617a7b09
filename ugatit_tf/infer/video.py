"""Translate a video frame by frame with a PhotoTranslator (faces pasted back, or the centre
square), keeping its frame size and rate; written to a temporary file and moved into place."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from ugatit_tf.common.files import file_mode
from ugatit_tf.common.progress import ProgressBar
from ugatit_tf.infer import faces as F
from ugatit_tf.infer.photos import NoFaceError, PathLike, PhotoTranslator, TranslateFn


class VideoError(ValueError):
    """A video cannot be opened or has no readable frames."""


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
        raise VideoError(f"cannot open video '{in_path}'")
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
            raise VideoError(f"video '{in_path}' has no readable frames")
        writer.release()
        writer = None
        os.chmod(tmp, file_mode())  # cv2 writes to a named file: atomic_write cannot serve
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
