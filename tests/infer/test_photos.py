"""`main.py --phase test --input ...`: own photos, folders and videos through a checkpoint."""

import os

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from tests.conftest import tiny_config
from tests.infer.helpers import fake_translate, md5
from ugatit_tf import cli
from ugatit_tf.common.images import load_rgb
from ugatit_tf.infer import photos as P
from ugatit_tf.model.checkpoints import make_checkpoint, model_checkpoint_dir, write_config
from ugatit_tf.model.networks import Networks


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    cfg = tiny_config(dataset="own", checkpoint_dir=str(root), result_dir=str(root / "results"))
    nets = Networks(cfg, discriminators=True)
    folder = model_checkpoint_dir(cfg)
    tf.train.CheckpointManager(make_checkpoint(nets), folder, 1).save(checkpoint_number=1)
    write_config(folder, cfg)
    return cfg


def flags(cfg, *extra):
    return ["--phase", "test", "--dataset", cfg.dataset, "--light", "True", "--img_size", "32",
            "--ch", "4", "--n_res", "2", "--n_dis", "4", "--checkpoint_dir", cfg.checkpoint_dir,
            "--result_dir", cfg.result_dir, *extra]


def test_photo_with_face_crop_and_paste_back(checkpoint, tmp_path):
    photo = skimage.data.astronaut()
    src = tmp_path / "in" / "astronaut.jpg"
    src.parent.mkdir()
    Image.fromarray(photo).save(src, quality=95)
    before = src.read_bytes()
    out = tmp_path / "out"
    code = cli.main(flags(checkpoint, "--input", str(src), "--output", str(out),
                          "--face_crop", "True", "--paste_back", "True"))
    assert code == 0
    result = np.asarray(Image.open(out / "astronaut_translated.png").convert("RGB"))
    original = np.asarray(Image.open(src).convert("RGB"))
    assert result.shape == original.shape
    # changed at the face (x 177-270, y 67-160), identical far from it
    face = np.abs(result[90:150, 190:260].astype(int) - original[90:150, 190:260]).mean()
    assert face > 5
    np.testing.assert_array_equal(result[400:, 400:], original[400:, 400:])
    assert (out / "astronaut_sheet.png").exists()
    assert src.read_bytes() == before


def test_folder_with_broken_file_and_no_face(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(folder / "a.png")
    (folder / "broken.jpg").write_bytes(os.urandom(300))
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(folder / "plain.png")
    code = cli.main(flags(checkpoint, "--input", str(folder), "--output", str(tmp_path / "o"),
                          "--face_crop", "True"))
    text = capsys.readouterr()
    assert code == 1  # some files failed, the others were translated
    assert (tmp_path / "o" / "a_translated.png").exists()
    assert "no face found in" in text.out + text.err and "plain.png" in text.out + text.err
    assert "broken.jpg" in text.out + text.err
    # the same folder with a centre-crop fallback: only the broken file fails
    code = cli.main(flags(checkpoint, "--input", str(folder), "--output", str(tmp_path / "o2"),
                          "--face_crop", "True", "--fallback", "center"))
    assert code == 1 and (tmp_path / "o2" / "plain_translated.png").exists()


def test_output_folder_equal_to_input_folder_is_refused(checkpoint, tmp_path, capsys):
    folder = tmp_path / "p"
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(folder / "a.png")
    before = sorted(os.listdir(folder))
    code = cli.main(flags(checkpoint, "--input", str(folder), "--output", str(folder)))
    assert code == 2
    assert "choose another --output folder (inputs are never written over)" in \
        capsys.readouterr().err
    assert sorted(os.listdir(folder)) == before


def test_video_keeps_frame_count_and_fps(checkpoint, tmp_path):
    src = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(src, cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (48, 40))
    for i in range(10):
        frame = np.full((40, 48, 3), 20 * i, np.uint8)
        writer.write(frame)
    writer.release()
    out = tmp_path / "v"
    code = cli.main(flags(checkpoint, "--input", src, "--output", str(out)))
    assert code == 0
    produced = [f for f in os.listdir(out) if f.startswith("clip")]
    assert produced, os.listdir(out)
    cap = cv2.VideoCapture(str(out / produced[0]))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(8.0)
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 10


# --- paths and budgets: refused before anything is read or written -------------------------

def _identity(batch):
    return batch


@pytest.mark.parametrize("make_input, make_output, message", [
    (None, None, "--input {inp}: does not exist"),
    (os.mkfifo, None, "--input {inp}: is a FIFO, not an image, a video or a folder"),
    ("photo", lambda p: p.write_bytes(b"x"), "--output {out}: is an existing file, not a folder"),
    ("photo", os.mkfifo, "--output {out}: is a FIFO, not a folder"),
    ("photo", lambda p: (p.parent / "file").write_bytes(b"x"),
     "--output {parent}: is an existing file, not a folder"),
])
def test_bad_paths_are_refused_with_one_line(tmp_path, make_input, make_output, message):
    from ugatit_tf.common.files import PathError
    from ugatit_tf.infer.photos import translate_paths
    inp = tmp_path / "in.png"
    out = tmp_path / "out"
    if make_input == "photo":
        Image.fromarray(skimage.data.astronaut()).save(inp)
    elif make_input:
        make_input(inp)
    if make_output is not None and "parent" in message:
        make_output(out)
        out = tmp_path / "file" / "deeper"
    elif make_output is not None:
        make_output(out)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(PathError) as e:
        translate_paths(str(inp), str(out), _identity, 32, face_crop=False, progress=False)
    assert str(e.value) == message.format(inp=inp, out=out, parent=tmp_path / "file")
    assert sorted(os.listdir(tmp_path)) == before


def test_photo_over_the_pixel_budget_is_refused_before_decoding(tmp_path):
    from tests.common.crafted import png
    from ugatit_tf.infer.photos import translate_paths
    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    big.write_bytes(png((12000, 12000)))  # a 12000 x 12000 header, no pixels worth decoding
    summary = translate_paths(str(big), str(tmp_path / "out"), _identity, 32, face_crop=False,
                              progress=False, verbose=False)
    assert summary.failed == [(str(big), f"ImageOverBudget: {big}: PNG image of 144000000 pixels "
                                         f"(12000x12000), over the limit of 50000000 pixels "
                                         f"(frames x largest frame)")]


def test_cli_input_fifo_exits_2_with_one_line(checkpoint, tmp_path, capsys):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    code = cli.main(flags(checkpoint, "--input", str(fifo), "--output", str(tmp_path / "o")))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1] == (f"error: --input {fifo}: is a FIFO, not an image, "
                                            f"a video or a folder")
    assert not (tmp_path / "o").exists()


# --- photo folders with a fake translator (no model) ------------------------------------------

@pytest.fixture
def photo_folder(tmp_path, astronaut):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astronaut).save(d / "astro.png")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.jpg", quality=90)
    (d / "broken.jpg").write_bytes(os.urandom(2048))
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_continues_after_errors(tmp_path, photo_folder, detector, capsys):
    before = {p.name: md5(p) for p in photo_folder.iterdir()}
    out = tmp_path / "out"
    s = P.translate_paths(photo_folder, out, fake_translate, 256, face_crop=True,
                          paste_back=True, fallback="error", detector=detector,
                          progress=False)
    assert s.n_ok == 1 and s.n_failed == 2
    reasons = dict(s.failed)
    broken = str(photo_folder / "broken.jpg")
    coffee = str(photo_folder / "coffee.jpg")
    assert "broken.jpg" in reasons[broken]
    assert reasons[coffee] == (f"no face found in {coffee}; use --fallback center "
                               "to centre-crop instead")
    assert "Traceback" not in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["astro_sheet.png",
                                                     "astro_translated.png"]
    assert load_rgb(out / "astro_translated.png").shape == (512, 512, 3)
    assert "1/3 translated, 2 failed" in s.report()
    # inputs untouched
    assert {p.name: md5(p) for p in photo_folder.iterdir()} == before


def test_fallback_center_succeeds(tmp_path, photo_folder, detector):
    out = tmp_path / "out"
    s = P.translate_paths(str(photo_folder / "*.jpg"), out, fake_translate, 256,
                          fallback="center", detector=detector, progress=False,
                          verbose=False)
    assert s.n_ok == 1 and s.n_failed == 1 and s.n_fallback == 1
    res = load_rgb(out / "coffee_translated.png")
    coffee = load_rgb(photo_folder / "coffee.jpg")  # the decoded JPEG input
    assert res.shape == coffee.shape
    # centre square translated (inverted), the side strips unchanged
    assert np.abs(res[:, 200:400].astype(int) - (255 - coffee[:, 200:400])).mean() < 25
    assert np.array_equal(res[:, :90], coffee[:, :90])


def test_outputs_never_overwrite_inputs(tmp_path, astronaut, detector):
    d = tmp_path / "pics"
    d.mkdir()
    Image.fromarray(astronaut).save(d / "a.png")
    Image.fromarray(astronaut[:, ::-1]).save(d / "a.jpg")
    Image.fromarray(astronaut).save(d / "a_translated.png")
    before = {p.name: md5(p) for p in d.iterdir()}
    with pytest.raises(ValueError, match="never"):
        P.translate_paths(d, d, fake_translate, 64, detector=detector, progress=False)
    with pytest.raises(ValueError, match="never"):
        P.translate_paths(d / "a.png", d, fake_translate, 64, detector=detector,
                          progress=False)
    assert {p.name: md5(p) for p in d.iterdir()} == before
    # same stems get distinct output names
    s = P.translate_paths(d, tmp_path / "o", fake_translate, 64, detector=detector,
                          progress=False, verbose=False, write_sheet=False)
    assert s.n_ok == 3
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["a_jpg_translated.png", "a_png_translated.png",
                     "a_translated_translated.png"]
    assert not any(p.name.startswith(".") for p in (tmp_path / "o").iterdir())
