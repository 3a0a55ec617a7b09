"""The one Adam of the project, with the original's settings (lr, beta1 0.5, beta2 0.999, epsilon
1e-8), used by training and by the checkpoint converters that write Adam state, and the
original's learning-rate schedule.

FusedAdam is keras.optimizers.Adam with the same formula, slot variables and checkpoint layout,
but one fused kernel (ResourceApplyAdam) per variable update instead of about ten element-wise
ops (tools/benchmark.py measures the training step).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ugatit_tf.config import Config
from ugatit_tf.train.distribute import uses_loss_scale


class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose per-variable update is ONE fused kernel
    (ResourceApplyAdam) instead of about ten element-wise ops, with the step's scalars
    (b1^t, b2^t, ...) computed once per update instead of once per variable: the same
    formula (Keras' and TF's Adam both use lr * sqrt(1 - b2^t) / (1 - b1^t) and epsilon
    outside the square root), the same slot variables and checkpoint layout, a fraction of
    the ops per step.

    `torch_epsilon=True` puts epsilon where torch.optim.Adam has it, after the bias correction
    of the second moment: m_hat / (sqrt(v_hat) + eps), i.e. epsilon * sqrt(1 - b2^t) in the
    formula above (the pytorch variant)."""

    _scalars = None

    def __init__(self, *args, torch_epsilon=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.torch_epsilon = torch_epsilon

    def _step_scalars(self, step, learning_rate):
        """The fused kernel's scalars for Adam step `step` (1-based, an integer tensor)."""
        step = tf.cast(step, tf.float32)
        beta_1, beta_2 = tf.constant(self.beta_1, tf.float32), tf.constant(self.beta_2,
                                                                           tf.float32)
        beta2_power = tf.pow(beta_2, step)
        epsilon = tf.constant(self.epsilon, tf.float32)
        if self.torch_epsilon:
            epsilon *= tf.sqrt(1.0 - beta2_power)
        return dict(beta1_power=tf.pow(beta_1, step), beta2_power=beta2_power,
                    lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
                    epsilon=epsilon)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # once per apply (cross-replica context), shared by every variable's update
        self._scalars = self._step_scalars(self.iterations + 1, learning_rate)
        try:
            return super()._distributed_tf_update_step(distribution, grads_and_vars,
                                                       learning_rate)
        finally:
            self._scalars = None

    def update_counted(self, gradient, variable):
        """The fused update of one more variable in the step that apply_gradients has just
        counted (the same step number, learning rate and formula), so that a gradient can be
        made, applied and freed after the others (model/deferred_gradients.py). One
        replica only. Returns the update op."""
        self._scalars = self._step_scalars(self.iterations, self.learning_rate)
        try:
            return self.update_step(gradient, variable, self.learning_rate)
        finally:
            self._scalars = None

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or self._scalars is None or isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != tf.float32):
            if self.torch_epsilon:
                raise ValueError(f"{self.name}: torch_epsilon needs the fused update (dense "
                                 f"float32 gradients, no amsgrad)")
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        return tf.raw_ops.ResourceApplyAdam(var=_handle(variable), m=_handle(m), v=_handle(v),
                                            grad=tf.cast(gradient, tf.float32),
                                            use_locking=False, **self._scalars)


def _handle(variable):
    if isinstance(variable, keras.Variable):  # a Keras variable wraps a tf.Variable
        variable = variable.value
    return variable.handle


def make_optimizer(config: Config, name: str, mixed_precision: str = "none"):
    """The original's Adam (config.lr, beta1 0.5, beta2 0.999, epsilon 1e-8, TF1's default)
    named `name` (G_optim, D_optim). Its learning rate is a variable, so decay and resume
    restore it exactly. With mixed_precision "mixed_float16" it comes wrapped in a
    LossScaleOptimizer (`inner` gives the Adam back). Build it inside the strategy's scope."""
    optim = FusedAdam(learning_rate=config.lr, beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                      torch_epsilon=config.variant == "pytorch", name=name)
    if uses_loss_scale(mixed_precision):
        return keras.optimizers.LossScaleOptimizer(optim, name=f"{name}_loss_scale")
    return optim


def inner(optimizer):
    """The Adam inside a LossScaleOptimizer (checkpointed under the original's G_optim /
    D_optim names, so checkpoints do not depend on the precision)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def learning_rate(config: Config, iteration: int) -> float:
    """The learning rate of (0-based) iteration `iteration`.

    tf1: constant until decay_epoch, then linearly to 0 at the last epoch, set per epoch
    (lr * (epoch_total - epoch) / (epoch_total - decay_epoch)).
    pytorch: constant for the first half of all iterations, then lowered by lr / (total/2)
    every iteration."""
    if not config.decay_flag:
        return config.lr
    if config.variant == "pytorch":
        total = config.epoch * config.iteration
        half = total // 2
        step = iteration + 1
        if half == 0 or step <= half:
            return config.lr
        return config.lr - config.lr / half * (step - half)
    epoch = iteration // config.iteration
    if epoch < config.decay_epoch or config.epoch == config.decay_epoch:
        return config.lr
    return config.lr * (config.epoch - epoch) / (config.epoch - config.decay_epoch)
