"""Procedural "selfie2anime"-like demo data set.

Two image domains drawn with numpy + OpenCV from the same latent description
of a person (pose, skin tone, hair, eyes, mouth, background...):

* domain A, ``draw_photo``: a simple photo-like selfie (shaded skin, small
  realistic eyes, hair with strand texture, textured/blurred backgrounds,
  blur and film grain; stored as JPEG);
* domain B, ``draw_anime``: an anime-like drawing of the same person (flat
  cel colours with at most one shadow tone, big eyes with highlight dots,
  spiky hair, thick dark outlines, pastel backgrounds; stored as PNG).

Because both renderers read the same :class:`FaceLatents`, every test image
has a paired ground truth in the other domain (``testA_paired`` and
``testB_paired``); training folders use independent latents, so training is
unpaired exactly like selfie2anime.  Everything is deterministic in the seed.

Layout written by :func:`generate_demo_dataset`::

    <out>/trainA/0000.jpg ...   n_train photo-like selfies
    <out>/trainB/0000.png ...   n_train anime drawings (independent latents)
    <out>/testA/0000.jpg ...    n_test selfies
    <out>/testB/0000.png ...    n_test anime drawings
    <out>/testA_paired/0000.jpg anime rendering of testA/0000.jpg's latents
    <out>/testB_paired/0000.png photo rendering of testB/0000.png's latents
    <out>/README.md, <out>/manifest.json
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ugatit_tf.common.files import write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = [
    "FaceLatents",
    "sample_latents",
    "draw_photo",
    "draw_anime",
    "generate_demo_dataset",
    "ensure_demo_dataset",
    "is_complete",
    "SPLITS",
]

# Bump when the drawing changes so that ensure_demo_dataset regenerates.
GENERATOR_VERSION = 1

SPLITS = ("trainA", "trainB", "testA", "testB", "testA_paired", "testB_paired")
EXT_A = ".jpg"
EXT_B = ".png"
JPEG_QUALITY = 92

OUTLINE = (34, 26, 36)  # near-black ink of the anime outlines


# --------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------

SKIN_TONES = [
    (255, 226, 204), (246, 205, 178), (236, 188, 156), (222, 170, 130),
    (196, 140, 100), (165, 112, 76), (126, 84, 56), (96, 64, 44),
]
HAIR_COLOURS = [
    (24, 20, 20), (28, 24, 24), (52, 36, 28), (74, 50, 34), (104, 70, 44),
    (138, 70, 36), (170, 112, 62), (214, 178, 116), (232, 214, 170),
    (140, 136, 134), (196, 84, 130), (70, 96, 170),
]
HAIR_WEIGHTS = [3, 3, 4, 4, 3, 2, 2, 2, 1, 1, 1, 1]
EYE_COLOURS = [
    (70, 44, 28), (98, 64, 38), (60, 100, 150), (80, 120, 80),
    (120, 96, 54), (110, 120, 130), (40, 28, 22),
]
LIP_BASE = (196, 96, 96)


@dataclass(frozen=True)
class FaceLatents:
    """Everything both renderers need; shared between the A and B images."""

    face_x: float        # horizontal offset of the face centre (fraction of width)
    face_y: float        # vertical offset of the face centre (fraction of height)
    scale: float         # overall head scale
    rotation: float      # in-plane rotation in degrees
    yaw: float           # small head turn in [-1, 1] (shifts the features)
    face_width: float    # multiplier of the face width
    face_length: float   # multiplier of the face height
    skin: tuple          # RGB skin tone
    hair_colour: tuple   # RGB hair colour
    hair_length: float   # 0 short .. 1 long
    hair_style: int      # 0 side swept, 1 middle part, 2 straight bangs
    hair_volume: float   # 0..1 extra volume on top
    eye_colour: tuple    # RGB iris colour
    eye_size: float      # multiplier
    eye_spacing: float   # multiplier
    gaze: tuple          # iris offset (x, y) in [-1, 1]
    brow_tilt: float     # -1 sad .. 1 angry
    mouth_open: float    # 0 closed .. 1 open
    smile: float         # -0.3 .. 1
    lip_colour: tuple    # RGB
    shirt_colour: tuple  # RGB
    shirt_style: int     # 0 crew neck, 1 v-neck, 2 collar
    blush: float         # 0..1
    light: float         # key light side, -1 (from the left) .. 1 (from the right)
    bg_hue: float        # 0..1
    bg_kind: int         # photo background kind 0..3
    bg_seed: int         # seed of the random background details
    texture_seed: int    # seed of hair strands and film grain

    def to_dict(self):
        return dataclasses.asdict(self)


def _hsv(h, s, v):
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (r * 255.0, g * 255.0, b * 255.0)


def _to_hsv(c):
    return colorsys.rgb_to_hsv(*(float(x) / 255.0 for x in c))


def _mix(a, b, t):
    return tuple(float(x) * (1.0 - t) + float(y) * t for x, y in zip(a, b))


def _mul(c, f):
    if np.isscalar(f):
        f = (f, f, f)
    return tuple(float(np.clip(x * y, 0, 255)) for x, y in zip(c, f))


def _jitter(rng, c, amount):
    return tuple(int(np.clip(x + rng.normal(0, amount), 0, 255)) for x in c)


def _jitter_shade(rng, c, amount=0.1, chan=2.0):
    """Brightness jitter that keeps the hue of dark colours (black stays black)."""
    f = float(rng.uniform(1 - amount, 1 + amount))
    return tuple(int(np.clip(x * f + rng.normal(0, chan), 0, 255)) for x in c)


def sample_latents(rng: np.random.Generator) -> FaceLatents:
    """Draw one random person from ``rng`` (a ``numpy.random.Generator``)."""
    f = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    skin = _jitter(rng, skin, 5)
    hw = np.asarray(HAIR_WEIGHTS, float)
    hair = HAIR_COLOURS[int(rng.choice(len(HAIR_COLOURS), p=hw / hw.sum()))]
    hair = _jitter_shade(rng, hair, 0.12)
    eye = _jitter_shade(rng, EYE_COLOURS[int(rng.integers(len(EYE_COLOURS)))], 0.1)
    lip = _jitter(rng, _mix(LIP_BASE, skin, 0.35), 8)
    shirt = tuple(int(x) for x in _hsv(f(0, 1), f(0.15, 0.75), f(0.25, 0.9)))
    return FaceLatents(
        face_x=f(-0.06, 0.06),
        face_y=f(-0.04, 0.05),
        scale=f(0.86, 1.08),
        rotation=f(-12, 12),
        yaw=f(-1, 1),
        face_width=f(0.92, 1.08),
        face_length=f(0.94, 1.06),
        skin=skin,
        hair_colour=hair,
        hair_length=f(0, 1),
        hair_style=int(rng.integers(3)),
        hair_volume=f(0, 1),
        eye_colour=eye,
        eye_size=f(0.88, 1.12),
        eye_spacing=f(0.94, 1.06),
        gaze=(f(-1, 1), f(-0.6, 0.6)),
        brow_tilt=f(-1, 1),
        mouth_open=float(np.clip(rng.uniform(-0.6, 1.0), 0, 1)),
        smile=f(-0.3, 1),
        lip_colour=lip,
        shirt_colour=shirt,
        shirt_style=int(rng.integers(3)),
        blush=f(0, 1),
        light=f(-1, 1),
        bg_hue=f(0, 1),
        bg_kind=int(rng.integers(4)),
        bg_seed=int(rng.integers(2**31 - 1)),
        texture_seed=int(rng.integers(2**31 - 1)),
    )


# --------------------------------------------------------------------------
# Geometry helpers (canonical face coordinates: face centre at (0, 0), y
# down, 1 unit = half the canvas width at scale 1)
# --------------------------------------------------------------------------

def _arc(cx, cy, ax, ay, a0, a1, n=48):
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


def _catmull(ctrl, n=12, closed=False):
    """Catmull-Rom spline through the control points."""
    p = np.asarray(ctrl, float)
    if closed:
        p = np.concatenate([p[-1:], p, p[:2]])
    else:
        p = np.concatenate([p[:1], p, p[-1:]])
    out = []
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    if not closed:
        out.append(p[-2][None])
    return np.concatenate(out)


def _ribbon(pts, widths):
    """Polygon of a stroke of varying width along ``pts``."""
    pts = np.asarray(pts, float)
    w = np.broadcast_to(np.asarray(widths, float), (len(pts),))
    d = np.gradient(pts, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1)
    left = pts + nrm * (w[:, None] / 2)
    right = pts - nrm * (w[:, None] / 2)
    return np.concatenate([left, right[::-1]])


def _taper(n, wmax, wmin=0.0, power=0.7):
    t = np.linspace(0, 1, n)
    return wmin + (wmax - wmin) * np.sin(np.pi * t) ** power


def _smooth(x):
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


class _Canvas:
    """Float RGB canvas with a similarity transform from face coordinates."""

    def __init__(self, res, lat: FaceLatents):
        self.res = res
        self.img = np.zeros((res, res, 3), np.float32)
        th = np.deg2rad(lat.rotation)
        self.k = 0.5 * res * lat.scale  # pixels per face unit
        self.A = self.k * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        self.c = np.array([res * (0.5 + lat.face_x), res * (0.45 + lat.face_y)])
        self.Ainv = np.linalg.inv(self.A)

    def px(self, pts):
        return np.asarray(pts, float) @ self.A.T + self.c

    def grid(self, bbox=None):
        """Face coordinates (u, v) of the pixel centres inside ``bbox``."""
        y0, y1, x0, x1 = bbox if bbox is not None else (0, self.res, 0, self.res)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xs + 0.5 - self.c[0], ys + 0.5 - self.c[1]
        u = self.Ainv[0, 0] * dx + self.Ainv[0, 1] * dy
        v = self.Ainv[1, 0] * dx + self.Ainv[1, 1] * dy
        return u, v

    def _bbox(self, pxs, pad):
        allp = np.concatenate(pxs)
        x0 = int(max(np.floor(allp[:, 0].min() - pad), 0))
        y0 = int(max(np.floor(allp[:, 1].min() - pad), 0))
        x1 = int(min(np.ceil(allp[:, 0].max() + pad) + 1, self.res))
        y1 = int(min(np.ceil(allp[:, 1].max() + pad) + 1, self.res))
        if x1 <= x0 or y1 <= y0:
            return None
        return (y0, y1, x0, x1)

    def _raster(self, pxs, bbox, width_px=0, closed=True):
        y0, y1, x0, x1 = bbox
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        ip = [np.round((p - [x0 - 0.5, y0 - 0.5]) * 16).astype(np.int32) for p in pxs]
        if width_px <= 0:
            cv2.fillPoly(m, ip, 255, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(m, ip, closed, 255, max(int(round(width_px)), 1), cv2.LINE_AA, shift=4)
        return m.astype(np.float32) * (1.0 / 255.0)

    def mask(self, polys, width=0.0, closed=True, blur=0.0, clip=None):
        """Rasterise polygons (filled, or stroked when ``width`` > 0, in face
        units); returns (alpha, bbox) or (None, None) when off-canvas."""
        if isinstance(polys, np.ndarray):
            polys = [polys]
        pxs = [self.px(p) for p in polys]
        wpx = width * self.k
        sig = blur * self.k
        bbox = self._bbox(pxs, 2 + wpx + 3 * sig)
        if bbox is None:
            return None, None
        m = self._raster(pxs, bbox, wpx, closed)
        if sig > 0.3:
            m = cv2.GaussianBlur(m, (0, 0), sig)
        if clip is not None:
            cpolys = [clip] if isinstance(clip, np.ndarray) else clip
            m *= self._raster([self.px(p) for p in cpolys], bbox)
        return m, bbox

    def paint(self, m, bbox, colour, alpha=1.0):
        if m is None:
            return
        y0, y1, x0, x1 = bbox
        dst = self.img[y0:y1, x0:x1]
        if callable(colour):
            u, v = self.grid(bbox)
            col = colour(u, v)
        elif isinstance(colour, np.ndarray) and colour.ndim == 3:
            col = colour[y0:y1, x0:x1]
        else:
            col = np.asarray(colour, np.float32)
        a = (m * alpha)[..., None]
        dst += (col - dst) * a

    def fill(self, polys, colour, alpha=1.0, blur=0.0, clip=None):
        m, bbox = self.mask(polys, blur=blur, clip=clip)
        self.paint(m, bbox, colour, alpha)

    def stroke(self, pts, colour, width, closed=False, alpha=1.0, blur=0.0):
        m, bbox = self.mask(pts, width=width, closed=closed, blur=blur)
        self.paint(m, bbox, colour, alpha)

    def finish(self, size):
        img = np.clip(self.img, 0, 255)
        if self.res != size:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        return img


# --------------------------------------------------------------------------
# Shared head geometry
# --------------------------------------------------------------------------

@dataclass
class _Geom:
    W: float
    H: float
    fx: float     # horizontal feature shift from yaw
    eye_dx: float


def _geom(lat: FaceLatents) -> _Geom:
    W = 0.43 * lat.face_width
    H = 0.56 * lat.face_length
    return _Geom(W=W, H=H, fx=0.07 * lat.yaw, eye_dx=0.175 * lat.eye_spacing)


def _body_poly(lat, g):
    xs = np.linspace(-1.6, 1.6, 81)
    ax = np.abs(xs)
    y = 0.80 + 0.13 * _smooth((ax - 0.14) / 0.62) + 1.4 * np.maximum(ax - 0.82, 0) ** 2
    pts = np.stack([xs, y], 1)
    return np.concatenate([pts, [[1.6, 3.0], [-1.6, 3.0]]])


def _neckline(lat):
    if lat.shirt_style == 1:
        return np.array([[-0.2, 0.79], [0.0, 1.08], [0.2, 0.79], [0.0, 0.7]])
    if lat.shirt_style == 2:
        return np.concatenate([_arc(0, 0.8, 0.17, 0.1, 0, 180, 24), [[-0.17, 0.7], [0.17, 0.7]]])
    return np.concatenate([_arc(0, 0.79, 0.21, 0.13, 0, 180, 24), [[-0.21, 0.7], [0.21, 0.7]]])


def _collar(lat):
    """Two collar flaps (only for shirt_style 2)."""
    lf = np.array([[-0.17, 0.8], [-0.3, 0.8], [-0.24, 0.97], [-0.02, 0.9]])
    return [lf, lf * [-1, 1]]


def _neck_poly(g):
    nw = 0.15 * (g.W / 0.43)
    return np.array([[-nw, 0.25], [nw, 0.25], [nw * 1.05, 0.86], [0, 0.92], [-nw * 1.05, 0.86]])


def _face_poly_photo(g):
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x, y = np.cos(t), np.sin(t)
    low = y > 0
    x = x.copy()
    x[low] *= 1 - 0.2 * y[low] ** 2
    return np.stack([x * g.W, y * g.H], 1)


def _face_poly_anime(g):
    W, H = g.W, g.H
    upper = _arc(0, 0, W, H * 0.95, 180, 360, 40)  # forehead (under the hair)
    lower = _catmull([[W, 0.0], [W * 0.97, 0.2], [W * 0.72, 0.42], [W * 0.22, 0.58 * H / 0.56],
                      [0, 0.61 * H / 0.56], [-W * 0.22, 0.58 * H / 0.56], [-W * 0.72, 0.42],
                      [-W * 0.97, 0.2], [-W, 0.0]], n=8)
    return np.concatenate([upper[:-1], lower])


def _skull(g, lat, grow=1.0):
    vol = 0.05 + 0.07 * lat.hair_volume
    return (0.0, -0.06, g.W * 1.13 * grow, g.H * 1.0 + vol)


def _back_hair_end(lat):
    return 0.35 + 0.95 * lat.hair_length


def _has_back_hair(lat):
    return lat.hair_length > 0.3


# --------------------------------------------------------------------------
# Domain A: photo-like selfie
# --------------------------------------------------------------------------

def _photo_background(lat, res, rng):
    ys, xs = np.mgrid[0:res, 0:res].astype(np.float32) / res
    h = lat.bg_hue
    s1, v1 = rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.9)
    c1 = np.array(_hsv(h, s1, v1), np.float32)
    c2 = np.array(_hsv(h + rng.uniform(-0.12, 0.12), rng.uniform(0.05, 0.45),
                       rng.uniform(0.25, 0.95)), np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    t = (np.cos(ang) * (xs - 0.5) + np.sin(ang) * (ys - 0.5)) * 1.2 + 0.5
    t = np.clip(t, 0, 1)[..., None]
    img = c1 * (1 - t) + c2 * t
    if lat.bg_kind == 1:  # out-of-focus blobs (bokeh)
        layer = img.copy()
        for _ in range(int(rng.integers(5, 10))):
            c = np.array(_hsv(h + rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.6),
                              rng.uniform(0.3, 1.0)), np.float32)
            cv2.circle(layer, (int(rng.uniform(0, res)), int(rng.uniform(0, res))),
                       int(rng.uniform(0.05, 0.25) * res), c.tolist(), -1, cv2.LINE_AA)
        img = cv2.GaussianBlur(layer, (0, 0), res * 0.06)
    elif lat.bg_kind == 2:  # mottled wall / foliage-like low frequency texture
        n = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
        n = cv2.resize(n, (res, res), interpolation=cv2.INTER_CUBIC)
        m = rng.normal(0, 1, (24, 24)).astype(np.float32)
        m = cv2.resize(m, (res, res), interpolation=cv2.INTER_CUBIC)[..., None]
        img = img * (1 + 0.12 * n + 0.06 * m)
    elif lat.bg_kind == 3:  # indoor: wall with a door/window edge and a shelf
        x_edge = rng.uniform(0.15, 0.85)
        c3 = np.array(_hsv(h + 0.5, rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.9)), np.float32)
        sel = (xs > x_edge) if rng.uniform() < 0.5 else (xs < x_edge)
        img = np.where(sel[..., None], img * 0.6 + c3 * 0.4, img)
        y_edge = rng.uniform(0.05, 0.4)
        img = np.where((ys < y_edge)[..., None], img * 1.12, img)
        img = cv2.GaussianBlur(img, (0, 0), res * 0.012)
    # a soft light fall-off
    vig = 1.0 - 0.25 * ((xs - 0.5) ** 2 + (ys - 0.45) ** 2)
    return np.clip(img * vig[..., None], 0, 255).astype(np.float32)


def _hair_texture(cv, lat, rng, base):
    """Full-canvas hair colour with strands radiating from the crown."""
    u, v = cv.grid()
    # crown (where the strands start): off-centre for the side part
    cu, cvv = 0.035 * lat.yaw + (0.08 if lat.hair_style == 0 else 0.0), -0.62
    ang = np.arctan2(v - cvv, u - cu)  # -pi..pi
    rad = np.sqrt((u - cu) ** 2 + (v - cvv) ** 2)
    na, nr = 720, 6
    noise = rng.normal(0, 1, (nr, na)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=1.1, sigmaY=0.01)
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (nr, na)).astype(np.float32), (0, 0), 8)
    mx = ((ang + np.pi) / (2 * np.pi) * na).astype(np.float32)
    my = np.clip(rad / 2.2 * (nr - 1), 0, nr - 1).astype(np.float32)
    s = cv2.remap(noise, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    c = cv2.remap(coarse, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    s = s / (s.std() + 1e-6)
    c = c / (c.std() + 1e-6)
    lum = _to_hsv(base)[2]
    sheen_r = 0.45 + 0.05 * lat.hair_volume
    sheen = np.exp(-((rad - sheen_r) / 0.07) ** 2) * np.clip(np.cos(ang + np.pi / 2 + 0.4), 0, 1)
    shade = 1.0 + 0.13 * s + 0.1 * c + (0.55 - 0.35 * lum) * sheen * (1 + 0.4 * s)
    shade -= 0.35 * _smooth((v - 0.2) / 1.2)  # darker further down
    col = np.asarray(base, np.float32)
    out = col * shade[..., None] + 12.0 * (0.35 + sheen[..., None]) * (s[..., None] > 1.2)
    return np.clip(out, 0, 255).astype(np.float32)


def _photo_hair_front(lat, g):
    """Hair cap + side hair; returns the polygon."""
    cx, cy, ax, ay = _skull(g, lat)
    side_end = -0.05 if lat.hair_length < 0.2 else min(0.1 + 0.7 * lat.hair_length, 0.55)
    outer_r = _arc(cx, cy, ax, ay, 0, -90, 24)[::-1]  # top -> right side
    outer_l = _arc(cx, cy, ax, ay, -90, -180, 24)  # top -> left side
    top = np.concatenate([outer_l[::-1], outer_r[1:]])  # left side -> top -> right side
    right_down = np.array([[ax * 1.0, 0.0], [g.W * 1.08, side_end], [g.W * 0.93, side_end - 0.02]])
    left_down = right_down * [-1, 1]
    W = g.W
    hl = -0.33  # hairline height
    if lat.hair_style == 0:  # side part, fringe swept to one side
        hairline = _catmull([[W * 0.93, -0.08], [W * 0.75, -0.22], [W * 0.2, hl + 0.02],
                             [-W * 0.45, -0.2], [-W * 0.85, -0.1], [-W * 0.94, -0.02]], n=8)
    elif lat.hair_style == 1:  # middle part
        hairline = _catmull([[W * 0.93, -0.06], [W * 0.6, -0.28], [W * 0.1, hl - 0.05],
                             [0, hl - 0.08], [-W * 0.1, hl - 0.05], [-W * 0.6, -0.28],
                             [-W * 0.93, -0.06]], n=8)
    else:  # straight bangs
        hairline = _catmull([[W * 0.94, -0.05], [W * 0.8, -0.16], [W * 0.3, -0.19],
                             [-W * 0.3, -0.18], [-W * 0.8, -0.16], [-W * 0.94, -0.05]], n=8)
    return np.concatenate([top, right_down, hairline, left_down[::-1]])


def _photo_back_hair(lat, g):
    cx, cy, ax, ay = _skull(g, lat, 1.04)
    end = _back_hair_end(lat)
    wb = g.W * 1.18 + 0.1 * lat.hair_length
    top = _arc(cx, cy, ax, ay, 180, 360, 40)
    right = _catmull([[ax, cy], [wb, 0.3], [wb * 0.98, end - 0.05], [wb * 0.6, end],
                      [0, end - 0.04], [-wb * 0.6, end], [-wb * 0.98, end - 0.05],
                      [-wb, 0.3], [-ax, cy]], n=10)
    return np.concatenate([top, right])


def draw_photo(latents: FaceLatents, size: int = 128) -> np.ndarray:
    """Render the photo-like selfie (domain A) as uint8 ``size x size x 3`` RGB."""
    lat = latents
    ss = 2
    res = size * ss
    cv = _Canvas(res, lat)
    g = _geom(lat)
    rng_bg = np.random.default_rng(lat.bg_seed)
    rng = np.random.default_rng(lat.texture_seed)
    cv.img[:] = _photo_background(lat, res, rng_bg)

    skin = np.asarray(lat.skin, np.float32)
    hair_tex = _hair_texture(cv, lat, rng, lat.hair_colour)
    W, H, fx = g.W, g.H, g.fx
    ldir = float(np.clip(lat.light, -1, 1))

    # hair behind the head
    if _has_back_hair(lat):
        cv.fill(_photo_back_hair(lat, g), hair_tex * 0.8, blur=0.006)

    # body / shirt with soft shading
    shirt = np.asarray(lat.shirt_colour, np.float32)

    def shirt_col(u, v):
        sh = 1.0 - 0.25 * _smooth(np.abs(u) / 1.3) + 0.1 * np.clip(u * 0.5 * ldir, -1, 1) \
             - 0.15 * _smooth((v - 0.8) / 0.5)
        return shirt * sh[..., None]

    cv.fill(_body_poly(lat, g), shirt_col)
    neck_col = lambda u, v: skin * (0.82 - 0.2 * _smooth(1 - (v - 0.4) / 0.45))[..., None]  # noqa: E731
    neckline = _neckline(lat)
    cv.fill(neckline, lambda u, v: skin * (0.85 - 0.1 * _smooth(np.abs(u) / 0.2))[..., None])
    if lat.shirt_style == 2:
        for flap in _collar(lat):
            cv.fill(flap, shirt * 1.08)
            cv.stroke(flap, shirt * 0.6, 0.012, closed=True, blur=0.004)
    cv.fill(_neck_poly(g), neck_col)
    # shadow cast by the head on the neck
    cv.fill(_arc(fx * 0.3, H * 0.8, W * 0.55, 0.16, 0, 180, 30), skin * 0.55, alpha=0.6, blur=0.04,
            clip=_neck_poly(g))

    # ears
    for sgn in (-1, 1):
        ear = _arc(sgn * (W * 0.98) + fx * 0.3, 0.03, 0.065, 0.12, 0, 360, 30)
        cv.fill(ear, skin * 0.9)
        cv.fill(_arc(sgn * (W * 0.99) + fx * 0.3, 0.04, 0.03, 0.07, 0, 360, 20), skin * 0.7,
                alpha=0.6, blur=0.01)

    # face with radial shading and rosy cheeks
    face = _face_poly_photo(g)
    front_hair = _photo_hair_front(lat, g)
    blush_c = np.array([230, 120, 120], np.float32)

    mottle = cv2.resize(rng.normal(0, 1, (10, 10)).astype(np.float32), (res, res),
                        interpolation=cv2.INTER_CUBIC)

    def face_col(u, v):
        r2 = (u / W) ** 2 + (v / H) ** 2
        sh = 1.07 - 0.2 * r2 ** 1.5
        sh = sh + 0.13 * ldir * np.tanh(2.2 * (u - fx * 0.6) / W)  # key light side
        sh = sh - 0.06 * _smooth((v - 0.3) / 0.3)  # jaw
        for sgn in (-1, 1):  # hollow below the cheekbones
            sh = sh - 0.07 * np.exp(-(((u - sgn * 0.3 - fx * 0.5) / 0.08) ** 2
                                      + ((v - 0.3) / 0.1) ** 2))
        # forehead / cheekbone sheen on the lit side
        sh = sh + 0.07 * np.exp(-(((u - fx - 0.05 * ldir) / 0.12) ** 2 + ((v + 0.22) / 0.08) ** 2))
        sh = sh + 0.06 * np.exp(-(((u - fx - 0.22 * ldir) / 0.07) ** 2 + ((v - 0.08) / 0.05) ** 2))
        col = skin * sh[..., None]
        ck = 0
        for sgn in (-1, 1):
            ck = ck + np.exp(-(((u - sgn * 0.2 - fx) / 0.09) ** 2 + ((v - 0.16) / 0.07) ** 2))
        return col + (blush_c - col) * (0.12 + 0.1 * lat.blush) * ck[..., None]

    cv.fill(face, face_col)
    cv.fill(face, skin * 0.9 * (1 + 0.06 * mottle[..., None]), alpha=0.35)  # skin texture
    # shadow of the hair on the forehead
    cv.fill(front_hair, skin * 0.6, alpha=0.55, blur=0.03, clip=face)

    # eyes
    es = lat.eye_size
    ew, eh = 0.085 * es, 0.036 * es
    for sgn in (-1, 1):
        ex, ey = sgn * g.eye_dx + fx, -0.02
        xs = np.linspace(-1, 1, 25)
        asym = 0.25 * sgn * xs  # outer corner slightly higher
        upper = np.stack([ex + ew * xs, ey - eh * (1 - xs ** 2) ** 0.8 - 0.008 * asym], 1)
        lower = np.stack([ex + ew * xs, ey + 0.75 * eh * (1 - xs ** 2) ** 1.1 - 0.008 * asym], 1)
        almond = np.concatenate([upper, lower[::-1]])
        # socket shading and crease
        cv.fill(_arc(ex, ey - 0.01, ew * 1.35, eh * 2.0, 0, 360, 30), skin * 0.78, alpha=0.35,
                blur=0.025)
        cv.fill(almond, (232, 226, 222))
        gx, gy = lat.gaze
        ir = 0.033 * es
        icx, icy = ex + gx * ew * 0.35, ey + gy * eh * 0.2
        eye_c = np.asarray(lat.eye_colour, np.float32)

        def iris_col(u, v, icx=icx, icy=icy):
            r = np.sqrt((u - icx) ** 2 + (v - icy) ** 2) / ir
            return eye_c * (1.25 - 0.55 * np.clip(r, 0, 1) ** 2)[..., None]

        cv.fill(_arc(icx, icy, ir, ir, 0, 360, 30), iris_col, clip=almond)
        cv.fill(_arc(icx, icy, ir * 0.42, ir * 0.42, 0, 360, 20), (12, 10, 10), clip=almond)
        cv.fill(_arc(icx - ir * 0.35, icy - ir * 0.35, ir * 0.18, ir * 0.18, 0, 360, 12),
                (250, 250, 250), alpha=0.9, clip=almond)
        # lid shadow on the eyeball, upper lid + lashes line, crease, lower lid
        cv.stroke(upper, (40, 30, 30), 0.012, alpha=0.35, blur=0.01)
        cv.fill(_ribbon(upper, _taper(len(upper), 0.016, 0.006, 0.4)), (36, 26, 24), alpha=0.95)
        crease = np.stack([ex + ew * 0.95 * xs, ey - eh * 1.7 * (1 - xs ** 2) ** 0.7 - 0.006], 1)
        cv.stroke(crease, skin * 0.62, 0.008, alpha=0.7, blur=0.006)
        cv.stroke(lower, skin * 0.6, 0.007, alpha=0.6, blur=0.005)

    # eyebrows
    brow_c = _mul(lat.hair_colour, 0.8)
    for sgn in (-1, 1):
        bx = sgn * g.eye_dx + fx
        t = np.linspace(-1, 1, 20)
        by = -0.125 - 0.03 * (1 - t ** 2) + 0.012 * lat.brow_tilt * sgn * t * -1
        brow = np.stack([bx + sgn * 0.11 * t, by], 1)
        wid = 0.024 * np.clip(1.1 - 0.5 * (sgn * t + 1) / 2, 0.4, 1) * (1 - 0.3 * np.abs(t) ** 4)
        cv.fill(_ribbon(brow, wid), brow_c, alpha=0.85, blur=0.006)

    # nose: side shadow, nostrils, tip highlight
    side = -1 if ldir > 0 else 1  # shadow side of the nose
    bridge = np.array([[fx + side * 0.035, -0.02], [fx + side * 0.045, 0.1], [fx + side * 0.055, 0.17]])
    cv.stroke(bridge, skin * 0.6, 0.022, alpha=0.6 + 0.2 * abs(ldir), blur=0.016)
    cv.stroke(bridge * [1, 1] + [-side * 0.07, 0], (255, 246, 236), 0.014, alpha=0.18, blur=0.012)
    for sgn in (-1, 1):
        cv.fill(_arc(fx + sgn * 0.04, 0.185, 0.022, 0.012, 0, 360, 16), skin * 0.45, alpha=0.8,
                blur=0.006)
    cv.fill(_arc(fx, 0.19, 0.07, 0.03, 0, 180, 20), skin * 0.7, alpha=0.35, blur=0.015)
    cv.fill(_arc(fx - 0.01, 0.14, 0.025, 0.02, 0, 360, 16), (255, 245, 235), alpha=0.25,
            blur=0.012)

    # mouth
    mx, my = fx, 0.31
    mw = 0.095 * (1 + 0.15 * lat.smile)
    op = lat.mouth_open
    up = 0.02 * lat.smile
    xs = np.linspace(-1, 1, 25)
    mid = np.stack([mx + mw * xs, my - up * xs ** 2], 1)
    gap = 0.05 * op
    # upper lip with a cupid's bow dip in the middle
    top_lip = np.stack([mx + mw * xs, my - up * xs ** 2 - 0.028 * (1 - xs ** 2) ** 0.6
                        + 0.008 * np.exp(-(xs / 0.12) ** 2)], 1)
    bot_lip = np.stack([mx + mw * 0.92 * xs, my - up * xs ** 2 + gap * (1 - xs ** 2)
                        + 0.034 * (1 - xs ** 2) ** 0.7], 1)
    lip = np.asarray(lat.lip_colour, np.float32)
    if op > 0.15:
        inner_low = np.stack([mx + mw * 0.85 * xs, my - up * xs ** 2 + gap * (1 - xs ** 2)], 1)
        inner = np.concatenate([mid, inner_low[::-1]])
        cv.fill(inner, (60, 24, 26))
        teeth = np.concatenate([mid, (mid + [0, gap * 0.45])[::-1]])
        cv.fill(teeth, (235, 228, 215), clip=inner)
        cv.fill(np.concatenate([top_lip, mid[::-1]]), lip * 0.92)
        cv.fill(np.concatenate([inner_low, bot_lip[::-1]]), lip)
    else:
        cv.fill(np.concatenate([top_lip, mid[::-1]]), lip * 0.88)
        cv.fill(np.concatenate([mid, bot_lip[::-1]]), lip)
        cv.stroke(mid, lip * 0.45, 0.008, blur=0.004)
    cv.fill(_arc(mx, my + 0.045 + gap, mw * 0.5, 0.012, 0, 360, 20), (255, 235, 225), alpha=0.25,
            blur=0.008)  # lower lip highlight
    cv.fill(_arc(mx, my + 0.085 + gap, mw * 0.6, 0.02, 0, 360, 20), skin * 0.7, alpha=0.3,
            blur=0.012)  # shadow under the lip

    # front hair (over the face)
    cv.fill(front_hair, hair_tex, blur=0.005)
    cv.stroke(front_hair, lat.hair_colour, 0.01, closed=True, alpha=0.5, blur=0.01)

    # camera: slight blur, downscale, colour cast, grain
    img = cv2.GaussianBlur(cv.img, (0, 0), 0.55 * ss)
    cv.img = img
    out = cv.finish(size)
    cast = rng.normal(1.0, 0.03, 3).astype(np.float32)
    out = out * cast * rng.uniform(0.92, 1.06)
    grain = rng.normal(0, 1, (size, size, 1)).astype(np.float32) * 3.5 \
        + rng.normal(0, 1, (size, size, 3)).astype(np.float32) * 1.5
    out = out + grain
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Domain B: anime-like drawing
# --------------------------------------------------------------------------

def _anime_colours(lat):
    kh, ks, kv = _to_hsv(lat.skin)
    skin = _hsv(kh - 0.01, ks * 0.75, min(1.0, kv * 0.55 + 0.46))
    skin_sh = _mul(skin, (0.9, 0.78, 0.8))
    h, s, v = _to_hsv(lat.hair_colour)
    if s < 0.12 and v > 0.35:  # grey -> silver
        hair = _hsv(0.62, 0.08, 0.8)
    elif v < 0.16:  # black -> the usual anime blue-black
        hair = _hsv(0.66, 0.35, 0.24)
    else:
        hair = _hsv(h, min(1.0, s * 1.25 + 0.05), min(1.0, max(v * 1.15 + 0.1, 0.22)))
    hh, hs, hv = _to_hsv(hair)
    hair_sh = _hsv(hh + 0.03 if hh > 0.5 else hh - 0.03, min(1.0, hs * 1.1 + 0.05), hv * 0.7)
    eh, es_, ev = _to_hsv(lat.eye_colour)
    eye = _hsv(eh, max(es_, 0.55), float(np.clip(ev * 1.6, 0.45, 0.85)))
    eye_dark = _mul(eye, 0.55)
    sh, ss_, sv = _to_hsv(lat.shirt_colour)
    shirt = _hsv(sh, min(1.0, ss_ * 1.2 + 0.1), min(1.0, sv * 1.1 + 0.05))
    shirt_sh = _mul(shirt, 0.78)
    bg = _hsv(lat.bg_hue, 0.2 + 0.1 * (lat.bg_kind % 2), 0.97)
    lip = _mix(lat.lip_colour, (200, 60, 80), 0.5)
    return dict(skin=skin, skin_sh=skin_sh, hair=hair, hair_sh=hair_sh, eye=eye,
                eye_dark=eye_dark, shirt=shirt, shirt_sh=shirt_sh, bg=bg, lip=lip)


def _zigzag(p0, p1, n, depth, normal_sign=1, skew=0.0, jitter=None, curved=True):
    """Row of n pointed locks along p0->p1, tips pointing to one side; with
    ``curved`` each lock has convex sides (anime hair)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    nrm = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * normal_sign
    t = np.linspace(0, 1, 8)[:, None]
    pts = []
    for i in range(n):
        a = p0 + d * (i / n)
        b = p0 + d * ((i + 1) / n)
        dep = depth * (1 if jitter is None else jitter[i])
        tip = p0 + d * ((i + 0.5 + skew) / n) + nrm * dep
        if not curved:
            pts += [a, tip]
            continue
        c1 = a + nrm * dep * 0.45 + (tip - a) * 0.15
        c2 = b + nrm * dep * 0.45 + (tip - b) * 0.15
        left = (1 - t) ** 2 * a + 2 * (1 - t) * t * c1 + t ** 2 * tip
        right = (1 - t) ** 2 * tip + 2 * (1 - t) * t * c2 + t ** 2 * b
        pts += list(left) + list(right[1:-1])
    pts.append(p1)
    return np.array(pts)


def _anime_bangs(lat, g):
    """Front hair cap whose lower edge is a row of pointed bangs."""
    cx, cy, ax, ay = _skull(g, lat, 1.02)
    W = g.W
    rng = np.random.default_rng(lat.texture_seed + 1)
    top = _arc(cx, cy, ax, ay, 180, 360, 40)  # left side -> top -> right side
    side_end = -0.02 if lat.hair_length < 0.2 else min(0.12 + 0.75 * lat.hair_length, 0.62)
    right = np.array([[ax * 1.01, 0.02], [W * 1.08, side_end * 0.7]])
    rlock_tip = np.array([[W * 0.98, side_end]])
    jit = rng.uniform(0.7, 1.15, 12)
    if lat.hair_style == 0:  # swept: locks skewed to one side
        edge = _zigzag([W * 0.9, -0.1], [-W * 0.92, -0.2], 5, 0.27, -1, skew=0.3, jitter=jit)
    elif lat.hair_style == 1:  # parted in the middle, two curtains
        r = _zigzag([W * 0.92, -0.08], [0.0, -0.34], 3, 0.2, -1, skew=-0.15, jitter=jit[:3])
        l = _zigzag([0.0, -0.34], [-W * 0.92, -0.08], 3, 0.2, -1, skew=0.15, jitter=jit[3:6])
        edge = np.concatenate([r, l[1:]])
    else:  # full straight bangs
        edge = _zigzag([W * 0.92, -0.16], [-W * 0.92, -0.16], 6, 0.17, -1, jitter=0.6 + 0.4 * jit)
    inner_r = np.array([[W * 0.86, side_end * 0.6]])
    left = np.array([[-W * 1.08, side_end * 0.7], [-ax * 1.01, 0.02]])
    llock_tip = np.array([[-W * 0.98, side_end]])
    inner_l = np.array([[-W * 0.86, side_end * 0.6]])
    return np.concatenate([top[20:], right, rlock_tip, inner_r, edge, inner_l, llock_tip, left,
                           top[:21]])


def _anime_back_hair(lat, g):
    cx, cy, ax, ay = _skull(g, lat, 1.06)
    end = _back_hair_end(lat)
    wb = g.W * 1.2 + 0.12 * lat.hair_length
    top = _arc(cx, cy, ax, ay, 180, 360, 40)
    right = np.array([[ax, cy + 0.05], [wb, 0.3], [wb * 1.02, end - 0.12]])
    n = 4 + lat.hair_style
    jit = np.random.default_rng(lat.texture_seed + 2).uniform(0.6, 1.2, n)
    bottom = _zigzag([wb * 1.02, end - 0.12], [-wb * 1.02, end - 0.12], n, 0.16, -1, jitter=jit)
    left = np.array([[-wb, 0.3], [-ax, cy + 0.05]])
    return np.concatenate([top, right, bottom[1:], left])


def draw_anime(latents: FaceLatents, size: int = 128) -> np.ndarray:
    """Render the anime-like drawing (domain B) as uint8 ``size x size x 3`` RGB."""
    lat = latents
    ss = 2
    res = size * ss
    cv = _Canvas(res, lat)
    g = _geom(lat)
    C = _anime_colours(lat)
    W, H, fx = g.W, g.H, g.fx * 0.8
    ol = 0.024  # outline width in face units
    cv.img[:] = np.asarray(C["bg"], np.float32)

    def shape(poly, colour, width=ol, **kw):
        cv.fill(poly, colour, **kw)
        cv.stroke(poly, OUTLINE, width, closed=True)

    if _has_back_hair(lat):
        back = _anime_back_hair(lat, g)
        shape(back, C["hair"])
        # the part seen between face and shoulders lies in shadow
        cv.fill(np.array([[-W * 1.0, 0.0], [W * 1.0, 0.0], [W * 1.0, 2.0], [-W * 1.0, 2.0]]),
                C["hair_sh"], clip=back)
        cv.stroke(back, OUTLINE, ol, closed=True)

    body = _body_poly(lat, g)
    shape(body, C["shirt"])
    neck = _neck_poly(g)
    neckline = _neckline(lat)
    shape(neckline, C["skin"], width=ol * 0.8)
    if lat.shirt_style == 2:
        for flap in _collar(lat):
            shape(flap, _mix(C["shirt"], (255, 255, 255), 0.5), width=ol * 0.8)
    cv.fill(neck, C["skin"])
    # one flat shadow tone under the chin
    cv.fill(np.array([[-W, 0.2], [W, 0.2], [W, 0.5], [0, 0.75], [-W, 0.5]]), C["skin_sh"],
            clip=neck)
    nk = neck
    cv.stroke(nk[[0, 4]], OUTLINE, ol * 0.8)
    cv.stroke(nk[[1, 2]], OUTLINE, ol * 0.8)

    # ears
    for sgn in (-1, 1):
        shape(_arc(sgn * W * 0.97, 0.06, 0.055, 0.1, 0, 360, 24), C["skin"], width=ol * 0.8)

    face = _face_poly_anime(g)
    shape(face, C["skin"])
    bangs = _anime_bangs(lat, g)
    # hair shadow on the forehead: the bangs shifted down, clipped to the face
    cv.fill(bangs + [0.015, 0.06], C["skin_sh"], clip=face)

    # blush (flat pink ellipses + hatch)
    if lat.blush > 0.45:
        for sgn in (-1, 1):
            bx, by = sgn * 0.21 + fx, 0.2
            cv.fill(_arc(bx, by, 0.07, 0.03, 0, 360, 20), (246, 170, 172), alpha=0.7)

    # eyes
    es = lat.eye_size
    ew, eh = 0.11 * es, 0.13 * es
    for sgn in (-1, 1):
        ex, ey = sgn * (g.eye_dx + 0.01) + fx, 0.07
        # sclera: rounded shape, flat top
        rim = _catmull([[ex - ew, ey - eh * 0.55], [ex - ew * 0.95, ey + eh * 0.2],
                        [ex - ew * 0.4, ey + eh * 0.85], [ex + ew * 0.4, ey + eh * 0.85],
                        [ex + ew * 0.95, ey + eh * 0.2], [ex + ew, ey - eh * 0.55]], n=6)
        sclera = np.concatenate([[[ex - ew, ey - eh * 0.55]], rim, [[ex, ey - eh * 0.7]]])
        cv.fill(sclera, (255, 255, 255))
        gx, gy = lat.gaze
        iw, ih = 0.078 * es, 0.108 * es
        icx, icy = ex + gx * ew * 0.18, ey + 0.01 + gy * 0.01
        iris = _arc(icx, icy, iw, ih, 0, 360, 40)
        cv.fill(iris, C["eye"], clip=sclera)
        # flat darker upper part of the iris (the single shadow tone)
        cv.fill(_arc(icx, icy - ih * 0.9, iw * 1.3, ih * 0.8, 0, 360, 30), C["eye_dark"],
                clip=[iris])
        cv.fill(_arc(icx, icy + 0.005, iw * 0.45, ih * 0.5, 0, 360, 24), (30, 22, 34),
                clip=sclera)
        cv.stroke(iris, OUTLINE, ol * 0.55)
        # highlight dots
        cv.fill(_arc(icx - iw * 0.35, icy - ih * 0.35, iw * 0.32, iw * 0.32, 0, 360, 16),
                (255, 255, 255))
        cv.fill(_arc(icx + iw * 0.4, icy + ih * 0.45, iw * 0.15, iw * 0.15, 0, 360, 12),
                (255, 255, 255))
        # thick upper lash line with a flick at the outer corner
        t = np.linspace(-1.1, 1.1, 30)
        lash = np.stack([ex + ew * t, ey - eh * 0.6 - eh * 0.22 * (1 - t ** 2)], 1)
        wl = 0.032 + 0.016 * (sgn * t > 0.5)
        cv.fill(_ribbon(lash, wl * np.clip(1.2 - 0.3 * (sgn * t + 1), 0.6, 1.2)), OUTLINE)
        flick = np.array([[ex + sgn * ew * 1.05, ey - eh * 0.7], [ex + sgn * ew * 1.35, ey - eh * 0.95],
                          [ex + sgn * ew * 1.05, ey - eh * 0.4]])
        cv.fill(flick, OUTLINE)
        # short lower lash
        lo = np.stack([ex + ew * np.linspace(-0.5, 0.5, 10) + sgn * ew * 0.25,
                       np.full(10, ey + eh * 0.85)], 1)
        cv.stroke(lo, OUTLINE, ol * 0.6)
        # eyebrow: thin line
        t = np.linspace(-1, 1, 12)
        brow = np.stack([ex + sgn * 0.09 * t, -0.12 - 0.025 * (1 - t ** 2)
                         - 0.012 * lat.brow_tilt * sgn * t], 1)
        brow_c = C["hair_sh"] if _to_hsv(C["hair"])[2] > 0.45 else OUTLINE
        cv.fill(_ribbon(brow, _taper(12, 0.022, 0.006, 0.5)), brow_c)

    # tiny nose and mouth
    nose = np.array([[fx + 0.012, 0.245], [fx - 0.006, 0.265]])
    cv.stroke(nose, _mul(C["skin_sh"], 0.7), ol * 0.6)
    mx, my = fx, 0.38
    mw = 0.045 * (1 + 0.3 * lat.smile)
    if lat.mouth_open > 0.3:
        oh = 0.03 + 0.05 * lat.mouth_open
        xs = np.linspace(-1, 1, 16)
        top_edge = np.stack([mx + mw * xs, my - 0.012 * lat.smile * xs ** 2], 1)
        bot = np.stack([mx + mw * 0.7 * xs[::-1], my + oh * (1 - xs[::-1] ** 2) ** 0.7], 1)
        mouth = np.concatenate([top_edge, bot])
        cv.fill(mouth, (150, 48, 62))
        cv.fill(_arc(mx, my + oh, mw * 0.6, oh * 0.45, 0, 360, 16), (236, 120, 130), clip=mouth)
        cv.stroke(mouth, OUTLINE, ol * 0.6, closed=True)
    else:
        xs = np.linspace(-1, 1, 12)
        line = np.stack([mx + mw * xs, my - 0.012 * lat.smile * (1 - xs ** 2) * -1
                         - 0.01 * lat.smile * xs ** 2], 1)
        cv.stroke(line, OUTLINE, ol * 0.6)

    # hair on top: spiky bangs and side locks + one flat shine streak
    shape(bangs, C["hair"])
    cx, cy, ax, ay = _skull(g, lat, 1.02)
    shine = _ribbon(_arc(cx, cy, ax * 0.78, ay * 0.72, 200, 250, 16), _taper(16, 0.035, 0.0, 0.8))
    cv.fill(shine, _mix(C["hair"], (255, 255, 255), 0.45), clip=bangs)
    shine2 = _ribbon(_arc(cx, cy, ax * 0.78, ay * 0.72, 262, 300, 12), _taper(12, 0.03, 0.0, 0.8))
    cv.fill(shine2, _mix(C["hair"], (255, 255, 255), 0.45), clip=bangs)
    cv.stroke(bangs, OUTLINE, ol, closed=True)

    out = cv.finish(size)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Data set writing
# --------------------------------------------------------------------------

def _encode(img_rgb, ext):
    bgr = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR)
    if ext == ".jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("image encoding failed")
    return buf.tobytes()


def _expected(n_train, n_test):
    return {
        "trainA": (n_train, EXT_A), "trainB": (n_train, EXT_B),
        "testA": (n_test, EXT_A), "testB": (n_test, EXT_B),
        # paired folders mirror their counterpart's file names exactly
        # (extension included), so the other domain's rendering is stored in
        # the counterpart's format: testA_paired/0000.jpg, testB_paired/0000.png
        "testA_paired": (n_test, EXT_A), "testB_paired": (n_test, EXT_B),
    }


def _params(size, n_train, n_test, seed):
    return {"size": int(size), "n_train": int(n_train), "n_test": int(n_test),
            "seed": int(seed), "version": GENERATOR_VERSION}


def command_line(out_dir, size, n_train, n_test, seed):
    return (f"python tools/make_demo_dataset.py --out {out_dir} --size {size} "
            f"--n_train {n_train} --n_test {n_test} --seed {seed}")


_README_TITLE = "# Demo data set: procedural selfie -> anime faces\n"
_README = """# Demo data set: procedural selfie -> anime faces

A small, synthetic stand-in for selfie2anime so that the whole U-GAT-IT
pipeline (training, evaluation, export) can run offline in minutes.  Every
image is drawn procedurally with numpy + OpenCV (`tools/demo_data.py`);
nothing is downloaded and no real person is depicted.

* **Domain A** (`trainA`, `testA`, JPEG quality {q}): photo-like "selfies" --
  shaded skin, small realistic eyes, hair with strand texture, blurred or
  textured backgrounds, slight blur and film grain.
* **Domain B** (`trainB`, `testB`, PNG): anime-like drawings -- flat cel
  colours, big eyes with highlight dots, spiky hair, thick dark outlines,
  pastel backgrounds.

Both domains are rendered from the same latent description of a person
(pose, skin tone, hair colour/length/style, eye colour, mouth, background
hue...).  `trainA` and `trainB` use *independent* latents, so training is
unpaired, exactly like selfie2anime.

| folder | count | content |
|---|---|---|
| trainA | {n_train} | domain A, `.jpg` |
| trainB | {n_train} | domain B, `.png` (independent latents) |
| testA | {n_test} | domain A, `.jpg` |
| testB | {n_test} | domain B, `.png` |
| testA_paired | {n_test} | for each `testA/NNNN.jpg`, the B (anime) rendering of the same latents, same file name `NNNN.jpg` |
| testB_paired | {n_test} | for each `testB/NNNN.png`, the A (photo) rendering of the same latents, same file name `NNNN.png` |

**The `*_paired` folders are ground truth for evaluation only; they are
never used in training.**  E.g. compare the A->B translation of
`testA/0007.jpg` with `testA_paired/0007.jpg`.  Each paired file has exactly
the same file name as its counterpart, so `testA_paired` holds anime
drawings stored as JPEG and `testB_paired` photo-like images stored as PNG.

Images are {size}x{size} RGB.  Generated deterministically (the same seed gives
byte-identical files) with:

    {cmd}

`manifest.json` records the parameters and is written last (it marks the set
as complete for `tools.demo_data.ensure_demo_dataset`).
"""


def _split_seeds(seed):
    ss = np.random.SeedSequence([int(seed), 0x5E1F1E])
    return dict(zip(("trainA", "trainB", "testA", "testB"), ss.spawn(4)))


class DemoFolderError(ValueError):
    """The output folder holds something this module did not write (one line naming it)."""


_OURS = re.compile(r"\d{4}(\.jpg|\.png)\Z")  # what the split folders hold


def foreign_entries(out_dir) -> list:
    """What ``out_dir`` holds that this module does not write, as relative paths ([] for a
    missing folder or a demo set, finished or not): at the top anything but the split folders,
    manifest.json and a README.md of ours; in the split folders anything but NNNN.jpg/.png."""
    if not os.path.isdir(out_dir):
        return []
    found = []
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if name in SPLITS and os.path.isdir(path):
            found += [os.path.join(name, n) for n in sorted(os.listdir(path))
                      if not _OURS.match(n) or not os.path.isfile(os.path.join(path, n))]
        elif name == "README.md" and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as fh:
                if fh.read(len(_README_TITLE)) != _README_TITLE:
                    found.append(name)
        elif not (name == "manifest.json" and os.path.isfile(path)):
            found.append(name)
    return found


def generate_demo_dataset(out_dir, size=128, n_train=300, n_test=40, seed=0, progress=True):
    """Write the demo data set into ``out_dir``; returns ``{folder: count}``. Refuses
    (DemoFolderError) a folder that holds anything it did not write: its stale-file cleanup
    would delete a user's images."""
    t0 = time.time()
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DemoFolderError(f"{out_dir} is a file, not a folder")
    foreign = foreign_entries(out_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DemoFolderError(f"{out_dir} holds files the demo generator did not write "
                              f"({shown}); choose a new or empty folder")
    exp = _expected(n_train, n_test)
    for split in SPLITS:
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    man_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(man_path):
        os.remove(man_path)  # incomplete until rewritten at the end
    seeds = _split_seeds(seed)

    def write(split, idx, img):
        write_bytes_atomic(os.path.join(out_dir, split, f"{idx:04d}{exp[split][1]}"),
                           _encode(img, exp[split][1]))

    for split, n in (("trainA", n_train), ("trainB", n_train), ("testA", n_test), ("testB", n_test)):
        rng = np.random.default_rng(seeds[split])
        ts = time.time()
        for i in range(n):
            lat = sample_latents(rng)
            if split.endswith("A"):
                write(split, i, draw_photo(lat, size))
                if split == "testA":
                    write("testA_paired", i, draw_anime(lat, size))
            else:
                write(split, i, draw_anime(lat, size))
                if split == "testB":
                    write("testB_paired", i, draw_photo(lat, size))
        if progress:
            print(f"  {split}: {n} images ({time.time() - ts:.1f}s)", flush=True)

    # drop stale files of an earlier, larger set
    for split, (n, ext) in exp.items():
        keep = {f"{i:04d}{ext}" for i in range(n)}
        folder = os.path.join(out_dir, split)
        for name in os.listdir(folder):
            if name not in keep and (name.endswith(EXT_A) or name.endswith(EXT_B)):
                os.remove(os.path.join(folder, name))

    counts = {split: n for split, (n, _) in exp.items()}
    cmd = command_line(out_dir, size, n_train, n_test, seed)
    readme = _README.format(q=JPEG_QUALITY, n_train=n_train, n_test=n_test, size=size, cmd=cmd)
    write_text_atomic(os.path.join(out_dir, "README.md"), readme)
    manifest = dict(_params(size, n_train, n_test, seed), counts=counts, command=cmd)
    write_json_atomic(man_path, manifest)
    if progress:
        print(f"Demo data set written to {out_dir} in {time.time() - t0:.1f}s", flush=True)
    return counts


def is_complete(path, size=128, n_train=300, n_test=40, seed=0):
    """True when ``path`` holds a finished demo set with these parameters."""
    try:
        with open(os.path.join(path, "manifest.json")) as fh:
            man = json.load(fh)
    except (OSError, ValueError):
        return False
    if any(man.get(k) != v for k, v in _params(size, n_train, n_test, seed).items()):
        return False
    for split, (n, ext) in _expected(n_train, n_test).items():
        folder = os.path.join(path, split)
        if not os.path.isdir(folder):
            return False
        names = set(os.listdir(folder))
        if any(f"{i:04d}{ext}" not in names for i in range(n)):
            return False
    return True


def ensure_demo_dataset(dataset_dir="datasets", name="demo", size=128, n_train=300, n_test=40,
                        seed=0, progress=False):
    """Return ``<dataset_dir>/<name>``, generating the demo set first when it is
    missing or incomplete."""
    path = os.path.join(os.fspath(dataset_dir), name)
    if not is_complete(path, size, n_train, n_test, seed):
        print(f"Generating the procedural demo data set in {path} "
              f"({n_train} train + {n_test} test images per domain, {size}px)...", flush=True)
        generate_demo_dataset(path, size=size, n_train=n_train, n_test=n_test, seed=seed,
                              progress=progress)
    return path
