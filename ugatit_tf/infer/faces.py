"""Face detection, alignment, paste-back and attention visualisation.

U-GAT-IT (selfie2anime) is trained on centred, square head crops.  Users'
photos are not like that, so this module finds faces with OpenCV's Haar
cascades (shipped with ``opencv-python-headless`` 4.x, fully offline), crops
an aligned square around each head the way the training data looks, and can
warp the translated crop back into the original photo with a feathered mask.

Everything here works on RGB ``uint8`` numpy arrays of shape ``[H, W, 3]``.

Coordinate conventions
----------------------
* ``Face.box`` is ``(x, y, w, h)`` in photo pixels.
* Affine matrices are OpenCV style ``2x3`` float64 arrays that map *photo*
  coordinates to *crop* coordinates (``crop <- photo``):
  ``[u, v] = M @ [x, y, 1]``.  ``paste_back`` uses the same matrix.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np

from ugatit_tf.common.files import atomic_write

__all__ = [
    "Face",
    "FaceDetector",
    "CascadeNotFoundError",
    "DEFAULT_MARGIN",
    "DEFAULT_CENTER_Y",
    "DEFAULT_FEATHER",
    "save_image",
    "as_rgb_uint8",
    "nms",
    "face_matrix",
    "align_face",
    "center_crop",
    "warp_crop",
    "paste_back",
    "blend_mask",
    "heatmap_overlay",
]

PathLike = Union[str, os.PathLike]

# Margin around the detected face box, as a fraction of the box width added on
# EACH side.  crop side = box_w * (1 + 2 * margin); 0.375 -> the face box
# covers 1 / 1.75 = 57% of the crop width, which matches the selfie2anime
# crops (whole head with hair and a bit of neck).
DEFAULT_MARGIN = 0.375
# Vertical position of the face-box centre in the crop (0 = top, 1 = bottom).
# Slightly above the middle so that the hair fits above and the neck below.
DEFAULT_CENTER_Y = 0.45
# Width of the soft edge of the paste-back mask, as a fraction of crop size.
DEFAULT_FEATHER = 0.08

_FACE_CASCADE = "haarcascade_frontalface_default.xml"
_FACE_CASCADE_ALT = "haarcascade_frontalface_alt2.xml"
_EYE_CASCADE = "haarcascade_eye.xml"
# find_eyes scales each face to this width (px) before running the eye cascade.
_EYE_FACE_WIDTH = 160.0


class CascadeNotFoundError(RuntimeError):
    """The OpenCV Haar cascade XML files are missing or unreadable."""


# --------------------------------------------------------------------------
# Image I/O
# --------------------------------------------------------------------------

def as_rgb_uint8(image) -> np.ndarray:
    """Return ``image`` as a contiguous ``[H, W, 3]`` uint8 array.

    Accepts grayscale ``[H, W]`` / ``[H, W, 1]``, RGBA (alpha dropped) and
    float images in ``[0, 1]`` (anything with max <= 1) or ``[0, 255]``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape [H, W, 3], got {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def save_image(path: PathLike, rgb: np.ndarray) -> Path:
    """Write ``rgb`` atomically (common.files.atomic_write); the format follows the extension
    (PNG recommended). Returns the path."""
    from PIL import Image

    path = Path(path)
    rgb = as_rgb_uint8(rgb)
    fmt = Image.registered_extensions().get((path.suffix or ".png").lower(), "PNG")
    opts = {"compress_level": 3} if fmt == "PNG" else (
        {"quality": 95} if fmt in ("JPEG", "WEBP") else {})
    atomic_write(path, lambda f: Image.fromarray(rgb).save(f, format=fmt, **opts))
    return path


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Face:
    """A detected face.

    box:   ``(x, y, w, h)`` in photo pixels.
    score: confidence-ish score: the number of overlapping cascade detections
           that were merged into this box (higher = more certain; >= the
           detector's ``min_neighbors``).
    eyes:  ``((x_left, y_left), (x_right, y_right))`` eye centres in photo
           pixels (left = smaller x in the image), or ``None``.
    cascade: which cascade found it ("default" or "alt2").
    """

    box: tuple
    score: float
    eyes: Optional[tuple] = None
    cascade: str = "default"

    @property
    def center(self) -> tuple:
        x, y, w, h = self.box
        return (x + w / 2.0, y + h / 2.0)

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    @property
    def angle(self) -> float:
        """Tilt of the eye line in degrees (0 when no eyes were found).

        Positive when the right eye (larger x) is lower in the image.
        """
        if self.eyes is None:
            return 0.0
        (xl, yl), (xr, yr) = self.eyes
        return math.degrees(math.atan2(yr - yl, xr - xl))


def _iou_and_containment(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    iou = inter / union if union > 0 else 0.0
    small = min(aw * ah, bw * bh)
    contain = inter / small if small > 0 else 0.0
    return iou, contain


def nms(faces: Sequence[Face], iou_threshold: float = 0.3,
        containment_threshold: float = 0.7) -> list:
    """Greedy non-maximum suppression: keeps the highest-scoring (then
    largest) box and drops boxes that overlap it (IoU above
    ``iou_threshold`` or mostly contained in / containing it)."""
    order = sorted(faces, key=lambda f: (f.score, f.area), reverse=True)
    kept: list = []
    for f in order:
        ok = True
        for k in kept:
            iou, contain = _iou_and_containment(f.box, k.box)
            if iou > iou_threshold or contain > containment_threshold:
                ok = False
                break
        if ok:
            kept.append(f)
    return kept


class FaceDetector:
    """Frontal face detector built on OpenCV Haar cascades (offline).

    Uses ``haarcascade_frontalface_default.xml``; when it finds nothing,
    ``haarcascade_frontalface_alt2.xml`` is tried as a fallback.  Eyes are
    located with ``haarcascade_eye.xml`` inside each face for alignment.

    Args:
        min_size: smallest face to report, in pixels of the (possibly
            downscaled, see ``max_side``) detection image.
        scale_factor, min_neighbors: passed to ``detectMultiScale``.
        max_side: photos larger than this are downscaled for detection
            (boxes are returned in full-resolution coordinates).
        detect_eyes: look for eyes (needed for rotation alignment).
        use_fallback: try the alt2 cascade when the default one finds nothing.
        iou_threshold: NMS overlap threshold for duplicate removal.
        rel_score: drop detections whose score is below this fraction of the
            best one in the photo (weak background false positives next to a
            real face); 0 disables.
        min_score: drop detections with a lower score (0 = keep all that
            passed ``min_neighbors``).
        cascade_dir: folder with the XML files (default ``cv2.data.haarcascades``).
    """

    def __init__(self, min_size: int = 40, scale_factor: float = 1.1,
                 min_neighbors: int = 5, max_side: int = 1024,
                 detect_eyes: bool = True, use_fallback: bool = True,
                 iou_threshold: float = 0.3, rel_score: float = 0.25,
                 min_score: float = 0.0,
                 cascade_dir: Optional[PathLike] = None):
        self.min_size = int(min_size)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.max_side = int(max_side) if max_side else 0
        self.iou_threshold = float(iou_threshold)
        self.rel_score = float(rel_score)
        self.min_score = float(min_score)
        self.cascade_dir = self._find_cascade_dir(cascade_dir)
        self._face = self._load(_FACE_CASCADE, required=True)
        self._face_alt = (self._load(_FACE_CASCADE_ALT, required=False)
                          if use_fallback else None)
        self._eye = (self._load(_EYE_CASCADE, required=False)
                     if detect_eyes else None)

    # -- cascade loading ---------------------------------------------------
    @staticmethod
    def _find_cascade_dir(cascade_dir) -> Optional[Path]:
        if cascade_dir is not None:
            return Path(cascade_dir)
        data = getattr(cv2, "data", None)
        d = getattr(data, "haarcascades", None) if data is not None else None
        return Path(d) if d else None

    def _load(self, name: str, required: bool):
        hint = (
            f"OpenCV {cv2.__version__} is installed; the Haar cascades ship "
            "with OpenCV 4.x packages (OpenCV 5 dropped them). Install "
            "opencv-python-headless 4.x, e.g. "
            "pip install 'opencv-python-headless>=4.8,<5'."
        )
        if self.cascade_dir is None:
            msg = (f"cannot find the Haar cascade '{name}': cv2.data.haarcascades "
                   f"is not available. {hint}")
        else:
            path = self.cascade_dir / name
            if path.is_file():
                clf = cv2.CascadeClassifier(str(path))
                if not clf.empty():
                    return clf
                msg = f"the Haar cascade '{path}' could not be loaded. {hint}"
            else:
                msg = f"the Haar cascade '{path}' is missing. {hint}"
        if required:
            raise CascadeNotFoundError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return None

    # -- detection -----------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list:
        """Detect faces in an RGB uint8 photo.

        Returns a list of ``Face`` sorted by score (best first), with
        overlapping duplicates removed.
        """
        rgb = as_rgb_uint8(rgb)
        gray_full = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        H, W = gray_full.shape
        scale = 1.0
        gray = gray_full
        if self.max_side and max(H, W) > self.max_side:
            scale = self.max_side / float(max(H, W))
            gray = cv2.resize(gray_full, (max(1, round(W * scale)),
                                          max(1, round(H * scale))),
                              interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_size = max(1, min(self.min_size, gray.shape[0], gray.shape[1]))

        faces = self._run_cascade(self._face, gray, min_size, scale, "default")
        if not faces and self._face_alt is not None:
            faces = self._run_cascade(self._face_alt, gray, min_size, scale, "alt2")
        faces = nms(faces, self.iou_threshold)
        if faces:
            best = max(f.score for f in faces)
            faces = [f for f in faces
                     if f.score >= self.min_score and f.score >= self.rel_score * best]
        if self._eye is not None:
            faces = [self._with_eyes(f, gray_full) for f in faces]
        return faces

    def _run_cascade(self, clf, gray, min_size, scale, tag) -> list:
        if gray.shape[0] < min_size or gray.shape[1] < min_size:
            return []
        boxes, counts = clf.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size))
        out = []
        for (x, y, w, h), n in zip(np.asarray(boxes).reshape(-1, 4),
                                   np.asarray(counts).reshape(-1)):
            box = tuple(int(round(v / scale)) for v in (x, y, w, h))
            out.append(Face(box=box, score=float(n), cascade=tag))
        return out

    def _with_eyes(self, face: Face, gray_full: np.ndarray) -> Face:
        eyes = self.find_eyes(gray_full, face.box)
        if eyes is None:
            return face
        return Face(box=face.box, score=face.score, eyes=eyes, cascade=face.cascade)

    def find_eyes(self, gray: np.ndarray, box) -> Optional[tuple]:
        """Locate the two eyes inside a face box (full-resolution gray image).

        Returns ``((xl, yl), (xr, yr))`` in image pixels or ``None`` when no
        plausible pair is found (tilt beyond 35 degrees, wrong spacing...).
        """
        if self._eye is None:
            return None
        x, y, w, h = box
        window = _eye_window(gray, (x, y, w, h))
        if window is None:
            return None
        x0, y0, x1, y1 = window
        # normalise the face to ~160 px wide: the eye cascade's window is 20 px
        s = _EYE_FACE_WIDTH / float(w)
        cands = self._eye_candidates(_eye_roi(gray[y0:y1, x0:x1], s))
        if len(cands) < 2:
            return None
        eyes = _eye_centres(cands, s, (x0, y0), (x, y, w, h))
        return _best_eye_pair(eyes, w, h)

    def _eye_candidates(self, roi: np.ndarray) -> np.ndarray:
        """Eye cascade hits ``[N, 4]`` (x, y, w, h) in a face ROI normalised to 160 px wide."""
        fw = _EYE_FACE_WIDTH
        cands = self._eye.detectMultiScale(
            roi, scaleFactor=1.1, minNeighbors=3,
            minSize=(max(20, int(fw * 0.10)),) * 2,
            maxSize=(int(fw * 0.40),) * 2)
        return np.asarray(cands).reshape(-1, 4)


# --------------------------------------------------------------------------
# Eye search (FaceDetector.find_eyes)
# --------------------------------------------------------------------------

class _EyeCandidate(NamedTuple):
    """An eye cascade hit: its centre relative to the face box and in photo pixels."""

    rx: float     # centre x / face width, from the box's left edge
    ry: float     # centre y / face height, from the box's top edge
    x: float      # centre in photo pixels
    y: float
    size: float   # eye width / face width


def _eye_window(gray: np.ndarray, box: tuple) -> Optional[tuple]:
    """``(x0, y0, x1, y1)``: the upper part of the face box inside the image, None if tiny."""
    x, y, w, h = box
    H, W = gray.shape[:2]
    # upper ~60% of the face box: eyes live there
    y0, y1 = max(0, y), min(H, y + int(round(0.62 * h)))
    x0, x1 = max(0, x), min(W, x + w)
    if y1 - y0 < 8 or x1 - x0 < 8:
        return None
    return x0, y0, x1, y1


def _eye_roi(roi: np.ndarray, s: float) -> np.ndarray:
    """``roi`` resized by ``s`` and histogram-equalised, ready for the eye cascade."""
    roi = cv2.resize(roi, (max(1, round(roi.shape[1] * s)),
                           max(1, round(roi.shape[0] * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return cv2.equalizeHist(roi)


def _eye_centres(cands: np.ndarray, s: float, origin: tuple, box: tuple) -> list:
    """Cascade hits (ROI scaled by s, its corner at photo origin) 12-60% down the face box."""
    x0, y0 = origin
    x, y, w, h = box
    eyes = []
    # centres, relative to the face box (in units of the face width / height)
    for ex, ey, ew, eh in cands:
        cx = (ex + ew / 2.0) / s + (x0 - x)
        cy = (ey + eh / 2.0) / s + (y0 - y)
        rx, ry = cx / w, cy / h
        if 0.12 <= ry <= 0.6:
            eyes.append(_EyeCandidate(rx, ry, cx + x, cy + y, ew / s / w))
    return eyes


def _eye_pair_cost(left: _EyeCandidate, right: _EyeCandidate, w, h) -> Optional[float]:
    """How untypical ``left``/``right`` are as a pair of eyes (lower is better), or None."""
    if not (left.rx < 0.5 <= right.rx):  # each on its own side of the face's middle
        return None
    # spacing in face widths; the vertical offset converted from face heights to widths
    dx, dy = right.rx - left.rx, (right.ry - left.ry) * h / w
    if not (0.2 <= dx <= 0.7):
        return None
    ang = abs(math.degrees(math.atan2(dy, dx)))
    if ang > 35:
        return None
    # prefer level, symmetric pairs with typical spacing (~0.4 w)
    return (abs(dy) + abs(dx - 0.4)
            + abs((left.rx + right.rx) / 2 - 0.5) + abs(left.size - right.size))


def _best_eye_pair(eyes: list, w, h) -> Optional[tuple]:
    """``((xl, yl), (xr, yr))`` of the lowest-cost pair among ``eyes``, or None."""
    best = None
    for left in eyes:
        for right in eyes:
            cost = _eye_pair_cost(left, right, w, h)
            if cost is None:
                continue
            if best is None or cost < best[0]:
                best = (cost, (left.x, left.y), (right.x, right.y))
    if best is None:
        return None
    return (tuple(map(float, best[1])), tuple(map(float, best[2])))


# --------------------------------------------------------------------------
# Alignment / cropping
# --------------------------------------------------------------------------

def face_matrix(face: Face, size: int, margin: float = DEFAULT_MARGIN,
                center_y: float = DEFAULT_CENTER_Y, rotate: bool = True) -> np.ndarray:
    """Affine ``2x3`` matrix (crop <- photo) for the aligned head crop."""
    x, y, w, h = face.box
    cx, cy = face.center
    side = max(w, h) * (1.0 + 2.0 * float(margin))
    s = float(size) / side
    angle = face.angle if (rotate and face.eyes is not None) else 0.0
    M = cv2.getRotationMatrix2D((cx, cy), angle, s).astype(np.float64)
    M[0, 2] += size / 2.0 - cx
    M[1, 2] += size * float(center_y) - cy
    return M


def warp_crop(photo: np.ndarray, matrix: np.ndarray, size: int,
              border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Apply ``matrix`` (crop <- photo) and return the ``size x size`` crop.

    Strong downscaling is done with an area filter first (no aliasing on
    large photos); only the needed part of the photo is touched.
    """
    photo = as_rgb_uint8(photo)
    H, W = photo.shape[:2]
    M = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    scale = math.sqrt(abs(np.linalg.det(M[:, :2])))
    if scale < 0.9:
        inv = cv2.invertAffineTransform(M)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]],
                           dtype=np.float64)
        pts = corners @ inv.T
        x0 = int(np.clip(math.floor(pts[:, 0].min()) - 2, 0, W - 1))
        y0 = int(np.clip(math.floor(pts[:, 1].min()) - 2, 0, H - 1))
        x1 = int(np.clip(math.ceil(pts[:, 0].max()) + 3, x0 + 1, W))
        y1 = int(np.clip(math.ceil(pts[:, 1].max()) + 3, y0 + 1, H))
        sub = photo[y0:y1, x0:x1]
        nw = max(1, int(round(sub.shape[1] * scale)))
        nh = max(1, int(round(sub.shape[0] * scale)))
        small = cv2.resize(sub, (nw, nh), interpolation=cv2.INTER_AREA)
        kx, ky = nw / float(sub.shape[1]), nh / float(sub.shape[0])
        # small pixel centre (u+.5)/k - .5 + x0 in photo coordinates
        T = np.array([[1 / kx, 0, x0 + 0.5 / kx - 0.5],
                      [0, 1 / ky, y0 + 0.5 / ky - 0.5],
                      [0, 0, 1]], dtype=np.float64)
        M2 = M @ T
        return cv2.warpAffine(small, M2, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=border)
    return cv2.warpAffine(photo, M, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=border)


def align_face(photo: np.ndarray, face: Face, size: int = 256,
               margin: float = DEFAULT_MARGIN, center_y: float = DEFAULT_CENTER_Y,
               rotate: bool = True) -> tuple:
    """Crop an aligned square head crop like the selfie2anime training data.

    If both eyes were found (and ``rotate``), the crop is rotated so the eye
    line is horizontal.  The crop side is ``max(w, h) * (1 + 2 * margin)``
    (default: face box ~57% of the crop width) and the face-box centre sits
    at ``center_y`` of the crop height (default 0.45: slightly above centre).
    Parts outside the photo are filled by replicating its border.

    Returns ``(crop_uint8 [size, size, 3], matrix 2x3 crop <- photo)``.
    """
    M = face_matrix(face, size, margin=margin, center_y=center_y, rotate=rotate)
    return warp_crop(photo, M, size), M


def center_crop(photo: np.ndarray, size: Optional[int] = None) -> tuple:
    """Largest centred square of ``photo`` (resized to ``size`` if given).

    Returns ``(crop_uint8, matrix 2x3 crop <- photo)`` so it can be pasted
    back like a face crop.
    """
    photo = as_rgb_uint8(photo)
    H, W = photo.shape[:2]
    side = min(H, W)
    x0, y0 = (W - side) // 2, (H - side) // 2
    size = int(size) if size else side
    s = size / float(side)
    # pixel-centre convention: photo pixel (x0 + i) -> crop pixel i*s + (s-1)/2
    M = np.array([[s, 0, -x0 * s + (s - 1) / 2.0],
                  [0, s, -y0 * s + (s - 1) / 2.0]], dtype=np.float64)
    sq = photo[y0:y0 + side, x0:x0 + side]
    if size == side:
        return np.ascontiguousarray(sq), M
    interp = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    return cv2.resize(sq, (size, size), interpolation=interp), M


# --------------------------------------------------------------------------
# Paste back
# --------------------------------------------------------------------------

def blend_mask(size: int, feather: float = DEFAULT_FEATHER,
               shape: str = "ellipse") -> np.ndarray:
    """Float32 ``[size, size]`` mask in [0, 1] in crop coordinates.

    ``shape``: "ellipse" (inscribed ellipse), "rounded" (rounded square) or
    "rect" (whole crop).  ``feather`` is the width of the soft edge as a
    fraction of ``size``; the mask is exactly 0 at the crop border for
    "ellipse"/"rounded" (and for "rect" when feather > 0).
    """
    size = int(size)
    f = max(0.0, float(feather)) * size
    if shape == "rect" and f <= 0:
        return np.ones((size, size), np.float32)
    m = np.zeros((size, size), np.float32)
    # the hard shape's edge sits ``f`` inside the crop border and is blurred
    # with sigma f/3: the mask is ~1 up to 2f from the border and exactly 0
    # on the border itself
    inset = int(math.ceil(f)) if f > 0 else 0
    c = (size - 1) / 2.0
    if shape == "ellipse":
        r = max(1, int(round(c - inset)))
        cv2.ellipse(m, (int(round(c)), int(round(c))), (r, r), 0, 0, 360, 1.0, -1,
                    lineType=cv2.LINE_AA)
    elif shape in ("rounded", "rect"):
        lo, hi = inset, size - 1 - inset
        if shape == "rect":
            m[lo:hi + 1, lo:hi + 1] = 1.0
        else:
            rad = max(1, int(round(0.22 * (hi - lo))))
            cv2.rectangle(m, (lo + rad, lo), (hi - rad, hi), 1.0, -1)
            cv2.rectangle(m, (lo, lo + rad), (hi, hi - rad), 1.0, -1)
            for px, py in ((lo + rad, lo + rad), (hi - rad, lo + rad),
                           (lo + rad, hi - rad), (hi - rad, hi - rad)):
                cv2.circle(m, (px, py), rad, 1.0, -1, lineType=cv2.LINE_AA)
    else:
        raise ValueError(f"unknown mask shape {shape!r}")
    if f > 0:
        sigma = max(0.5, f / 3.0)
        k = 2 * int(math.ceil(3 * sigma)) + 1
        m = cv2.GaussianBlur(m, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(m, 0.0, 1.0)


def paste_back(photo: np.ndarray, translated_crop: np.ndarray, matrix: np.ndarray,
               feather: float = DEFAULT_FEATHER, shape: str = "ellipse",
               crop_size: Optional[int] = None) -> np.ndarray:
    """Warp ``translated_crop`` back into ``photo`` and blend it in.

    ``matrix`` is the crop <- photo affine used to make the crop (from
    ``align_face`` / ``center_crop``).  If the translated crop has another
    resolution than the crop the matrix was made for, give ``crop_size``
    (the original crop side) and the matrix is rescaled.

    The blend mask is a Gaussian-feathered ellipse (or rounded square /
    rect, see ``blend_mask``).  Pixels where the warped mask is 0 are
    returned bit-for-bit unchanged.  Returns a new uint8 array.
    """
    photo = as_rgb_uint8(photo)
    crop = as_rgb_uint8(translated_crop)
    H, W = photo.shape[:2]
    S = crop.shape[0]
    if crop.shape[1] != S:
        raise ValueError(f"translated crop must be square, got {crop.shape}")
    M = _matrix_for_crop_side(matrix, S, crop_size)
    mask = blend_mask(S, feather, shape)

    # only work inside the photo-space bounding box of the crop
    x0, y0, x1, y1 = _crop_bounds_in_photo(M, S, W, H)
    out = photo.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    warped, wmask = _warp_into_region(crop, mask, M, (x0, y0, x1, y1))
    _blend_in_place(out[y0:y1, x0:x1], warped, wmask)
    return out


def _matrix_for_crop_side(matrix: np.ndarray, S: int, crop_size: Optional[int]) -> np.ndarray:
    """``matrix`` as a float64 2x3 copy, rescaled to an S-pixel crop if made for ``crop_size``."""
    M = np.asarray(matrix, dtype=np.float64).reshape(2, 3).copy()
    if crop_size and int(crop_size) != S:
        k = S / float(crop_size)
        M = np.array([[k, 0, (k - 1) / 2.0], [0, k, (k - 1) / 2.0]]) @ np.vstack(
            [M, [0, 0, 1]])
    return M


def _crop_bounds_in_photo(M: np.ndarray, S: int, W: int, H: int) -> tuple:
    """``(x0, y0, x1, y1)``: the S x S crop's bounding box in the photo, widened a bit, clipped."""
    inv = cv2.invertAffineTransform(M)
    corners = np.array([[-1, -1, 1], [S, -1, 1], [-1, S, 1], [S, S, 1]], np.float64)
    pts = corners @ inv.T
    x0 = int(np.clip(math.floor(pts[:, 0].min()) - 1, 0, W))
    y0 = int(np.clip(math.floor(pts[:, 1].min()) - 1, 0, H))
    x1 = int(np.clip(math.ceil(pts[:, 0].max()) + 2, 0, W))
    y1 = int(np.clip(math.ceil(pts[:, 1].max()) + 2, 0, H))
    return x0, y0, x1, y1


def _warp_into_region(crop: np.ndarray, mask: np.ndarray, M: np.ndarray,
                      region: tuple) -> tuple:
    """Crop and mask warped onto the photo region ``(x0, y0, x1, y1)``; mask < 1/1024 set to 0."""
    x0, y0, x1, y1 = region
    # region pixel (i, j) -> photo (i + x0, j + y0) -> crop M @ ...
    Mr = M.copy()
    Mr[:, 2] += M[:, 0] * x0 + M[:, 1] * y0
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    bw, bh = x1 - x0, y1 - y0
    warped = cv2.warpAffine(crop, Mr, (bw, bh), flags=flags,
                            borderMode=cv2.BORDER_REPLICATE)
    wmask = cv2.warpAffine(mask, Mr, (bw, bh), flags=flags,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    wmask[wmask < 1.0 / 1024.0] = 0.0
    return warped, wmask


def _blend_in_place(region: np.ndarray, warped: np.ndarray, wmask: np.ndarray) -> None:
    """Blend ``warped`` into ``region`` (in place) with weight ``wmask`` where it is > 0."""
    sel = wmask > 0
    if not sel.any():
        return
    a = wmask[sel][:, None]
    blended = region[sel].astype(np.float32) * (1.0 - a) + warped[sel].astype(np.float32) * a
    region[sel] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Attention visualisation
# --------------------------------------------------------------------------

def _normalise_heatmap(heatmap) -> np.ndarray:
    h = np.asarray(heatmap, dtype=np.float32)
    h = np.squeeze(h)
    if h.ndim == 3:  # [h, w, c] -> mean over channels
        h = h.mean(axis=-1)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {np.shape(heatmap)}")
    h = np.nan_to_num(h)
    lo, hi = float(h.min()), float(h.max())
    if hi - lo < 1e-12:
        return np.zeros_like(h, dtype=np.float32)
    return (h - lo) / (hi - lo)


def heatmap_overlay(rgb: np.ndarray, heatmap, alpha: float = 0.5,
                    cmap: str = "jet") -> np.ndarray:
    """Colour an attention heatmap and blend it over ``rgb``.

    The heatmap (any resolution, ``[h, w]`` or ``[h, w, 1]``) is min-max
    normalised to [0, 1], bilinearly upsampled to the image size and mapped
    through the matplotlib colormap ``cmap``.  Returns RGB uint8.
    """
    import matplotlib

    rgb = as_rgb_uint8(rgb)
    H, W = rgb.shape[:2]
    h = _normalise_heatmap(heatmap)
    h = cv2.resize(h, (W, H), interpolation=cv2.INTER_LINEAR)
    h = np.clip(h, 0.0, 1.0)
    colours = matplotlib.colormaps[cmap](h)[..., :3].astype(np.float32) * 255.0
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
