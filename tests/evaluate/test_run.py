"""The eval phase and the evaluation during training: the whole pipeline on a tiny data set
with a randomly initialised InceptionV3 (no download), TensorBoard scalars, and the clear
error when the ImageNet weights are missing."""

import json
import os
import shutil
import urllib.error

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from ugatit_tf import cli
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.evaluate import metrics as ev
from ugatit_tf.evaluate.inception import InceptionWeightsError
from ugatit_tf.evaluate import run as er
from ugatit_tf.model.checkpoints import load_networks, make_checkpoint, write_config
from tools.demo_data import generate_demo_dataset
from ugatit_tf.model.networks import Networks

STEP = 7


EVAL = dict(inception_weights="random", phase="eval")


def write_checkpoint(cfg):
    """Generators only (what test / eval restore), a step variable, config.json and the
    CheckpointManager state file, as training writes them."""
    nets = Networks(cfg, discriminators=False)
    folder = os.path.join(cfg.checkpoint_dir, cfg.model_dir)
    os.makedirs(folder, exist_ok=True)
    write_config(folder, cfg)
    ckpt = make_checkpoint(nets, step=tf.Variable(STEP, dtype=tf.int64))
    manager = tf.train.CheckpointManager(ckpt, folder, max_to_keep=1, checkpoint_name="ckpt")
    return manager.save(checkpoint_number=STEP)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    generate_demo_dataset(str(root / "datasets" / "tiny"), size=32, n_train=6, n_test=4,
                          seed=11, progress=False)
    cfg = tiny_config(root, dataset_dir=str(root / "datasets"), **EVAL)
    prefix = write_checkpoint(cfg)
    logs = []
    report = er.run_eval(cfg, log=logs.append, progress=False)
    return {"root": root, "cfg": cfg, "prefix": prefix, "report": report, "logs": logs}


def test_helpers():
    assert er.inception_weights_arg("random") is None
    assert er.inception_weights_arg("None") is None
    assert er.inception_weights_arg("imagenet") == "imagenet"
    assert er.inception_weights_arg("/x/w.h5") == "/x/w.h5"
    rgb = (np.arange(40 * 36 * 3) % 256).astype(np.uint8).reshape(40, 36, 3)
    import cv2
    np.testing.assert_array_equal(er.model_view(data_lib.to_model_input(rgb, 32)),
                                  cv2.resize(rgb, (32, 32)))


@pytest.mark.slow
def test_run_eval_end_to_end(setup):
    cfg, report = setup["cfg"], setup["report"]
    path = os.path.join(cfg.result_dir, cfg.model_dir, "eval.json")
    assert report["path"] == path
    saved = json.loads(open(path).read())
    assert sorted(f for f in os.listdir(os.path.dirname(path))) == [
        "eval.json", "eval.png"]  # no temp file
    assert saved["checkpoint"] == setup["prefix"] and saved["step"] == STEP
    assert saved["config"]["img_size"] == 32 and saved["config"]["inception_weights"] == "random"
    assert saved["inception_random"] is True and saved["fid_method"] == "svd"
    assert set(saved["directions"]) == {"A2B", "B2A"}
    for name, d in saved["directions"].items():
        assert d["n"] == 4 and d["n_real"] == 4 and d["kid_subset_size"] == 4
        assert d["kid_subsets_identical"] is True and d["kid_x100_std"] == pytest.approx(0)
        for key in ("kid_x100", "kid_x100_std", "fid"):
            assert np.isfinite(d[key]), (name, key)
        assert d["kid_x100"] == pytest.approx(100 * d["kid"])
        assert d["fid"] > 0
        assert all(np.isfinite(v) for v in d["identity"].values())
        p = d["paired"]
        assert p["n"] == 4 and p["size"] == 32 and len(p["per_image"]) == 4
        for label in ("model", "identity", "target_mean"):
            assert set(p[label]) == {"l1", "psnr", "ssim"}
            assert all(np.isfinite(v) for v in p[label].values())
        assert p["improvement"]["l1"] == pytest.approx(p["identity"]["l1"] - p["model"]["l1"])
        assert set(p["beats_identity"]) == set(p["beats_target_mean"]) == {"l1", "psnr", "ssim"}
        assert p["beats_identity"]["psnr"] == (p["model"]["psnr"] > p["identity"]["psnr"])
    # the identity baseline by hand: input and ground truth resized like the test phase
    root = os.path.join(cfg.dataset_dir, cfg.dataset)
    gt_dir, in_dir = os.path.join(root, "testA_paired"), os.path.join(root, "testA")
    view = lambda p: er.model_view(data_lib.to_model_input(data_lib.load_rgb(p), 32))
    names = sorted(os.listdir(in_dir))
    truth = [view(os.path.join(gt_dir, name)) for name in names]
    identity = [ev.l1(view(os.path.join(in_dir, name)), gt) for name, gt in zip(names, truth)]
    target = [view(p) for p in data_lib.list_images(os.path.join(root, "testB"))]
    mean = np.rint(np.mean(np.stack(target).astype(float), axis=0)).astype(np.uint8)
    paired = saved["directions"]["A2B"]["paired"]
    assert paired["identity"]["l1"] == pytest.approx(np.mean(identity), rel=1e-9)
    # the KID / FID baseline: untranslated testA vs testB, with the same extractor
    extractor = er.make_extractor(cfg)
    f_source = extractor.from_uint8(np.stack([view(os.path.join(in_dir, n)) for n in names]))
    f_target = extractor.from_uint8(np.stack(target))
    base = saved["directions"]["A2B"]["identity"]
    assert base["kid_x100"] == pytest.approx(100 * ev.kid(f_target, f_source)[0], rel=1e-6)
    assert base["fid"] == pytest.approx(ev.fid(f_target, f_source, method="svd"), rel=1e-6)
    assert paired["target_mean"]["ssim"] == pytest.approx(
        np.mean([ev.ssim(mean, gt) for gt in truth]), rel=1e-9)
    text = "\n".join(setup["logs"])
    for word in ("KIDx100", "FID", "A2B", "B2A", "identity", "model beats identity on",
                 "target mean", "model beats target mean on",
                 "smoke tests only", "eval.json"):
        assert word in text, word


@pytest.mark.slow
def test_in_memory_translations_are_the_test_phase_images(setup):
    """The eval phase scores the pixels that --phase test writes in float32 (batched here, one
    image at a time there: float round-off may move a rare pixel by one level). Evaluation
    is float32 on every CPU; the test phase's auto precision may be bfloat16."""
    from ugatit_tf.infer.test_phase import run_test

    cfg, report = setup["cfg"], setup["report"]
    run_test(cfg.replace(phase="test", mixed_precision="none"), log=lambda *a: None,
             progress=False)
    out = os.path.join(cfg.result_dir, cfg.model_dir)
    test = er.load_test_data(cfg, log=lambda *a: None)
    nets, _ = load_networks(cfg)
    fns = er._translators(nets, cfg)
    for direction, source in (("A2B", "testA"), ("B2A", "testB")):
        mine = er.translate(fns[direction], test[source]["inputs"], batch_size=3)
        saved = np.stack([data_lib.load_rgb(os.path.join(out, direction, name + ".png"))
                          for name in test[source]["names"]])
        diff = np.abs(mine.astype(int) - saved.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
        pairs = test["paired"][direction]
        for entry, gt in zip(report["directions"][direction]["paired"]["per_image"],
                             pairs["truth"]):
            i = test[source]["names"].index(entry["name"])
            assert entry["model"]["l1"] == pytest.approx(ev.l1(saved[i], gt), abs=0.01)
            assert entry["model"]["ssim"] == pytest.approx(ev.ssim(saved[i], gt), abs=1e-3)


@pytest.mark.slow
def test_evaluate_during_training_writes_tensorboard_and_caches(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = setup["cfg"]
    nets, _ = load_networks(cfg)
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    cache = {}
    first = er.evaluate_during_training(nets, cfg, 10, writer, cache)
    extractor, real = cache["extractor"], cache["real_features"]["testA"]
    messages = []
    second = er.evaluate_during_training(nets, cfg, 20, writer, cache, log=messages.append)
    assert cache["extractor"] is extractor and cache["real_features"]["testA"] is real
    assert first["step"] == 10 and second["step"] == 20
    assert "eval at iteration 20" in messages[0] and "PSNR" in messages[0]
    # same networks as the eval phase: the same numbers
    for name in ("A2B", "B2A"):
        want = setup["report"]["directions"][name]
        for got in (first["directions"][name], second["directions"][name]):
            assert got["kid_x100"] == pytest.approx(want["kid_x100"], rel=1e-6, abs=1e-9)
            assert got["fid"] == pytest.approx(want["fid"], rel=1e-6)
            assert got["paired"]["model"] == pytest.approx(want["paired"]["model"])
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for name in ("A2B", "B2A"):
        for metric in ("kid_x100", "kid_x100_std", "fid", "paired_l1", "paired_psnr",
                       "paired_ssim", "identity_l1", "identity_psnr", "identity_ssim",
                       "target_mean_l1", "target_mean_psnr", "target_mean_ssim",
                       "identity_kid_x100", "identity_fid"):
            tag = f"eval/{name}/{metric}"
            assert tag in tags, tag
    events = acc.Tensors("eval/A2B/paired_psnr")
    assert [e.step for e in events] == [10, 20]
    assert float(tf.make_ndarray(events[0].tensor_proto)) == pytest.approx(
        first["directions"]["A2B"]["paired"]["model"]["psnr"], rel=1e-6)
    assert float(tf.make_ndarray(acc.Tensors("eval/B2A/kid_x100")[1].tensor_proto)) == \
        pytest.approx(second["directions"]["B2A"]["kid_x100"], rel=1e-5, abs=1e-7)

    # a data set without *_paired folders: no paired section, the extractor is reused
    other_root = tmp_path / "datasets"
    shutil.copytree(os.path.join(cfg.dataset_dir, cfg.dataset), other_root / "tiny",
                    ignore=shutil.ignore_patterns("*_paired"))
    other = cfg.replace(dataset_dir=str(other_root))
    scores = er.evaluate_during_training(nets, other, 30, None, cache)
    assert cache["extractor"] is extractor
    assert all(d["paired"] is None for d in scores["directions"].values())
    assert all(np.isfinite(d["fid"]) for d in scores["directions"].values())
    assert "Paired" not in er.format_report(scores)


def test_ground_truth_without_input_is_a_data_error(tmp_path):
    root = tmp_path / "datasets" / "tiny"
    generate_demo_dataset(str(root), size=32, n_train=1, n_test=3, seed=2, progress=False)
    os.remove(root / "testA" / "0001.jpg")
    with pytest.raises(data_lib.DataError, match=r"testA_paired have no input .*: 0001"):
        er.load_test_data(tiny_config(tmp_path, dataset_dir=str(tmp_path / "datasets"), **EVAL),
                          log=lambda *a: None)


@pytest.mark.slow
def test_missing_imagenet_weights_is_one_clear_line(setup, tmp_path, monkeypatch, capsys):
    from keras.src.utils import file_utils

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no internet (test)")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    cfg = setup["cfg"].replace(inception_weights="imagenet",
                               result_dir=str(tmp_path / "results"))
    with pytest.raises(InceptionWeightsError, match="could not be found or downloaded"):
        er.run_eval(cfg, log=lambda *a: None, progress=False)
    assert not os.path.exists(os.path.join(cfg.result_dir, cfg.model_dir, "eval.json"))
    # through main: exit status 2 and one line on stderr, no traceback
    argv = ["--phase", "eval", "--dataset", "tiny", "--dataset_dir", cfg.dataset_dir,
            "--light", "True", "--img_size", "32", "--ch", "4", "--n_res", "2", "--n_dis",
            "4", "--checkpoint_dir", cfg.checkpoint_dir, "--result_dir", cfg.result_dir]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: The ImageNet InceptionV3 weights")
    assert "--inception_weights PATH" in err[0]


@pytest.mark.slow
def test_training_with_eval_freq_logs_eval_scalars(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ugatit_tf.train.trainer import Trainer

    cfg = setup["cfg"].replace(phase="train", epoch=1, iteration=2, print_freq=2, save_freq=2,
                               eval_freq=1, checkpoint_dir=str(tmp_path / "ck"),
                               log_dir=str(tmp_path / "logs"),
                               sample_dir=str(tmp_path / "samples"))
    messages = []
    Trainer(cfg, log=messages.append).train(progress=False)
    assert sum("eval at iteration" in m for m in messages) == 2, messages
    acc = EventAccumulator(os.path.join(cfg.log_dir, cfg.model_dir),
                           size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("eval/A2B/kid_x100")] == [1, 2]
    assert [e.step for e in acc.Tensors("eval/B2A/paired_ssim")] == [1, 2]
