"""train/optimizer.py: the learning-rate schedules of both originals, and FusedAdam against
Keras' own Adam."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ugatit_tf.config import Config
from ugatit_tf.train.optimizer import FusedAdam, inner, learning_rate, make_optimizer


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


def test_fused_adam_equals_keras_adam():
    rng = np.random.default_rng(0)
    init = rng.normal(size=(3, 4)).astype(np.float32)
    a, b = keras.Variable(init), keras.Variable(init)
    fused = FusedAdam(learning_rate=1e-2, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
    plain = keras.optimizers.Adam(learning_rate=1e-2, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
    for _ in range(5):
        g = tf.constant(rng.normal(size=(3, 4)).astype(np.float32))
        fused.apply_gradients([(g, a)])
        plain.apply_gradients([(g, b)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    for x, y in zip(fused.variables, plain.variables):  # iterations, lr, m, v
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


def test_make_optimizer_has_the_originals_settings_and_loss_scaling_for_float16():
    cfg = Config(lr=2e-4)
    adam = make_optimizer(cfg, "G_optim")
    assert isinstance(adam, FusedAdam) and inner(adam) is adam
    assert (adam.name, float(adam.learning_rate), adam.beta_1, adam.beta_2, adam.epsilon) == (
        "G_optim", pytest.approx(2e-4), 0.5, 0.999, 1e-8)
    scaled = make_optimizer(cfg, "D_optim", "mixed_float16")
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(inner(scaled), FusedAdam) and inner(scaled).name == "D_optim"
    assert isinstance(make_optimizer(cfg, "D_optim", "mixed_bfloat16"), FusedAdam)
