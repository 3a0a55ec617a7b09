"""Mixed precision in training (bfloat16, float16 with loss scaling): runs learn and stay near
float32; the layers keep their statistics, CAM logits, spectral norm and outputs in float32.
(Kept apart from test_distribute.py so the two heavy files run on both test workers.)"""

import numpy as np
import pytest

from tests.conftest import tiny_config

# 20 iterations at lr 1e-3 (as in test_trainer) on the suite's tiny model
LEARN = dict(n_res=2, batch_size=1, epoch=1, iteration=20, lr=1e-3, decay_flag=False,
             print_freq=100, save_freq=100, gan_type="lsgan")
KEYS = ("Discriminator_loss", "Generator_loss", "D_A_loss", "G_B_cycle", "G_A_cam")


def _losses(history):
    return np.array([[h[k] for k in KEYS] for h in history["losses"]])


def _reconstruction(history):
    return np.array([h["G_A_cycle"] + h["G_B_cycle"] + h["G_A_identity"] + h["G_B_identity"]
                     for h in history["losses"]])


@pytest.fixture(scope="module")
def float32_run(tiny_dataset, tmp_path_factory):
    from ugatit_tf.train.trainer import Trainer
    cfg = tiny_config(tmp_path_factory.mktemp("f32"), dataset_dir=tiny_dataset, **LEARN)
    return Trainer(cfg, log=lambda *a: None).train(progress=False)["history"]


@pytest.mark.slow
@pytest.mark.parametrize("precision,first_rtol", [("mixed_bfloat16", 0.03),
                                                  ("mixed_float16", 0.005)])
def test_mixed_precision_trains_near_float32(tiny_dataset, tmp_path, float32_run, precision,
                                            first_rtol):
    """Half-precision runs learn (the reconstruction losses fall over 20 steps) and stay near
    float32: the first iteration's losses (same weights, same data) within `first_rtol`, the
    mean reconstruction loss of the last 5 iterations within 15 %."""
    from ugatit_tf.train.trainer import Trainer
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, mixed_precision=precision, **LEARN)
    trainer = Trainer(cfg, log=lambda *a: None)
    assert trainer.nets.genA2B.compute_dtype == precision.split("_")[1]
    assert {v.dtype for v in trainer.g_vars + trainer.d_vars} == {"float32"}
    history = trainer.train(progress=False)["history"]
    rec, rec32 = _reconstruction(history), _reconstruction(float32_run)
    assert np.isfinite(_losses(history)).all()
    assert rec[-5:].mean() < 0.8 * rec[:3].mean(), rec
    np.testing.assert_allclose(_losses(history)[0], _losses(float32_run)[0], rtol=first_rtol)
    assert abs(rec[-5:].mean() - rec32[-5:].mean()) < 0.15 * rec32[-5:].mean(), (rec, rec32)
    for v in trainer.g_vars:  # the rho constraint holds in mixed precision too
        if v.path.endswith("rho"):
            assert 0.0 <= v.numpy().min() and v.numpy().max() <= 1.0


@pytest.mark.slow
def test_half_precision_layers_keep_float32_statistics():
    """Under mixed_bfloat16 the convolutions run in bfloat16 but norms, CAM logits, spectral
    norm and outputs stay float32, and the weights are float32 variables."""
    import keras
    import tensorflow as tf

    from ugatit_tf.model.precision import precision_policy
    from ugatit_tf.model.networks import build_discriminator, build_generator
    cfg = tiny_config(n_res=1)
    keras.utils.set_random_seed(1)
    g32 = build_generator(cfg, "generator_B")
    d32 = build_discriminator(cfg, "discriminator_A")
    with precision_policy("mixed_bfloat16"):
        g16 = build_generator(cfg, "generator_B")
        d16 = build_discriminator(cfg, "discriminator_A")
    assert keras.config.dtype_policy().name == "float32"  # restored
    for a, b in zip(g16.variables + d16.variables, g32.variables + d32.variables):
        assert a.dtype == "float32"
        a.assign(b)
    x = tf.random.stateless_uniform([2, 32, 32, 3], [1, 2], -1, 1)
    (y16, cam16, heat16), (y32, cam32, _) = g16(x), g32(x)
    assert (y16.dtype, cam16.dtype, heat16.dtype) == (tf.float32,) * 3
    np.testing.assert_allclose(y16.numpy(), y32.numpy(), atol=0.05)
    np.testing.assert_allclose(cam16.numpy(), cam32.numpy(), rtol=0.05, atol=0.01)
    u_before = d16.local.conv_0.sn_u.numpy()
    logits16, _, _ = d16(x, training=True)
    logits32, _, _ = d32(x, training=True)
    assert logits16[0].dtype == tf.float32
    # the power iteration ran in float32: u equals the float32 model's exactly
    assert not np.array_equal(d16.local.conv_0.sn_u.numpy(), u_before)
    np.testing.assert_allclose(d16.local.conv_0.sn_u.numpy(), d32.local.conv_0.sn_u.numpy(),
                               rtol=1e-6)


def test_auto_precision_trains_in_float32(tiny_dataset, tmp_path, monkeypatch):
    """--mixed_precision auto (the default) trains in float32 even on a CPU with bfloat16
    (the original's numbers): the networks compute in float32 and the run's config says
    none."""
    from ugatit_tf.model import precision as precision_lib
    from ugatit_tf.train.trainer import Trainer
    monkeypatch.setattr(precision_lib, "native_bfloat16", lambda: "amx_bf16")
    cfg = tiny_config(tmp_path, dataset_dir=tiny_dataset, mixed_precision="auto", **LEARN)
    trainer = Trainer(cfg, log=lambda *a: None)
    assert trainer.config.mixed_precision == "none"
    assert trainer.nets.genA2B.compute_dtype == trainer.nets.disA.compute_dtype == "float32"
