"""infer/test_phase.py (`--phase test`): every test image translated with its attention overlay
and listed in index.html, the pixels truncated like the original's, and clear errors without a
checkpoint or with an unwritable result folder."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import tiny_config
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.infer.faces import heatmap_overlay
from ugatit_tf.infer.test_phase import run_test, write_png
from ugatit_tf.model.checkpoints import (CheckpointError, load_networks, make_checkpoint,
                                         model_checkpoint_dir, write_config)
from ugatit_tf.model import precision as precision_lib
from ugatit_tf.model.networks import Networks


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A checkpoint of freshly initialised networks, as training writes it; the test phase in
    float32, whose numbers these tests check (--mixed_precision auto has its own test)."""
    cfg = tiny_config(tmp_path_factory.mktemp("test_phase"), dataset_dir=tiny_dataset,
                      phase="test", mixed_precision="none")
    nets = Networks(cfg, discriminators=True)
    folder = model_checkpoint_dir(cfg)
    tf.train.CheckpointManager(make_checkpoint(nets), folder, 1,
                               checkpoint_name="ckpt").save(checkpoint_number=1)
    write_config(folder, cfg)
    return cfg


def test_test_phase_writes_every_image_and_index(trained):
    index = run_test(trained, log=lambda *a: None, progress=False)
    out = os.path.dirname(index)
    for direction in ("A2B", "B2A"):
        names = sorted(os.listdir(os.path.join(out, direction)))
        assert names == ["0000.png", "0000_attention.png", "0001.png", "0001_attention.png",
                         "0002.png", "0002_attention.png"]
    text = open(index).read()
    assert text.count("<tr><td>") == 6
    assert "A2B/0001.png" in text and "0001_attention.png" in text
    # inputs are linked, not copied or overwritten
    assert os.path.join("tiny", "testA", "0001.jpg") in text


def test_test_phase_pixels_are_the_originals_truncation(trained):
    """The written PNGs hold floor((y + 1) * 127.5) of the generator's output y (the
    original's inverse transform and uint8 cast), and the attention overlay is drawn over the
    truncated input."""
    index = run_test(trained, log=lambda *a: None, progress=False)
    nets, _ = load_networks(trained)
    src = os.path.join(trained.dataset_dir, "tiny", "testB", "0002.png")
    x = data_lib.to_model_input(data_lib.load_rgb(src), 32)[None]
    y, _, heatmap = nets.genB2A(tf.constant(x), kernels="frozen")  # --kernels auto, one image
    assert np.abs(y.numpy() - nets.genB2A(tf.constant(x))[0].numpy()).max() <= 1e-5
    want = np.floor(np.clip((y[0].numpy().astype(np.float64) + 1.0) * 127.5, 0, 255))
    folder = os.path.join(os.path.dirname(index), "B2A")
    got = np.asarray(Image.open(os.path.join(folder, "0002.png")))
    np.testing.assert_array_equal(got, want.astype(np.uint8))
    shown = np.floor(np.clip((x[0].astype(np.float64) + 1.0) * 127.5, 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(folder,
                                                                     "0002_attention.png"))),
                                  heatmap_overlay(shown, heatmap[0].numpy()))


def test_write_png_round_trips_and_leaves_no_temporary_file(tmp_path):
    rgb = (np.arange(5 * 7 * 3) * 7 % 256).astype(np.uint8).reshape(5, 7, 3)
    path = write_png(str(tmp_path / "sub" / "x.png"), rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    assert os.listdir(tmp_path / "sub") == ["x.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_test_phase_without_checkpoint_says_what_to_do(tiny_dataset, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found in .*: train first"):
        run_test(tiny_config(tmp_path, dataset_dir=tiny_dataset), log=lambda *a: None,
                 progress=False)
    assert sorted(os.listdir(tmp_path)) == []  # the results folder it checked is gone again


def test_output_folder_removes_only_what_it_created(tmp_path):
    mine = tmp_path / "mine"
    (mine / "keep").mkdir(parents=True)
    with pytest.raises(KeyError):
        with data_lib.output_folder(str(mine / "a" / "b"), "--result_dir"):
            raise KeyError("failed")
    assert sorted(p.name for p in mine.iterdir()) == ["keep"]
    with data_lib.output_folder(str(mine / "a" / "b"), "--result_dir") as out:
        (mine / "a" / "b" / "x.png").write_bytes(b"")
    assert out == str(mine / "a" / "b") and (mine / "a" / "b" / "x.png").exists()


def test_unwritable_result_folder_in_test_phase(tiny_dataset, tmp_path):
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset)
    results = tmp_path / "results"
    if os.geteuid() != 0:
        results.mkdir()
        results.chmod(0o555)
        out_dir = results / cfg.model_dir
    else:  # root writes anywhere: make --result_dir a file
        results.write_text("not a folder")
        out_dir = results / cfg.model_dir
    with pytest.raises(data_lib.OutputError) as e:  # before any checkpoint is looked for
        run_test(cfg, log=lambda *a: None, progress=False)
    assert str(e.value).startswith(f"cannot write to {out_dir} (")
    assert str(e.value).endswith("): check --result_dir (it must be a writable folder)")


@pytest.mark.slow
def test_test_phase_in_bfloat16_is_close_to_float32(trained, tmp_path):
    """--mixed_precision mixed_bfloat16 runs the generators in bfloat16 (float32 weights and
    statistics): the PNGs differ from the float32 ones, by a few levels at most (bfloat16
    keeps 8 bits of mantissa: relative error 2^-8 per rounding, a handful of roundings
    deep on [-1, 1] outputs x 127.5)."""
    index32 = run_test(trained.replace(result_dir=str(tmp_path / "f32")), log=lambda *a: None,
                       progress=False)
    index16 = run_test(trained.replace(result_dir=str(tmp_path / "bf16"),
                                       mixed_precision="mixed_bfloat16"),
                       log=lambda *a: None, progress=False)
    nets16, _ = load_networks(trained, mixed_precision="mixed_bfloat16")
    assert nets16.genA2B.compute_dtype == "bfloat16" and nets16.genA2B.conv.kernel.dtype == "float32"
    diffs = []
    for index in (index32, index16):
        path = os.path.join(os.path.dirname(index), "A2B", "0001.png")
        diffs.append(np.asarray(Image.open(path)).astype(int))
    delta = np.abs(diffs[0] - diffs[1])
    assert 0 < delta.max() <= 8


@pytest.mark.parametrize("cpu_flag, precision", [("avx512_bf16", "mixed_bfloat16"), ("", "none")])
def test_test_phase_auto_precision_follows_the_cpu(trained, tmp_path, monkeypatch, cpu_flag,
                                                   precision):
    """--mixed_precision auto (the default) translates in bfloat16 on a CPU that computes it
    natively, and says so in one line; elsewhere in float32, silently: the same PNGs as the
    explicit flag's."""
    monkeypatch.setattr(precision_lib, "native_bfloat16", lambda: cpu_flag)
    pngs, logs = [], []
    for name, value in (("auto", "auto"), ("explicit", precision)):
        log = logs.append if name == "auto" else (lambda *a: None)
        index = run_test(trained.replace(result_dir=str(tmp_path / name), mixed_precision=value),
                         log=log, progress=False)
        path = os.path.join(os.path.dirname(index), "A2B", "0001.png")
        pngs.append(np.asarray(Image.open(path)))
    np.testing.assert_array_equal(pngs[0], pngs[1])
    said = [line for line in logs if "--mixed_precision" in line]
    assert said == ([" [*] --mixed_precision auto: bfloat16, this CPU has avx512_bf16 (faster; "
                     "pixels 0.3 of 255 levels from float32's on average); --mixed_precision "
                     "none for float32"]
                    if cpu_flag else [])
