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


@pytest.mark.parametrize("torch_epsilon", [False, True])
def test_update_counted_is_the_same_step_as_apply_gradients(torch_epsilon):
    """apply_gradients on some variables then update_counted on another (the trainer's way
    for deferred kernels) gives the same bits as one apply_gradients on all, step after
    step (the step number, learning rate and formula of the step just counted)."""
    rng = np.random.default_rng(1)
    inits = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2)]
    together, apart = ([keras.Variable(x) for x in inits] for _ in range(2))
    optims = [FusedAdam(learning_rate=1e-2, beta_1=0.5, beta_2=0.999, epsilon=1e-3,
                        torch_epsilon=torch_epsilon) for _ in range(2)]
    for opt, variables in zip(optims, (together, apart)):
        opt.build(variables)

    @tf.function
    def step_apart(g0, g1):
        optims[1].apply_gradients([(g0, apart[0])])
        optims[1].update_counted(g1, apart[1])

    for _ in range(4):
        grads = [tf.constant(rng.normal(size=(3, 4)).astype(np.float32)) for _ in range(2)]
        optims[0].apply_gradients(zip(grads, together))
        step_apart(*grads)
    for x, y in zip(together + optims[0].variables, apart + optims[1].variables):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


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
