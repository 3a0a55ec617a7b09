"""The building blocks of U-GAT-IT as Keras layers that own their weights.

Every layer carries the name its weights have in the TF1 checkpoint (`tf1_scope`) and, for the
PyTorch variant, in the PyTorch state_dict (`torch_prefix`); `checkpoint_entries()` lists them,
which is what the name maps and converters are built from.

Conventions: NHWC float tensors, HWIO convolution kernels, [in, out] dense kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

EPS = 1e-5
WEIGHT_STD = 0.02
L2_SCALE = 1e-4  # tf.contrib.layers.l2_regularizer(1e-4): 1e-4 * sum(w**2) / 2


def weight_init():
    return keras.initializers.RandomNormal(mean=0.0, stddev=WEIGHT_STD)


class ClipRho(keras.constraints.Constraint):
    """Keep rho in [0, 1]; Keras optimizers apply it after every update."""

    def __call__(self, w):
        return tf.clip_by_value(w, 0.0, 1.0)


@dataclass(frozen=True)
class Entry:
    """One variable as it appears in an original checkpoint.

    layout says how the original stores it: 'hwio' / 'io' / 'vector' (same as ours),
    'u_row' (TF1 SN u, [1, out]), 'oihw' (torch conv weight), 'oi' (torch dense weight),
    'oi_chw' (torch dense weight whose input is a (c, h, w) flatten; `spatial` = (h, w, c)),
    'c111' (torch [1, C, 1, 1] parameter), 'flat' (torch SN u/v vectors)."""

    variable: object
    layout: str
    spatial: tuple | None = None


def wide(x):
    """Half-precision tensors (mixed precision) go up to float32 for statistics and losses;
    float32 and float64 stay as they are."""
    if x.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(x, tf.float32)
    return x


def _l2_normalize(x):
    return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x)), 1e-12))


def _torch_normalize(x):
    return x / tf.maximum(tf.norm(x), 1e-12)


class SpectralNorm:
    """Spectral normalisation of one kernel, in the TF1 form (`sn='tf1'`) or PyTorch's
    (`sn='torch'`). The raw kernel stays the trainable variable; W / sigma is used, with the
    gradient flowing through sigma while u and v are constants (stop-gradient)."""

    def __init__(self, layer, kernel, mode):
        self.mode = mode
        self.kernel = kernel
        out = kernel.shape[-1]
        fan_in = 1
        for d in kernel.shape[:-1]:
            fan_in *= d
        if mode == "tf1":
            self.u = layer.add_weight(name="u", shape=(1, out), trainable=False,
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0))
            self.v = None
        elif mode == "torch":
            self.u = layer.add_weight(name="u", shape=(out,), trainable=False,
                                      initializer=_UnitNormal())
            self.v = layer.add_weight(name="v", shape=(fan_in,), trainable=False,
                                      initializer=_UnitNormal())
        else:
            raise ValueError(f"unknown spectral norm mode {mode!r}")
        # Attributes of the layer, so that tf.train.Checkpoint and SavedModel track them.
        layer.sn_u = self.u
        if self.v is not None:
            layer.sn_v = self.v

    def _torch_matrix(self, w):
        # torch's weight_mat: [out, in * kh * kw] in (in, kh, kw) order
        rank = len(w.shape)
        if rank == 4:
            w = tf.transpose(w, [3, 2, 0, 1])
        else:
            w = tf.transpose(w)
        return tf.reshape(w, [w.shape[0], -1])

    def normalized(self, training):
        w = self.kernel
        if self.mode == "tf1":
            w_mat = tf.reshape(w, [-1, w.shape[-1]])
            u = tf.convert_to_tensor(self.u)
            v_hat = tf.stop_gradient(_l2_normalize(tf.matmul(u, w_mat, transpose_b=True)))
            u_hat = tf.stop_gradient(_l2_normalize(tf.matmul(v_hat, w_mat)))
            if training:
                self.u.assign(u_hat)
            sigma = tf.matmul(tf.matmul(v_hat, w_mat), u_hat, transpose_b=True)
            return w / tf.reshape(sigma, [])
        w_mat = self._torch_matrix(w)
        u = tf.convert_to_tensor(self.u)
        v = tf.convert_to_tensor(self.v)
        if training:
            v = tf.stop_gradient(_torch_normalize(tf.linalg.matvec(w_mat, u, transpose_a=True)))
            u = tf.stop_gradient(_torch_normalize(tf.linalg.matvec(w_mat, v)))
            self.u.assign(u)
            self.v.assign(v)
        sigma = tf.tensordot(u, tf.linalg.matvec(w_mat, v), 1)
        return w / sigma


class _UnitNormal(keras.initializers.Initializer):
    """A random unit vector (torch initialises SN's u and v this way)."""

    def __init__(self):
        self.normal = keras.initializers.RandomNormal(0.0, 1.0)

    def __call__(self, shape, dtype=None):
        x = self.normal(shape, dtype=dtype)
        return x / keras.ops.maximum(keras.ops.norm(x), 1e-12)


class CheckpointNamed(keras.layers.Layer):
    """A layer that knows the names of its weights in the original checkpoints."""

    def __init__(self, tf1_scope=None, torch_prefix=None, **kwargs):
        super().__init__(**kwargs)
        self.tf1_scope = tf1_scope
        self.torch_prefix = torch_prefix

    def checkpoint_entries(self, flavour: str) -> dict[str, Entry]:  # pragma: no cover
        raise NotImplementedError


def _join(*parts):
    return "/".join(p for p in parts if p)


class Conv(CheckpointNamed):
    """Padded convolution as in the original's `conv()`: explicit (before, after) padding
    (reflect or zero), a VALID convolution, optional spectral norm and bias."""

    def __init__(self, filters, kernel_size, stride=1, pads=(0, 0), pad_type="reflect",
                 use_bias=True, sn=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.pads = tuple(pads)
        self.pad_type = pad_type
        self.use_bias = use_bias
        self.sn_mode = sn

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, input_shape[-1], self.filters),
                                      initializer=weight_init())
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)
        self.sn = SpectralNorm(self, self.kernel, self.sn_mode) if self.sn_mode else None

    def call(self, x, training=False):
        before, after = self.pads
        if before or after:
            mode = "REFLECT" if self.pad_type == "reflect" else "CONSTANT"
            x = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]], mode=mode)
        kernel = self.sn.normalized(training) if self.sn else self.kernel
        x = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides=self.stride, padding="VALID")
        if self.bias is not None:
            x = tf.nn.bias_add(x, tf.cast(self.bias, x.dtype))
        return x

    def checkpoint_entries(self, flavour):
        if flavour == "tf1":
            out = {_join(self.tf1_scope, "kernel"): Entry(self.kernel, "hwio")}
            if self.bias is not None:
                out[_join(self.tf1_scope, "bias")] = Entry(self.bias, "vector")
            if self.sn is not None:
                out[_join(self.tf1_scope, "u")] = Entry(self.sn.u, "u_row")
            return out
        p = self.torch_prefix
        out = {}
        if self.sn is not None:
            out[f"{p}.weight_orig"] = Entry(self.kernel, "oihw")
            out[f"{p}.weight_u"] = Entry(self.sn.u, "flat")
            out[f"{p}.weight_v"] = Entry(self.sn.v, "flat")
        else:
            out[f"{p}.weight"] = Entry(self.kernel, "oihw")
        if self.bias is not None:
            out[f"{p}.bias"] = Entry(self.bias, "vector")
        return out


class Dense(CheckpointNamed):
    """Fully connected layer on a flattened input (NHWC flatten order, as TF1's)."""

    def __init__(self, units, use_bias=True, torch_chw=False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.torch_chw = torch_chw
        self.input_spatial = None

    def build(self, input_shape):
        fan_in = 1
        for d in input_shape[1:]:
            fan_in *= d
        if len(input_shape) == 4:
            self.input_spatial = tuple(input_shape[1:])
        self.kernel = self.add_weight(name="kernel", shape=(fan_in, self.units),
                                      initializer=weight_init())
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
                     if self.use_bias else None)

    def call(self, x):
        if len(x.shape) != 2:
            x = tf.reshape(x, [tf.shape(x)[0], -1])
        x = tf.matmul(x, tf.cast(self.kernel, x.dtype))
        if self.bias is not None:
            x = x + tf.cast(self.bias, x.dtype)
        return x

    def checkpoint_entries(self, flavour):
        if flavour == "tf1":
            out = {_join(self.tf1_scope, "kernel"): Entry(self.kernel, "io")}
            if self.bias is not None:
                out[_join(self.tf1_scope, "bias")] = Entry(self.bias, "vector")
            return out
        p = self.torch_prefix
        if self.input_spatial is not None:
            out = {f"{p}.weight": Entry(self.kernel, "oi_chw", self.input_spatial)}
        else:
            out = {f"{p}.weight": Entry(self.kernel, "oi")}
        if self.bias is not None:
            out[f"{p}.bias"] = Entry(self.bias, "vector")
        return out


def _moments(x, axes, unbiased):
    mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
    if unbiased:
        n = 1
        for a in axes:
            n *= x.shape[a]
        var = var * (n / (n - 1))
    return mean, var


def _instance_and_layer_norm(x, unbiased):
    """(x_in, x_ln): instance-normalised (over H, W) and layer-normalised (over H, W, C)."""
    x32 = wide(x)
    in_mean, in_var = _moments(x32, [1, 2], unbiased)
    ln_mean, ln_var = _moments(x32, [1, 2, 3], unbiased)
    x_in = (x32 - in_mean) * tf.math.rsqrt(in_var + EPS)
    x_ln = (x32 - ln_mean) * tf.math.rsqrt(ln_var + EPS)
    return x_in, x_ln


class InstanceNorm(CheckpointNamed):
    """Instance norm (biased variance, eps 1e-5); affine in TF1 (tf.contrib instance_norm),
    plain in PyTorch (nn.InstanceNorm2d)."""

    def __init__(self, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.affine = affine

    def build(self, input_shape):
        c = input_shape[-1]
        if self.affine:
            self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")

    def call(self, x):
        x32 = wide(x)
        mean, var = tf.nn.moments(x32, axes=[1, 2], keepdims=True)
        y = (x32 - mean) * tf.math.rsqrt(var + EPS)
        if self.affine:
            y = y * tf.cast(self.gamma, y.dtype) + tf.cast(self.beta, y.dtype)
        return tf.cast(y, x.dtype)

    def checkpoint_entries(self, flavour):
        if not self.affine:
            return {}
        return {_join(self.tf1_scope, "gamma"): Entry(self.gamma, "vector"),
                _join(self.tf1_scope, "beta"): Entry(self.beta, "vector")}


class AdaLIN(CheckpointNamed):
    """Adaptive Layer-Instance Normalization.

    out = (rho * x_in + (1 - rho) * x_ln) * gamma + beta, with gamma and beta [N, C] from the
    MLP and a learned per-channel rho kept in [0, 1]. TF1: rho starts at 1.0, biased moments,
    and with smoothing the forward pass uses clip(rho - 0.1, 0, 1). PyTorch: rho starts at 0.9,
    unbiased variance, no smoothing."""

    def __init__(self, smoothing=True, rho_init=1.0, unbiased=False, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing
        self.rho_init = rho_init
        self.unbiased = unbiased

    def build(self, x_shape, gamma_shape=None, beta_shape=None):
        self.rho = self.add_weight(name="rho", shape=(x_shape[-1],),
                                   initializer=keras.initializers.Constant(self.rho_init),
                                   constraint=ClipRho())

    def call(self, x, gamma, beta):
        x_in, x_ln = _instance_and_layer_norm(x, self.unbiased)
        rho = tf.cast(self.rho, x_in.dtype)
        if self.smoothing:
            rho = tf.clip_by_value(rho - 0.1, 0.0, 1.0)
        y = rho * x_in + (1.0 - rho) * x_ln
        gamma = tf.cast(gamma, y.dtype)[:, None, None, :]
        beta = tf.cast(beta, y.dtype)[:, None, None, :]
        return tf.cast(y * gamma + beta, x.dtype)

    def checkpoint_entries(self, flavour):
        if flavour == "tf1":
            return {_join(self.tf1_scope, "rho"): Entry(self.rho, "vector")}
        return {f"{self.torch_prefix}.rho": Entry(self.rho, "c111")}


class LIN(CheckpointNamed):
    """Layer-Instance Normalization with learned gamma (1), beta (0) and rho (0)."""

    def __init__(self, unbiased=False, **kwargs):
        super().__init__(**kwargs)
        self.unbiased = unbiased

    def build(self, input_shape):
        c = input_shape[-1]
        self.rho = self.add_weight(name="rho", shape=(c,), initializer="zeros",
                                   constraint=ClipRho())
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")

    def call(self, x):
        x_in, x_ln = _instance_and_layer_norm(x, self.unbiased)
        rho, gamma, beta = (tf.cast(v, x_in.dtype) for v in (self.rho, self.gamma, self.beta))
        y = rho * x_in + (1.0 - rho) * x_ln
        return tf.cast(y * gamma + beta, x.dtype)

    def checkpoint_entries(self, flavour):
        if flavour == "tf1":
            return {_join(self.tf1_scope, n): Entry(getattr(self, n), "vector")
                    for n in ("rho", "gamma", "beta")}
        return {f"{self.torch_prefix}.{n}": Entry(getattr(self, n), "c111")
                for n in ("rho", "gamma", "beta")}


class CAM(CheckpointNamed):
    """Class Activation Map attention.

    Global average and global max pooling each give a logit through a [C, 1] dense layer; the
    dense weights scale the feature map, and the two scaled maps are concatenated.
    TF1: ONE shared dense `CAM_logit` with bias; the scaling weights are kernel + bias (with
    spectral norm on the kernel in the discriminator). PyTorch: separate `gap_fc` and `gmp_fc`
    without bias; in the discriminator the logits use the normalised weights but the map is
    scaled by the raw ones."""

    def __init__(self, variant="tf1", sn=None, **kwargs):
        super().__init__(**kwargs)
        self.variant = variant
        self.sn_mode = sn

    def build(self, input_shape):
        c = input_shape[-1]
        if self.variant == "tf1":
            self.kernel = self.add_weight(name="kernel", shape=(c, 1), initializer=weight_init())
            self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")
            self.sn = SpectralNorm(self, self.kernel, self.sn_mode) if self.sn_mode else None
        else:
            self.gap_layer = _BareKernel(c, self.sn_mode, name="gap_fc")
            self.gmp_layer = _BareKernel(c, self.sn_mode, name="gmp_fc")
            self.gap_layer.build(input_shape)
            self.gmp_layer.build(input_shape)

    def call(self, x, training=False):
        x32 = wide(x)
        gap = tf.reduce_mean(x32, axis=[1, 2])
        gmp = tf.reduce_max(x32, axis=[1, 2])
        if self.variant == "tf1":
            kernel = self.sn.normalized(training) if self.sn else self.kernel
            weights = kernel[:, 0] + self.bias
            logit = tf.concat([tf.matmul(gap, kernel), tf.matmul(gmp, kernel)], -1) + self.bias
            scaled = x32 * weights
            out = tf.concat([scaled, scaled], axis=-1)
        else:
            gap_k = self.gap_layer.effective(training)
            gmp_k = self.gmp_layer.effective(training)
            logit = tf.concat([tf.matmul(gap, gap_k), tf.matmul(gmp, gmp_k)], -1)
            out = tf.concat([x32 * self.gap_layer.kernel[:, 0], x32 * self.gmp_layer.kernel[:, 0]],
                            axis=-1)
        return tf.cast(out, x.dtype), logit

    def checkpoint_entries(self, flavour):
        if flavour == "tf1":
            out = {_join(self.tf1_scope, "kernel"): Entry(self.kernel, "io"),
                   _join(self.tf1_scope, "bias"): Entry(self.bias, "vector")}
            if self.sn is not None:
                out[_join(self.tf1_scope, "u")] = Entry(self.sn.u, "u_row")
            return out
        out = {}
        for layer, key in ((self.gap_layer, "gap_fc"), (self.gmp_layer, "gmp_fc")):
            prefix = _dot(self.torch_prefix, key)
            if layer.sn is not None:
                out[f"{prefix}.weight_orig"] = Entry(layer.kernel, "oi")
                out[f"{prefix}.weight_u"] = Entry(layer.sn.u, "flat")
                out[f"{prefix}.weight_v"] = Entry(layer.sn.v, "flat")
            else:
                out[f"{prefix}.weight"] = Entry(layer.kernel, "oi")
        return out


def _dot(prefix, key):
    return f"{prefix}.{key}" if prefix else key


class _BareKernel(keras.layers.Layer):
    """A [C, 1] dense kernel without bias (PyTorch's gap_fc / gmp_fc)."""

    def __init__(self, channels, sn_mode, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.sn_mode = sn_mode

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.channels, 1),
                                      initializer=weight_init())
        self.sn = SpectralNorm(self, self.kernel, self.sn_mode) if self.sn_mode else None

    def effective(self, training):
        return self.sn.normalized(training) if self.sn else self.kernel


def nearest_upsample_2x(x):
    """Nearest-neighbour x2 upsampling (each pixel repeated 2x2), as TF1's
    resize_nearest_neighbor and torch's Upsample(scale_factor=2, mode='nearest')."""
    dynamic = tf.shape(x)
    n, h, w, c = [x.shape[i] if x.shape[i] is not None else dynamic[i] for i in range(4)]
    x = x[:, :, None, :, None, :]
    x = tf.broadcast_to(x, [n, h, 2, w, 2, c])
    return tf.reshape(x, [n, h * 2, w * 2, c])
