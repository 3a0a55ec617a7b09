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
from ugatit_tf.common.images import DEFAULT_MAX_PIXELS
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


class _TempVideo:
    """The output video: a writer on a temp file next to the target, opened at the first
    frame; ``commit`` moves it into place, ``discard`` removes whatever is left."""

    def __init__(self, in_path: Path, out_path: Path):
        self.in_path, self.out_path = in_path, out_path
        self.writer = self.tmp = None

    def open(self, fps: float, size: Tuple[int, int]) -> Tuple[str, str]:
        """Open the writer (see _open_writer); returns (output path, codec)."""
        self.writer, self.tmp, final, codec = _open_writer(self.out_path, fps, size)
        if _same_file(final, self.in_path):
            raise ValueError(f"refusing to write over the input video '{self.in_path}'")
        return str(final), codec

    def write(self, rgb: np.ndarray, size: Tuple[int, int]) -> None:
        """Write one RGB frame, resized first if it is not ``size`` (width, height)."""
        W, H = size
        if rgb.shape[:2] != (H, W):
            rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_LINEAR)
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def commit(self, output: str) -> None:
        """Close the writer and move the temp file to ``output``."""
        self.writer.release()
        self.writer = None
        os.chmod(self.tmp, file_mode())  # cv2 writes to a named file: atomic_write cannot serve
        os.replace(self.tmp, output)
        self.tmp = None

    def discard(self) -> None:
        """Release a writer still open and delete a temp file still there."""
        if self.writer is not None:
            self.writer.release()
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def translate_video(in_path: PathLike, out_path: PathLike,
                    translate: Optional[TranslateFn] = None, img_size: int = 256, *,
                    translator: Optional[PhotoTranslator] = None,
                    face_crop: bool = False, fallback: str = "center",
                    detector: Optional[F.FaceDetector] = None,
                    max_frames: Optional[int] = None,
                    progress: bool = True, stream=None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoSummary:
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
    max_pixels: the largest frame (width x height) decoded, the photos' budget; checked from
        the container's header before the first frame, then on the first frame decoded.
    """
    t0 = time.monotonic()
    in_path, out_path = Path(in_path), Path(out_path)
    _check_video_args(in_path, out_path, fallback)
    vt = _frame_translator(translator, translate, img_size, face_crop=face_crop,
                           fallback=fallback, detector=detector)
    cap = cv2.VideoCapture(str(in_path))
    if not cap.isOpened():
        raise VideoError(f"cannot open video '{in_path}'")
    video = _TempVideo(in_path, out_path)
    try:
        fps, size, total = _video_properties(cap, max_frames)
        _check_frame_size(in_path, size, max_pixels)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        bar = ProgressBar(total, label="video", stream=stream, enabled=bool(progress))
        summary = VideoSummary(input=str(in_path), output="", frames=0, fps=fps, size=size,
                               codec="")
        _translate_frames(cap, vt, video, summary, bar, fallback, max_frames, max_pixels)
        video.commit(summary.output)
    finally:
        cap.release()
        video.discard()
    summary.seconds = time.monotonic() - t0
    return summary


def _check_video_args(in_path: Path, out_path: Path, fallback: str) -> None:
    """Refuse a missing input, an unknown fallback and an output over the input."""
    if not in_path.is_file():
        raise FileNotFoundError(f"video '{in_path}' does not exist")
    if fallback not in ("center", "copy", "error"):
        raise ValueError(f"fallback must be 'center', 'copy' or 'error', got {fallback!r}")
    for cand in {out_path, out_path.with_suffix(".mp4"), out_path.with_suffix(".avi")}:
        if _same_file(cand, in_path):
            raise ValueError(f"refusing to write the output over the input video '{in_path}'")


def _frame_translator(translator: Optional[PhotoTranslator], translate: Optional[TranslateFn],
                      img_size: int, *, face_crop: bool, fallback: str,
                      detector: Optional[F.FaceDetector]) -> PhotoTranslator:
    """A PhotoTranslator for frames, with the settings of ``translator`` (or ``translate``)."""
    if translator is None:
        if translate is None:
            raise TypeError("pass translate= (the model callable) or translator=")
        translator = PhotoTranslator(translate, img_size, detector=detector,
                                     make_sheet=False)
    # a per-frame translator: always pasted back (frame size is kept)
    return PhotoTranslator(
        translator.translate, translator.img_size, face_crop=face_crop, paste_back=True,
        fallback="center" if fallback == "center" else "error",
        detector=translator._detector if detector is None else detector,
        margin=translator.margin, center_y=translator.center_y, rotate=translator.rotate,
        feather=translator.feather, mask_shape=translator.mask_shape,
        max_faces=translator.max_faces, batch_size=translator.batch_size, make_sheet=False)


def _video_properties(cap, max_frames: Optional[int]) -> Tuple[float, Tuple[int, int], int]:
    """Returns (fps, (width, height), frames to translate) as the container declares them."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0:
        fps = 25.0
    W = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    H = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if max_frames:
        total = min(total, max_frames) if total > 0 else max_frames
    return fps, (W, H), total


def _check_frame_size(in_path: Path, size: Tuple[int, int], max_pixels: int) -> None:
    """VideoError when frames of `size` (width, height) hold more than max_pixels pixels."""
    W, H = size
    if W * H > max_pixels:
        raise VideoError(f"video '{in_path}': frames of {W}x{H} = {W * H} pixels, over the "
                         f"limit of {max_pixels} pixels (the photos' budget)")


def _translate_frames(cap, vt: PhotoTranslator, video: _TempVideo, summary: VideoSummary,
                      bar: ProgressBar, fallback: str, max_frames: Optional[int],
                      max_pixels: int) -> None:
    """Translate and write each frame (at most ``max_frames``), counting them in ``summary``."""
    try:
        while not (max_frames and summary.frames >= max_frames):
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if video.writer is None:  # the container may have declared another size
                H, W = bgr.shape[:2]
                _check_frame_size(Path(summary.input), (W, H), max_pixels)
                summary.size = (W, H)
                summary.output, summary.codec = video.open(summary.fps, summary.size)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            out = _translate_frame(vt, rgb, f"{summary.input} frame {summary.frames}",
                                   fallback, summary)
            video.write(out, summary.size)
            summary.frames += 1
            bar.update(1)
    finally:  # also on an error: the terminal's line ends
        bar.close()
    if video.writer is None:
        raise VideoError(f"video '{summary.input}' has no readable frames")


def _translate_frame(vt: PhotoTranslator, rgb: np.ndarray, source: str, fallback: str,
                     summary: VideoSummary) -> np.ndarray:
    """Translate one RGB frame and count it; without a face and under "copy" it stays as is."""
    try:
        res = vt.translate_photo(rgb, source=source)
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
    return out
