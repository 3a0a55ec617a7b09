"""train/losses.py against hand-written numpy: the adversarial losses of every gan_type, the CAM
loss and L1."""

import numpy as np
import pytest
import tensorflow as tf

from ugatit_tf.train import losses as L


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
