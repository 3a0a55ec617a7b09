"""Training and test phases: losses against numpy, the lr schedule, the data pipeline, a tiny
training that learns, determinism, exact resume, the test phase's files, and clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.train import losses as L
from ugatit_tf.model.checkpoints import CheckpointError
from ugatit_tf.config import Config
from tools.demo_data import generate_demo_dataset
from ugatit_tf.train.trainer import Trainer, learning_rate, run_test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_demo_dataset(str(root / "tiny"), size=48, n_train=12, n_test=3, seed=5,
                          progress=False)
    return str(root)


def tiny(dataset_dir, tmp_path, **kw):
    base = dict(dataset="tiny", dataset_dir=dataset_dir, light=True, img_size=32, ch=4, n_res=2,
                n_dis=4, epoch=1, iteration=8, print_freq=4, save_freq=4, seed=3,
                checkpoint_dir=str(tmp_path / "ck"), log_dir=str(tmp_path / "logs"),
                sample_dir=str(tmp_path / "samples"), result_dir=str(tmp_path / "results"))
    base.update(kw)
    return Config(**base)


# ---------------------------------------------------------------------------
# Losses and schedule against hand math
# ---------------------------------------------------------------------------

def sigmoid_ce(logits, label):
    return np.mean(np.maximum(logits, 0) - logits * label + np.log1p(np.exp(-np.abs(logits))))


@pytest.mark.parametrize("gan_type", ["lsgan", "gan", "dragan", "hinge", "wgan-gp", "wgan-lp"])
def test_adversarial_losses_match_numpy(gan_type):
    rng = np.random.default_rng(0)
    real = [rng.normal(size=(2, 4, 4, 1)), rng.normal(size=(2, 2))]
    fake = [rng.normal(size=(2, 4, 4, 1)), rng.normal(size=(2, 2))]
    d_want = g_want = 0.0
    for r, f in zip(real, fake):
        if gan_type == "lsgan":
            d_want += np.mean((r - 1) ** 2) + np.mean(f ** 2)
            g_want += np.mean((f - 1) ** 2)
        elif gan_type in ("gan", "dragan"):
            d_want += sigmoid_ce(r, 1) + sigmoid_ce(f, 0)
            g_want += sigmoid_ce(f, 1)
        elif gan_type == "hinge":
            d_want += np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))
            g_want += -np.mean(f)
        else:
            d_want += -np.mean(r) + np.mean(f)
            g_want += -np.mean(f)
    tr = [tf.constant(x, tf.float32) for x in real]
    tfk = [tf.constant(x, tf.float32) for x in fake]
    assert float(L.discriminator_loss(gan_type, tr, tfk)) == pytest.approx(d_want, rel=1e-5)
    assert float(L.generator_loss(gan_type, tfk)) == pytest.approx(g_want, rel=1e-5)


def test_cam_and_l1_losses():
    rng = np.random.default_rng(1)
    s, n = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    assert float(L.cam_loss(tf.constant(s), tf.constant(n))) == pytest.approx(
        sigmoid_ce(s, 1) + sigmoid_ce(n, 0), rel=1e-5)
    a, b = rng.normal(size=(2, 3, 3, 3)), rng.normal(size=(2, 3, 3, 3))
    assert float(L.l1_loss(tf.constant(a), tf.constant(b))) == pytest.approx(
        np.mean(np.abs(a - b)), rel=1e-5)


def test_learning_rate_schedules():
    cfg = Config(epoch=100, iteration=10, decay_epoch=50, lr=1e-4)
    assert learning_rate(cfg, 0) == 1e-4
    assert learning_rate(cfg, 499) == 1e-4  # epoch 49
    assert learning_rate(cfg, 500) == pytest.approx(1e-4 * 50 / 50)  # epoch 50
    assert learning_rate(cfg, 750) == pytest.approx(1e-4 * 25 / 50)  # epoch 75
    assert learning_rate(cfg, 999) == pytest.approx(1e-4 * 1 / 50)  # epoch 99
    assert learning_rate(cfg.replace(decay_flag=False), 999) == 1e-4
    pt = cfg.replace(variant="pytorch")  # total 1000: constant to 500, then -lr/500 each step
    assert learning_rate(pt, 499) == 1e-4
    assert learning_rate(pt, 500) == pytest.approx(1e-4 - 1e-4 / 500)
    assert learning_rate(pt, 999) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def test_missing_and_empty_domain_fail_naming_the_folder(dataset_dir, tmp_path):
    cfg = tiny(dataset_dir, tmp_path, dataset="nothing_here")
    with pytest.raises(data_lib.DataError, match="nothing_here does not exist"):
        Trainer(cfg)
    root = tmp_path / "ds" / "empty"
    for d in ("trainA", "trainB"):
        (root / d).mkdir(parents=True)
    (root / "trainA" / "a.png").write_bytes(b"")  # present, so trainB is the empty one
    cfg = tiny(str(tmp_path / "ds"), tmp_path, dataset="empty")
    with pytest.raises(data_lib.DataError) as e:
        Trainer(cfg)
    assert str(e.value) == (f"data folder {root / 'trainB'} has no images "
                            f"(jpg, jpeg, png, bmp, gif, webp)")


def test_pipeline_range_shape_determinism_and_augmentation(dataset_dir, tmp_path):
    cfg = tiny(dataset_dir, tmp_path, batch_size=3)
    files = data_lib.domain_files(cfg)["trainA"]
    a = [b.numpy() for b in data_lib.train_dataset(files, cfg, 7).take(4)]
    b = [b.numpy() for b in data_lib.train_dataset(files, cfg, 7).take(4)]
    c = [b.numpy() for b in data_lib.train_dataset(files, cfg, 8).take(4)]
    assert a[0].shape == (3, 32, 32, 3) and a[0].dtype == np.float32
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert min(x.min() for x in a) >= -1.0 and max(x.max() for x in a) <= 1.0
    # without augmentation every element is one of the plainly resized files
    plain_cfg = cfg.replace(augment_flag=False)
    plain = {data_lib.preprocess(data_lib.decode(f), 32, False, None).numpy().tobytes()
             for f in files}
    for batch in data_lib.train_dataset(files, plain_cfg, 1).take(3):
        for img in batch.numpy():
            assert img.tobytes() in plain
    # with augmentation, about half of the images are flipped/cropped variants
    seeds = [tf.constant([1, i], tf.int64) for i in range(40)]
    img0 = data_lib.decode(files[0])
    base = data_lib.preprocess(img0, 32, False, None).numpy()
    changed = sum(not np.array_equal(data_lib.preprocess(img0, 32, True, s).numpy(), base)
                  for s in seeds)
    assert 10 <= changed <= 30
    assert data_lib.augment_size(256) == 286 and data_lib.augment_size(128) == 143


def test_test_loading_matches_original_formula(tmp_path):
    import cv2
    rgb = (np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3)
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    x = data_lib.to_model_input(data_lib.load_rgb(path), 32)
    want = cv2.resize(rgb, (32, 32)) / 127.5 - 1
    np.testing.assert_allclose(x, want, atol=1e-6)
    from ugatit_tf.common.images import to_uint8
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 0.999, 1.0]), "truncate"),
                                  [0, 127, 254, 255])


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_training_cycle_and_identity_losses_fall(dataset_dir, tmp_path):
    cfg = tiny(dataset_dir, tmp_path, iteration=40, lr=1e-3, print_freq=40, save_freq=40)
    trainer = Trainer(cfg, log=lambda *a: None)
    history = trainer.train(progress=False)["history"]["losses"]
    losses = [h["G_A_cycle"] + h["G_B_cycle"] + h["G_A_identity"] + h["G_B_identity"]
              for h in history]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    assert np.isfinite(losses).all()
    # the rho constraint held through training
    for v in trainer.g_vars:
        if v.path.endswith("rho"):
            assert 0.0 <= v.numpy().min() and v.numpy().max() <= 1.0


def test_same_seed_same_losses_and_samples(dataset_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = tiny(dataset_dir, tmp_path / name, iteration=3, print_freq=3)
        runs.append(Trainer(cfg, log=lambda *a: None).train(progress=False))
    assert runs[0]["history"] == runs[1]["history"]
    assert runs[0]["last"] == runs[1]["last"]
    for name in ("a", "b"):
        folder = tmp_path / name / "samples" / tiny(dataset_dir, tmp_path).model_dir
        assert sorted(os.listdir(folder)) == ["sample_0000003.png"]


@pytest.mark.slow
def test_resume_continues_exactly(dataset_dir, tmp_path):
    """6 iterations in one go equal 4 + (new process state) 2, with lr, optimizer slots and
    data position restored."""
    kw = dict(iteration=3, epoch=2, save_freq=100, print_freq=100, decay_epoch=1)
    full = Trainer(tiny(dataset_dir, tmp_path / "full", **kw), log=lambda *a: None)
    full_out = full.train(progress=False)

    first = Trainer(tiny(dataset_dir, tmp_path / "split", **kw), log=lambda *a: None)
    first.train(max_iterations=4, progress=False)
    first.save()
    messages = []
    second = Trainer(tiny(dataset_dir, tmp_path / "split", **kw), log=messages.append)
    second_out = second.train(progress=False)
    assert second_out["start"] == 4
    assert any("Resumed from" in m and "at iteration 4" in m for m in messages), messages
    assert second_out["history"]["Generator_loss"] == full_out["history"]["Generator_loss"][4:]
    assert second_out["last"]["lr"] == full_out["last"]["lr"] == pytest.approx(
        learning_rate(second.config, 5), rel=1e-6)
    assert int(second.g_optim.iterations) == int(full.g_optim.iterations) == 6
    for a, b in zip(full.g_optim.variables, second.g_optim.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    for a, b in zip(full.nets.disA.variables, second.nets.disA.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_resume_with_other_architecture_names_the_flag(dataset_dir, tmp_path):
    cfg = tiny(dataset_dir, tmp_path, iteration=1)
    Trainer(cfg, log=lambda *a: None).train(progress=False)
    # --ch is not part of the folder name (as in the original), so the folder is shared
    with pytest.raises(CheckpointError, match=r"trained with --ch 4 \(you gave 8\); pass the "):
        Trainer(cfg.replace(ch=8), log=lambda *a: None).train(progress=False)


@pytest.mark.slow
def test_batch_size_two_gan_types_and_pytorch_variant(dataset_dir, tmp_path):
    for gan_type, variant in (("wgan-gp", "tf1"), ("hinge", "pytorch")):
        cfg = tiny(dataset_dir, tmp_path / gan_type, iteration=1, batch_size=2, gan_type=gan_type,
                   variant=variant)
        out = Trainer(cfg, log=lambda *a: None).train(progress=False)["last"]
        assert np.isfinite(list(out.values())).all()


def test_tensorboard_scalars_written(dataset_dir, tmp_path):
    cfg = tiny(dataset_dir, tmp_path, iteration=2, print_freq=2)
    Trainer(cfg, log=lambda *a: None).train(progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(cfg.log_dir, cfg.model_dir),
                           size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for tag in ("Generator_loss", "Discriminator_loss", "G_A_loss", "G_A_gan", "G_A_cycle",
                "G_A_identity", "G_A_cam", "G_B_cam", "D_A_loss", "D_B_loss", "lr", "samples"):
        assert tag in tags, tag
    assert any(t.endswith("rho_mean") for t in tags)


# ---------------------------------------------------------------------------
# Test phase and the command line
# ---------------------------------------------------------------------------

def test_test_phase_writes_every_image_and_index(dataset_dir, tmp_path):
    cfg = tiny(dataset_dir, tmp_path, iteration=1)
    Trainer(cfg, log=lambda *a: None).train(progress=False)
    index = run_test(cfg, log=lambda *a: None, progress=False)
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


def test_test_phase_without_checkpoint_says_what_to_do(dataset_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found in .*: train first"):
        run_test(tiny(dataset_dir, tmp_path), log=lambda *a: None, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--img_size", "32", "--ch", "4", "--n_res", "2", "--n_dis", "4"],
    ["--img_size", "64", "--ch", "8", "--n_dis", "5"],
])
def test_main_small_configs(dataset_dir, tmp_path, flags):
    common = ["--dataset", "tiny", "--dataset_dir", dataset_dir, "--light", "True",
              "--epoch", "1", "--iteration", "1", "--checkpoint_dir", str(tmp_path / "ck"),
              "--log_dir", str(tmp_path / "logs"), "--sample_dir", str(tmp_path / "s"),
              "--result_dir", str(tmp_path / "r")] + flags
    for phase in ("train", "test"):
        res = subprocess.run([sys.executable, "main.py", "--phase", phase] + common, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Test finished: 6 images" in res.stdout


def test_main_bad_flags_exit_before_work(tmp_path):
    res = subprocess.run([sys.executable, "main.py", "--img_size", "64", "--n_dis", "6"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "--img_size 64 is too small for --n_dis 6" in res.stderr
    res = subprocess.run([sys.executable, "main.py", "--light", "maybe"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "argument --light: expected True or False" in res.stderr
