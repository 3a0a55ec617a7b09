"""model/deferred_gradients.py: a deferred kernel's gradient is the weight penalty's term then
the calls' outer products in forward order, summed in float32 in that order (checked against
numpy, bit for bit); kernels the update does not train, and layers outside a recording, keep
autodiff's gradient."""

import numpy as np
import tensorflow as tf

from ugatit_tf.model import deferred_gradients
from ugatit_tf.model.deferred_gradients import DeferredKernelGradients
from ugatit_tf.model.layers import Dense

PENALTY = np.float32(0.5e-4)


def _dense(seed=0, dtype=None):
    layer = Dense(5, defer_gradient=True, name="dense", dtype=dtype)
    layer.build((None, 7))
    layer.kernel.assign(np.random.default_rng(seed).normal(size=(7, 5)).astype(np.float32))
    return layer


def _gradients(layer, xs, weights, trained):
    """Gradient of sum_k sum(layer(x_k) * weights_k) + PENALTY * sum(kernel ** 2) for the
    variables in `trained`, the trainer's way: tape, recorder, sources, completion."""
    variables = [layer.kernel, layer.bias]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([v.value for v in variables])
        deferred = DeferredKernelGradients(trained, tape)
        with deferred_gradients.recording(deferred):
            loss = sum(tf.reduce_sum(layer(x) * w) for x, w in zip(xs, weights))
            loss += PENALTY * deferred_gradients.sum_of_squares(layer.kernel)
    sources = deferred.sources()
    grads = tape.gradient(loss, variables + sources)
    return [g.numpy() for g in deferred.gradients(variables, grads[:2], grads[2:])]


def test_deferred_gradient_is_penalty_then_calls_in_forward_order():
    rng = np.random.default_rng(1)
    layer = _dense()
    xs = [rng.normal(size=(1, 7)).astype(np.float32) for _ in range(3)]
    ws = [rng.normal(size=(1, 5)).astype(np.float32) for _ in range(3)]
    kernel_grad, bias_grad = _gradients(layer, xs, ws, [layer.kernel, layer.bias])
    w = layer.kernel.numpy()
    penalty = (np.float32(2) * PENALTY) * w
    calls = [np.outer(x[0], dy[0]) for x, dy in zip(xs, ws)]  # one product each: exact
    want = ((penalty + calls[0]) + calls[1]) + calls[2]
    np.testing.assert_array_equal(kernel_grad, want)
    # the order is what the test pins: the other orders give other float32 bits here
    assert not np.array_equal(((penalty + calls[2]) + calls[1]) + calls[0], want)
    assert not np.array_equal(penalty + ((calls[0] + calls[1]) + calls[2]), want)
    # the bias keeps autodiff's gradient (its own order of the three terms)
    np.testing.assert_allclose(bias_grad, (ws[0] + ws[1] + ws[2])[0], rtol=1e-6)


def test_batched_calls_match_float64():
    rng = np.random.default_rng(2)
    layer = _dense(3)
    xs = [rng.normal(size=(4, 7)).astype(np.float32) for _ in range(2)]
    ws = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(2)]
    kernel_grad, _ = _gradients(layer, xs, ws, [layer.kernel, layer.bias])
    w = layer.kernel.numpy().astype(np.float64)
    want = 2 * float(PENALTY) * w + sum(x.astype(np.float64).T @ dy for x, dy in zip(xs, ws))
    np.testing.assert_allclose(kernel_grad, want, rtol=1e-6, atol=1e-6)


def test_untrained_kernel_and_plain_calls_keep_autodiff():
    rng = np.random.default_rng(4)
    layer = _dense(5)
    xs = [rng.normal(size=(2, 7)).astype(np.float32) for _ in range(2)]
    ws = [rng.normal(size=(2, 5)).astype(np.float32) for _ in range(2)]
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(layer(x) * w) for x, w in zip(xs, ws))
        loss += PENALTY * tf.reduce_sum(tf.square(layer.kernel))
    want = [g.numpy() for g in tape.gradient(loss, [layer.kernel, layer.bias])]
    # an update that trains only the bias: the kernel is not deferred (nor trained)
    got = _gradients(layer, xs, ws, [layer.bias])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert deferred_gradients.active() is None


def test_one_cast_of_the_kernel_for_all_calls():
    """In mixed precision the kernel is cast to the inputs' dtype once per update, not once
    per call (each copy lives until its call's backward pass); the same values either way."""
    layer = _dense(6, dtype="mixed_bfloat16")
    xs = [tf.constant(np.random.default_rng(k).normal(size=(1, 7)), tf.bfloat16)
          for k in range(2)]

    @tf.function
    def outputs():
        with tf.GradientTape() as tape:
            deferred = DeferredKernelGradients([layer.kernel], tape)
            with deferred_gradients.recording(deferred):
                return [layer(x) for x in xs]

    graph = outputs.get_concrete_function().graph
    casts = [op for op in graph.get_operations() if op.type == "Cast"
             and op.outputs[0].dtype == tf.bfloat16 and op.outputs[0].shape == (7, 5)]
    assert len(casts) == 1
    want = [tf.matmul(x, tf.cast(layer.kernel, tf.bfloat16)) + tf.cast(layer.bias, tf.bfloat16)
            for x in xs]
    for got, expected in zip(outputs(), want):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
