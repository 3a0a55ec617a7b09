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


def sum_of_squares(variable):
    """sum(variable ** 2), a weight penalty's term: through the active recorder where it
    defers this variable's gradient."""
    recorder = active()
    if recorder is not None and recorder.defers(variable):
        return recorder.penalty(variable)
    return tf.reduce_sum(tf.square(variable))


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
        key = _key(kernel)
        if key not in self._trained:
            return tf.matmul(x, tf.cast(kernel, x.dtype))
        if (key, x.dtype) not in self._casts:
            self._casts[key, x.dtype] = tf.cast(tf.stop_gradient(kernel.value), x.dtype)
        y = tf.matmul(x, self._casts[key, x.dtype])
        self._tape.watch(y)  # its gradient is needed even where x's is not
        self._calls.setdefault(key, (kernel, []))[1].append((x, y))
        return y

    def penalty(self, kernel):
        """sum(kernel ** 2) for a deferred kernel, with the gradient stopped (its term is
        formed by `makers`)."""
        total = tf.reduce_sum(tf.square(tf.stop_gradient(kernel.value)))
        self._tape.watch(total)
        self._penalties[_key(kernel)] = total
        return total

    def sources(self) -> list:
        """The tensors whose gradients `makers` needs, to append to the tape's sources: each
        kernel's call outputs, then its penalty term."""
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
        source_grads = iter(source_grads)  # in the order of `sources()`
        out = []
        for key, (kernel, calls) in self._calls.items():
            dys = [next(source_grads) for _ in calls]
            terms = []
            if key in self._penalties:
                c = next(source_grads)
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
        self.others(variables, grads)  # the check
        after, done = list(source_grads), {}
        for kernel, make in self.makers(source_grads):
            done[_key(kernel)] = make(after)
            after = [done[_key(kernel)]]
        return [done[_key(v)] if self.defers(v) else g for v, g in zip(variables, grads)]

    def others(self, variables, grads) -> list:
        """[(grad, variable)] of the variables whose gradient the tape gives; a deferred
        kernel must have none from the tape (every use of it goes through the recorder)."""
        for variable, grad in zip(variables, grads):
            if self.defers(variable) and grad is not None:
                raise ValueError(f"{variable.path}: a deferred kernel got a gradient from "
                                 f"the tape too")
        return [(g, v) for g, v in zip(grads, variables) if not self.defers(v)]


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
