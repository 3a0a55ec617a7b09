"""Deferred gradients for the full generator's first MLP kernel: the same sums, formed late and
one term at a time, so full-model training at 256 px fits in less memory.

The full model's MLP starts with a dense layer on the flattened encoder output: a 1 GiB kernel
at 256 px ((64 * 64 * 256) x 256 floats). Its gradient in one G step is the weight penalty's
term 2c * W plus one outer product x_k^T dy_k per call of the generator. Autodiff forms each
1 GiB term as soon as it can (the penalty's at the very start of the step, each product when
the backward pass reaches its call) and holds them all until the last one arrives. Inside
`recording(recorder)`, a layer built with `defer_gradient=True` stops the gradient at its
kernel and records its input and output; the weight penalty does the same for that kernel.
The trainer asks the tape for the gradients of those outputs (small: [batch, units] and a
scalar); `makers` (or `gradients`, all at once) form each kernel's gradient from them after
the backward pass, one term at a time: the penalty's, then the calls' in forward order, the
order in which TensorFlow's graph optimizer sums autodiff's terms (it sorts the sum's inputs
by name), so training with it gives the same weights. docs/training.md ("Inside the
trainer") explains it, docs/speed.md has the measurements.
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

_local = threading.local()


def active() -> "DeferredKernelGradients | None":
    """The recorder of the `recording` block this thread is in, if any."""
    return getattr(_local, "recorder", None)


@contextlib.contextmanager
def recording(recorder: "DeferredKernelGradients | None"):
    """Make `recorder` the active one in this thread (None: record nothing)."""
    previous = active()
    _local.recorder = recorder
    try:
        yield recorder
    finally:
        _local.recorder = previous


class DeferredKernelGradients:
    """Records the uses of deferred kernels among `variables` (those the update trains)
    during the forward pass of one update, on `tape`; after the tape, `gradients` completes
    their gradients."""

    def __init__(self, variables, tape):
        self._trained = {_key(v) for v in variables}
        self._tape = tape
        self._calls = {}      # variable ref -> (variable, [(x, y), ...]) in call order
        self._penalties = {}  # variable ref -> sum(W ** 2), the weight penalty's term
        self._casts = {}      # (variable ref, dtype) -> the kernel in that dtype, gradient stopped

    def matmul(self, x, kernel):
        """x @ kernel (cast to x's dtype); with the gradient stopped at the kernel if this
        update trains it, and one cast of the kernel per dtype for all calls (mixed precision:
        one bfloat16 copy instead of one per call, the same values)."""
        if _key(kernel) not in self._trained:
            return tf.matmul(x, tf.cast(kernel, x.dtype))
        cast_key = (_key(kernel), x.dtype)
        if cast_key not in self._casts:
            self._casts[cast_key] = tf.cast(tf.stop_gradient(kernel.value), x.dtype)
        y = tf.matmul(x, self._casts[cast_key])
        self._tape.watch(y)  # its gradient is needed even where x's is not
        self._calls.setdefault(_key(kernel), (kernel, []))[1].append((x, y))
        return y

    def sum_of_squares(self, variable):
        """sum(variable ** 2), the weight penalty's term; for a deferred kernel with the
        gradient stopped (its term is formed by `gradients`)."""
        key = _key(variable)
        if key not in self._calls:
            return tf.reduce_sum(tf.square(variable))
        total = tf.reduce_sum(tf.square(tf.stop_gradient(variable.value)))
        self._tape.watch(total)
        self._penalties[key] = total
        return total

    def sources(self) -> list:
        """The tensors whose gradients `gradients` needs, to append to the tape's sources."""
        out = []
        for key, (_, calls) in self._calls.items():
            out += [y for _, y in calls]
            if key in self._penalties:
                out.append(self._penalties[key])
        return out

    def defers(self, variable) -> bool:
        """Whether `gradients` / `makers` form this variable's gradient."""
        return _key(variable) in self._calls

    def makers(self, source_grads) -> list:
        """[(kernel, make)] in recording order: make(after) forms the kernel's gradient,
        penalty term 2c * W (c: the gradient of sum(W ** 2)) then x_k^T dy_k for each call in
        forward order, each term created after the partial sum before it and the first after
        the ops `after`. `source_grads`: the tape's gradients of `sources()`."""
        source_grads = list(source_grads)
        out = []
        for key, (kernel, calls) in self._calls.items():
            dys = [source_grads.pop(0) for _ in calls]
            terms = []
            if key in self._penalties:
                c = source_grads.pop(0)
                terms.append(lambda c=c, w=kernel.value: (2.0 * c) * w)
            for (x, _), dy in zip(calls, dys):
                terms.append(lambda x=x, dy=dy, w=kernel.value: tf.cast(
                    tf.raw_ops.MatMul(a=x, b=dy, transpose_a=True, grad_b=True), w.dtype))
            out.append((kernel, lambda after, terms=terms: _sum_in_order(terms, after)))
        return out

    def gradients(self, variables, grads, source_grads) -> list:
        """`grads` (the tape's, one per variable) with each deferred kernel's gradient put in,
        formed after the whole backward pass (all of `source_grads`) and one kernel after
        the other."""
        after, done = list(source_grads), {}
        for kernel, make in self.makers(source_grads):
            done[_key(kernel)] = make(after)
            after = [done[_key(kernel)]]
        out = []
        for variable, grad in zip(variables, grads):
            if self.defers(variable):
                if grad is not None:
                    raise ValueError(f"{variable.path}: a deferred kernel got a gradient "
                                     f"from the tape too")
                grad = done[_key(variable)]
            out.append(grad)
        return out


def _key(variable):
    """A dictionary key for a Keras variable (or the tf.Variable it wraps)."""
    return getattr(variable, "value", variable).ref()


def _sum_in_order(terms, after):
    """((t0 + t1) + t2) + ...: each term created after `after` and the partial sum before it,
    so at most two of them exist at once."""
    total = None
    for term in terms:
        with tf.control_dependencies(after if total is None else [total]):
            value = term()
        total = value if total is None else total + value
    return total
