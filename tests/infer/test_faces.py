"""infer/faces.py: detection, alignment, paste-back and the attention overlay, on the
astronaut photo with a fake translator (no model)."""

import cv2
import numpy as np
import pytest

from tests.infer.helpers import fake_translate
from ugatit_tf.common.images import load_rgb
from ugatit_tf.infer import faces as F
from ugatit_tf.infer import photos as P

# Astronaut (512x512): the whole head (hair, face, chin) is roughly here.
HEAD = (160, 40, 290, 200)  # x0, y0, x1, y1


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / float(area(a) + area(b) - inter)


def _crop_bounds(M, size):
    inv = cv2.invertAffineTransform(M)
    pts = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float) @ inv.T
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


# ---------------------------------------------------------------- detection

def test_detect_astronaut_face_in_expected_region(astronaut, detector):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    # the face box lies inside the head region (a few px tolerance) and is
    # a sizeable part of it
    assert x >= HEAD[0] - 5 and y >= HEAD[1] - 5
    assert x + w <= HEAD[2] + 5 and y + h <= HEAD[3] + 5
    assert w * h > 0.3 * (HEAD[2] - HEAD[0]) * (HEAD[3] - HEAD[1])
    assert f.score >= 5
    # both eyes found, in the upper half of the face, left one on the left
    assert f.eyes is not None
    (xl, yl), (xr, yr) = f.eyes
    assert x < xl < x + w / 2 < xr < x + w
    assert y < yl < y + h / 2 and y < yr < y + h / 2
    assert abs(f.angle) < 8


def test_aligned_crop_is_a_centred_head(astronaut, detector):
    f = detector.detect(astronaut)[0]
    crop, M = F.align_face(astronaut, f, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    # the crop square (in photo coordinates) matches the head region
    assert _iou(_crop_bounds(M, 256), HEAD) > 0.6
    # face box ~57% of the crop width, its centre a bit above the middle
    scale = np.sqrt(abs(np.linalg.det(M[:, :2])))
    assert 0.5 < f.box[2] * scale / 256 < 0.65
    cx, cy = M @ np.array([*f.center, 1.0])
    assert abs(cx - 128) < 2 and 100 < cy < 128
    # eyes are level after alignment
    (el, er) = [M @ np.array([*e, 1.0]) for e in f.eyes]
    assert abs(el[1] - er[1]) < 0.5


@pytest.mark.parametrize("angle", [-15, 15])
def test_rotation_alignment_levels_the_eyes(astronaut, detector, angle):
    R = cv2.getRotationMatrix2D((223, 113), angle, 1.0)
    rot = cv2.warpAffine(astronaut, R, (512, 512), borderMode=cv2.BORDER_REFLECT)
    faces = detector.detect(rot)
    assert len(faces) == 1 and faces[0].eyes is not None
    assert abs(faces[0].angle - (3.4 - angle)) < 5  # upright astronaut: ~3.4 deg
    _, M = F.align_face(rot, faces[0], 256)
    el, er = [M @ np.array([*e, 1.0]) for e in faces[0].eyes]
    assert abs(el[1] - er[1]) < 0.5 and er[0] > el[0]


def test_several_faces_and_nms(astronaut, detector):
    two = np.hstack([astronaut, astronaut[:, ::-1]])
    faces = detector.detect(two)
    assert len(faces) == 2
    xs = sorted(f.center[0] for f in faces)
    assert xs[0] < 512 < xs[1]
    dup = [F.Face((10, 10, 100, 100), 9), F.Face((14, 12, 96, 98), 5),
           F.Face((300, 10, 100, 100), 7)]
    kept = F.nms(dup)
    assert [k.box for k in kept] == [(10, 10, 100, 100), (300, 10, 100, 100)]


def test_missing_cascades_give_clear_error(tmp_path):
    with pytest.raises(F.CascadeNotFoundError, match="opencv-python-headless"):
        F.FaceDetector(cascade_dir=tmp_path)


# ------------------------------------------------------ paste back / crops

def test_paste_back_changes_face_only(astronaut, detector):
    tr = P.PhotoTranslator(fake_translate, 256, face_crop=True, paste_back=True,
                           detector=detector)
    res = tr.translate_photo(astronaut)
    out = res.output
    assert res.mode == "face" and len(res.faces) == 1
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    # the face (inverted) differs strongly
    x, y, w, h = res.faces[0].face.box
    face_diff = np.abs(out[y:y + h, x:x + w].astype(int) - astronaut[y:y + h, x:x + w]).mean()
    assert face_diff > 60
    # far from the face: bit-for-bit identical (corners, flag, shuttle, suit)
    for ys, xs in [(slice(0, 40), slice(0, 40)), (slice(0, 300), slice(0, 110)),
                   (slice(0, 512), slice(340, 512)), (slice(260, 512), slice(0, 512))]:
        assert np.array_equal(out[ys, xs], astronaut[ys, xs])
    # every changed pixel is inside the crop square
    changed = np.any(out != astronaut, axis=2)
    yy, xx = np.nonzero(changed)
    x0, y0, x1, y1 = _crop_bounds(res.faces[0].matrix, 256)
    assert xx.min() >= x0 - 1 and xx.max() <= x1 + 1
    assert yy.min() >= y0 - 1 and yy.max() <= y1 + 1
    # attention: heatmap upsampled to the crop, peaked in the middle
    hm = res.faces[0].heatmap
    assert hm.shape == (256, 256) and hm.min() >= 0 and hm.max() <= 1
    assert hm[128, 128] == pytest.approx(hm.max()) and hm.max() == pytest.approx(1.0)
    assert hm[0, 0] < 0.05 and np.allclose(hm, hm[::-1, ::-1], atol=1e-5)
    assert res.sheet.shape[1] > 3 * 256 and res.sheet.shape[0] > 256


def test_paste_back_identity_is_nearly_lossless(astronaut, detector):
    f = detector.detect(astronaut)[0]
    crop, M = F.align_face(astronaut, f, 256)
    out = F.paste_back(astronaut, crop, M)
    diff = np.abs(out.astype(int) - astronaut)
    assert diff.mean() < 1.5  # resampling blur only


def test_no_paste_back_returns_crop(astronaut, detector):
    tr = P.PhotoTranslator(fake_translate, 128, paste_back=False, detector=detector)
    res = tr.translate_photo(astronaut)
    assert res.output.shape == (128, 128, 3)
    assert np.array_equal(res.output, 255 - res.faces[0].crop)


def test_center_crop_and_matrix():
    img = np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8)
    crop, M = F.center_crop(img)
    assert np.array_equal(crop, img[:, 20:80])
    small, M2 = F.center_crop(img, 30)
    assert small.shape == (30, 30, 3)
    back = F.paste_back(img, crop, M, feather=0, shape="rect")
    assert np.array_equal(back, img)


def test_heatmap_overlay_and_sheet(tmp_path, astronaut):
    hm = np.zeros((8, 8), np.float32)
    hm[3:5, 3:5] = 5.0
    ov = F.heatmap_overlay(astronaut, hm, alpha=0.5)
    assert ov.shape == astronaut.shape and ov.dtype == np.uint8
    # jet: hot (red) in the middle, cold (blue) at the corner
    assert ov[256, 256, 0] > ov[256, 256, 2]
    assert ov[5, 5, 2] > astronaut[5, 5, 2] * 0.5
    sheet = P.attention_sheet(astronaut, 255 - astronaut, ov, tmp_path / "s.png")
    assert (tmp_path / "s.png").is_file()
    assert sheet.shape[1] >= 3 * 512 and sheet.shape[0] > 512
    assert np.array_equal(load_rgb(tmp_path / "s.png"), sheet)
