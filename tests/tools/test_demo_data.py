"""Tests of the procedural demo data set (tools/demo_data.py), which lives outside the runtime
package."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tools import demo_data as dd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _latents(seed, n):
    rng = np.random.default_rng(seed)
    return [dd.sample_latents(rng) for _ in range(n)]


def _n_colours(img):
    return len(np.unique(img.reshape(-1, 3), axis=0))


def test_sample_latents_deterministic():
    assert _latents(0, 3) == _latents(0, 3)
    assert _latents(0, 3) != _latents(1, 3)
    lat = _latents(0, 1)[0]
    assert isinstance(lat, dd.FaceLatents)
    assert set(lat.to_dict()) >= {"face_x", "scale", "rotation", "skin", "hair_colour",
                                  "hair_length", "eye_colour", "bg_hue", "mouth_open"}


@pytest.mark.parametrize("draw", [dd.draw_photo, dd.draw_anime])
@pytest.mark.parametrize("size", [64, 96])
def test_shapes_dtypes_and_determinism(draw, size):
    lat0, lat1 = _latents(7, 2)
    a = draw(lat0, size)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, draw(lat0, size))  # same latents -> identical
    assert not np.array_equal(a, draw(lat1, size))  # other person -> different
    assert a.std() > 10  # not blank


def test_styles_differ_measurably():
    lats = _latents(3, 6)
    for lat in lats:
        a, b = dd.draw_photo(lat, 96), dd.draw_anime(lat, 96)
        # flat cel colours: far fewer distinct colours than the noisy photo
        assert _n_colours(b) * 3 < _n_colours(a), (_n_colours(a), _n_colours(b))
        # thick near-black outlines in the drawing
        assert (b.max(-1) < 60).mean() > 0.02
        # photo grain: local high-frequency energy much larger in A on flat areas
        lap_a = np.abs(cv2.Laplacian(a.astype(np.float32), cv2.CV_32F))
        lap_b = np.abs(cv2.Laplacian(b.astype(np.float32), cv2.CV_32F))
        assert np.median(lap_a) > 3 * max(np.median(lap_b), 0.5)


def test_same_latents_are_paired():
    """A and B of one person put the same skin tone at the same cheek spot."""
    rng = np.random.default_rng(11)
    for _ in range(4):
        lat = dd.sample_latents(rng)
        g = dd._geom(lat)
        a, b = dd.draw_photo(lat, 96), dd.draw_anime(lat, 96)
        canvas = dd._Canvas(96, lat)  # face coordinates -> output pixels
        skin_a = np.asarray(lat.skin, float)
        skin_b = np.asarray(dd._anime_colours(lat)["skin"], float)
        for side in (-1, 1):
            for img, fx, skin, tol in ((a, g.fx, skin_a, 0.25 * np.linalg.norm(skin_a)),
                                       (b, 0.8 * g.fx, skin_b, 6.0)):
                x, y = canvas.px([[side * 0.22 + fx, 0.28]])[0].astype(int)
                p = img[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0)
                assert np.linalg.norm(p - skin) < tol, (side, p, skin)


def _listing(path):
    return {s: sorted(os.listdir(os.path.join(path, s))) for s in dd.SPLITS}


def test_generate_layout_and_byte_identical(tmp_path):
    out1, out2 = tmp_path / "d1", tmp_path / "d2"
    c1 = dd.generate_demo_dataset(out1, size=48, n_train=3, n_test=2, seed=5, progress=False)
    dd.generate_demo_dataset(out2, size=48, n_train=3, n_test=2, seed=5, progress=False)
    assert c1 == {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2,
                  "testA_paired": 2, "testB_paired": 2}
    lst = _listing(out1)
    assert lst["trainA"] == ["0000.jpg", "0001.jpg", "0002.jpg"]
    assert lst["trainB"] == ["0000.png", "0001.png", "0002.png"]
    # paired folders hold exactly the names of their counterparts
    assert lst["testA_paired"] == lst["testA"] == ["0000.jpg", "0001.jpg"]
    assert lst["testB_paired"] == lst["testB"] == ["0000.png", "0001.png"]
    for split, names in lst.items():
        for name in names:
            b1 = (out1 / split / name).read_bytes()
            assert b1 == (out2 / split / name).read_bytes(), (split, name)
            img = cv2.imread(str(out1 / split / name))
            assert img.shape == (48, 48, 3)
    assert "never used in training" in (out1 / "README.md").read_text()
    assert json.loads((out1 / "manifest.json").read_text())["counts"] == c1
    # no temp files left behind
    assert not [n for s in dd.SPLITS for n in os.listdir(out1 / s) if n.startswith(".")]


def test_paired_images_render_the_test_latents(tmp_path):
    out = tmp_path / "d"
    dd.generate_demo_dataset(out, size=48, n_train=1, n_test=2, seed=9, progress=False)
    # the testB_paired PNG (lossless) is exactly draw_photo of testB's latents
    rng = np.random.default_rng(dd._split_seeds(9)["testB"])
    lat = dd.sample_latents(rng)
    png = cv2.cvtColor(cv2.imread(str(out / "testB_paired" / "0000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, dd.draw_photo(lat, 48))
    b = cv2.cvtColor(cv2.imread(str(out / "testB" / "0000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(b, dd.draw_anime(lat, 48))
    # different seed -> different files
    dd.generate_demo_dataset(tmp_path / "e", size=48, n_train=1, n_test=1, seed=10, progress=False)
    assert (tmp_path / "e" / "testB" / "0000.png").read_bytes() != (out / "testB" / "0000.png").read_bytes()


def test_ensure_creates_then_reuses(tmp_path, capsys):
    kw = dict(size=32, n_train=4, n_test=2, seed=1)
    path = dd.ensure_demo_dataset(str(tmp_path), "demo", **kw)
    assert path == os.path.join(str(tmp_path), "demo")
    assert "Generating" in capsys.readouterr().out
    counts = {s: len(v) for s, v in _listing(path).items()}
    assert counts == {"trainA": 4, "trainB": 4, "testA": 2, "testB": 2,
                      "testA_paired": 2, "testB_paired": 2}
    assert dd.is_complete(path, **kw)
    probe = os.path.join(path, "trainA", "0000.jpg")
    old = os.path.getmtime(probe)
    os.utime(probe, (old - 100, old - 100))  # make any rewrite detectable
    before = os.path.getmtime(probe)
    assert dd.ensure_demo_dataset(str(tmp_path), "demo", **kw) == path
    assert "Generating" not in capsys.readouterr().out
    assert os.path.getmtime(probe) == before
    # an incomplete set (missing file) is regenerated
    os.remove(os.path.join(path, "testB_paired", "0001.png"))
    assert not dd.is_complete(path, **kw)
    dd.ensure_demo_dataset(str(tmp_path), "demo", **kw)
    assert "Generating" in capsys.readouterr().out
    assert dd.is_complete(path, **kw)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_demo_dataset.py"),
                        "--out", str(out), "--size", "32", "--n_train", "2", "--n_test", "1",
                        "--seed", "3", "--quiet"], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert dd.is_complete(str(out), size=32, n_train=2, n_test=1, seed=3)


def test_a_folder_with_files_of_the_user_is_refused_untouched(tmp_path):
    """The regenerator drops stale NNNN.jpg/.png of an earlier, larger set: in a folder it did
    not write, that deleted the user's images (and --out . rewrote README.md)."""
    kw = dict(size=32, n_train=2, n_test=1, seed=3, progress=False)
    mine = tmp_path / "mine"
    (mine / "trainA").mkdir(parents=True)
    (mine / "trainA" / "a.png").write_bytes(b"precious")
    (mine / "README.md").write_text("MY PROJECT README")
    with pytest.raises(dd.DemoFolderError) as e:
        dd.generate_demo_dataset(mine, **kw)
    assert str(e.value) == (f"{mine} holds files the demo generator did not write (README.md, "
                            f"trainA/a.png); choose a new or empty folder")
    assert sorted(os.listdir(mine)) == ["README.md", "trainA"]
    assert (mine / "trainA" / "a.png").read_bytes() == b"precious"
    # a demo set, finished or interrupted (no manifest yet), is regenerated in place
    demo = tmp_path / "demo"
    dd.generate_demo_dataset(demo, **kw)
    (demo / "manifest.json").unlink()
    dd.generate_demo_dataset(demo, **kw)
    assert dd.is_complete(str(demo), size=32, n_train=2, n_test=1, seed=3)
    for argv, message in ((["--out", ""], "--out must name a folder"),
                          (["--out", str(mine)], f"--out {mine} holds files the demo"),
                          (["--out", str(mine / "README.md")],
                           f"--out {mine / 'README.md'} is a file, not a folder"),
                          (["--out", str(mine / "README.md" / "x")],
                           f"--out {mine / 'README.md' / 'x'}: cannot write there")):
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_demo_dataset.py"),
                            "--size", "32", "--n_train", "1", "--n_test", "1", "--quiet"] + argv,
                           cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert message in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["demo", "mine"]  # nothing written by the refusals


@pytest.mark.parametrize("package", ["common", "data", "infer", "evaluate"])
def test_the_runtime_package_never_imports_tools(package):
    import ast
    offenders = []
    for folder, _, names in os.walk(os.path.join(REPO, "ugatit_tf", package)):
        for name in (n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                           [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{os.path.relpath(path, REPO)}:{node.lineno} {m}"
                              for m in modules if m == "tools" or m.startswith("tools.")]
    assert offenders == []
