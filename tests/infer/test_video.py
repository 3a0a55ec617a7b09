"""infer/video.py: videos translated frame by frame (fake translator, no model)."""

import os
import stat

import cv2
import numpy as np
import pytest

from tests.infer.helpers import fake_translate, md5
from ugatit_tf.common.files import file_mode
from ugatit_tf.infer import photos as P
from ugatit_tf.infer import video as V


# ------------------------------------------------------------------ video

def _write_video(path, n=12, size=64, fps=10.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    assert w.isOpened()
    for i in range(n):
        frame = np.full((size, size, 3), 20 * i % 255, np.uint8)
        frame[:, : size // 2, 1] = 200
        w.write(frame)
    w.release()


def _probe(path):
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return fps, frames


def test_video_roundtrip(tmp_path):
    src = tmp_path / "clip.mp4"
    _write_video(src)
    before = md5(src)
    dst = tmp_path / "out" / "clip_translated.mp4"
    vs = V.translate_video(src, dst, fake_translate, 32, progress=False)
    assert vs.output == str(dst) and dst.is_file() and vs.codec == "mp4v"
    assert stat.S_IMODE(os.stat(dst).st_mode) == file_mode()  # not mkstemp's 0600
    fps, frames = _probe(dst)
    assert len(frames) == 12 == vs.frames
    assert abs(fps - 10.0) < 1e-3
    assert frames[0].shape == (64, 64, 3)
    _, src_frames = _probe(src)
    # frames were inverted
    assert np.abs(frames[3].astype(int) - (255 - src_frames[3].astype(int))).mean() < 30
    # no temp files left, input untouched, refuses to write over the input
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]
    with pytest.raises(ValueError, match="input"):
        V.translate_video(src, src, fake_translate, 32, progress=False)
    with pytest.raises(ValueError, match="input"):
        V.translate_video(src, tmp_path / "clip.avi", fake_translate, 32, progress=False)
    assert md5(src) == before


def test_video_face_mode_copies_faceless_frames(tmp_path, detector):
    src = tmp_path / "clip.mp4"
    _write_video(src, n=4)
    vs = V.translate_video(src, tmp_path / "o.mp4", fake_translate, 32, face_crop=True,
                           fallback="copy", detector=detector, progress=False)
    assert vs.frames == 4 and vs.copied_frames == 4
    with pytest.raises(P.NoFaceError):
        V.translate_video(src, tmp_path / "o2.mp4", fake_translate, 32, face_crop=True,
                          fallback="error", detector=detector, progress=False)
    assert not (tmp_path / "o2.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_frames_over_the_pixel_budget_are_refused_before_decoding(tmp_path, monkeypatch):
    src = tmp_path / "clip.mp4"
    _write_video(src)  # 64 x 64 frames
    dst = tmp_path / "out" / "clip_translated.mp4"
    with pytest.raises(V.VideoError) as e:
        V.translate_video(src, dst, fake_translate, 32, progress=False, max_pixels=64 * 64 - 1)
    assert str(e.value) == (f"video '{src}': frames of 64x64 = 4096 pixels, over the limit of "
                            f"4095 pixels (the photos' budget)")
    assert not dst.parent.exists()
    assert V.translate_video(src, dst, fake_translate, 32, progress=False,
                             max_pixels=64 * 64).frames == 12
    # a container that declares smaller frames than it holds: the first frame decoded counts
    monkeypatch.setattr(V, "_video_properties", lambda cap, max_frames: (10.0, (8, 8), 12))
    with pytest.raises(V.VideoError, match="frames of 64x64 = 4096 pixels"):
        V.translate_video(src, tmp_path / "again.mp4", fake_translate, 32, progress=False,
                          max_pixels=64 * 64 - 1)
    assert not (tmp_path / "again.mp4").exists()
