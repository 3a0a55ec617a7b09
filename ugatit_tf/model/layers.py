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

from ugatit_tf.model import deferred_gradients

EPS = 1e-5
WEIGHT_STD = 0.02
L2_SCALE = 1e-4  # tf.contrib.layers.l2_regularizer(1e-4): 1e-4 * sum(w**2) / 2


KERNEL_INITS = ("random", "zeros")


def weight_init(kind: str = "random"):
    """The original's kernel initializer, N(0, 0.02). kind "zeros" draws no random numbers,
    for a model whose weights are restored right after building: drawing the full model's
    1 GB MLP kernel at random holds about 3 GB of memory at its peak."""
    if kind not in KERNEL_INITS:
        raise ValueError(f"kernel_init must be one of {KERNEL_INITS}, not {kind!r}")
    return keras.initializers.RandomNormal(mean=0.0, stddev=WEIGHT_STD) if kind == "random" \
        else "zeros"


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


def leaky_relu(x, alpha=0.2):
    """tf.nn.leaky_relu whose gradient reads the activation's output instead of its input:
    the same values (for alpha > 0, y > 0 exactly where x > 0, so LeakyReluGrad gives the same
    bits), but the convolution's pre-activation output then has one consumer. With the
    input-reading gradient, Grappler's remapper tries to fuse convolution + bias + LeakyReLU,
    meets the gradient's second use of the bias output and abandons the rewrite part-way
    ("remapper failed: ... fanout ... LeakyReluGrad"), in an order that changes from process
    to process: which discriminator layers ran fused differed between runs of the same
    seeded training, and so did the weights' last bits (docs/training.md)."""
    @tf.custom_gradient
    def activation(x):
        y = tf.nn.leaky_relu(x, alpha)

        def grad(dy):
            return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=alpha)
        return y, grad
    return activation(x)


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
        # u and v are read in float32 (no autocast under mixed precision) and assigned in
        # every replica of a distributed step with the same value (they depend only on the
        # kernel and the previous u, which are in sync): ONLY_FIRST_REPLICA keeps the
        # copies identical without any cross-replica communication.
        sync = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        if mode == "tf1":
            self.u = layer.add_weight(name="u", shape=(1, out),
                                      initializer=keras.initializers.RandomNormal(0.0, 1.0),
                                      **sync)
            self.v = None
        elif mode == "torch":
            self.u = layer.add_weight(name="u", shape=(out,), initializer=_UnitNormal(), **sync)
            self.v = layer.add_weight(name="v", shape=(fan_in,), initializer=_UnitNormal(),
                                      **sync)
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
        """The normalised kernel, in the kernel's (float32) dtype: the power iteration never
        runs in half precision."""
        w = tf.convert_to_tensor(self.kernel)
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
    """A layer that knows the names of its weights in the original checkpoints.
    `kernel_init` ("random" or "zeros", see `weight_init`) initialises its kernels."""

    def __init__(self, tf1_scope=None, torch_prefix=None, kernel_init="random", **kwargs):
        super().__init__(**kwargs)
        self.tf1_scope = tf1_scope
        self.torch_prefix = torch_prefix
        self.kernel_init = kernel_init

    def checkpoint_entries(self, flavour: str) -> dict[str, Entry]:  # pragma: no cover
        raise NotImplementedError

    def _kernel_and_bias(self, flavour: str, tf1_kernel: Entry, torch: dict) -> dict:
        """The entries of a kernel and its bias (if any): TF1 `scope/kernel` and `scope/bias`;
        torch `prefix.NAME` for each NAME of `torch` (the kernel's own entries), then
        `prefix.bias`."""
        if flavour == "tf1":
            out = {_join(self.tf1_scope, "kernel"): tf1_kernel}
            bias = _join(self.tf1_scope, "bias")
        else:
            out = {f"{self.torch_prefix}.{name}": entry for name, entry in torch.items()}
            bias = f"{self.torch_prefix}.bias"
        if self.bias is not None:
            out[bias] = Entry(self.bias, "vector")
        return out


def _join(*parts):
    return "/".join(p for p in parts if p)


class Conv(CheckpointNamed):
    """Padded convolution as in the original's `conv()`: explicit (before, after) padding
    (reflect or zero), a VALID convolution, optional spectral norm and bias.

    Two exact rewrites of the original's layer sequences, for speed:
    - `cam_halves=True` (the conv_1x1 after CAM): the original convolves the concatenation
      [x * w_gap, x * w_gmp] (2C channels); `call(x, scales=(w_gap, w_gmp))` takes x itself
      and folds the scales into ONE C-channel kernel, w_gap * K[:C] + w_gmp * K[C:] (half the
      FLOPs; the kernel variable keeps the original's [1, 1, 2C, out] shape).
    - `call(x, upsample=True)` computes conv3x3(reflect_pad1(nearest_upsample_2x(x))) without
      materialising the upsampled map (see `upsample_conv3x3`): 16 instead of 36 multiply-adds
      per input pixel and channel pair.
    Weights are float32 variables read without Keras autocast; `call` casts them to the
    input's dtype (the compute dtype under mixed precision); spectral norm runs in float32."""

    def __init__(self, filters, kernel_size, stride=1, pads=(0, 0), pad_type="reflect",
                 use_bias=True, sn=None, cam_halves=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.pads = tuple(pads)
        self.pad_type = pad_type
        self.use_bias = use_bias
        self.sn_mode = sn
        self.cam_halves = cam_halves

    def build(self, input_shape, **_):
        k = self.kernel_size
        channels = input_shape[-1] * (2 if self.cam_halves else 1)
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels, self.filters),
                                      initializer=weight_init(self.kernel_init), autocast=False)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros",
                                     autocast=False)
                     if self.use_bias else None)
        self.sn = SpectralNorm(self, self.kernel, self.sn_mode) if self.sn_mode else None

    def call(self, x, training=False, scales=None, upsample=False, kernels="reference"):
        kernel, bias = self._weights(training, kernels)
        if self.cam_halves:
            if scales is None:
                raise ValueError(f"{self.name}: a cam_halves conv needs scales=(w_gap, w_gmp)")
            kernel = fold_cam_halves(kernel, *scales)
        if upsample:
            if (self.kernel_size, self.stride, self.pads, self.pad_type) != \
                    (3, 1, (1, 1), "reflect"):
                raise ValueError(f"{self.name}: upsample=True needs a 3x3 stride-1 reflect-pad-1 "
                                 f"convolution")
            x = upsample_conv3x3(x, tf.cast(kernel, x.dtype), kernels)
        else:
            before, after = self.pads
            if (before or after) and self.pad_type == "reflect":
                x = reflect_pad(x, before, after, kernels)
            elif before or after:
                x = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
            x = convolve(x, tf.cast(kernel, x.dtype), self.stride, kernels)
        if bias is not None:
            x = tf.nn.bias_add(x, tf.cast(bias, x.dtype))
        return x

    def _weights(self, training, kernels):
        """(kernel, bias or None): the variables, spectral-normalised if asked, or with the
        "frozen" kernels (see KERNELS) their current values as constants."""
        if kernels == "frozen":
            if self.sn is not None or training:
                raise ValueError(f"{self.name}: frozen kernels are for generators' forward "
                                 f"passes (no spectral norm, training=False)")
            return _frozen(self.kernel), self.bias if self.bias is None else _frozen(self.bias)
        kernel = self.sn.normalized(training) if self.sn else self.kernel
        return kernel, self.bias

    def checkpoint_entries(self, flavour):
        if self.sn is None:
            torch = {"weight": Entry(self.kernel, "oihw")}
        else:  # torch.nn.utils.spectral_norm keeps the raw kernel as weight_orig, and u and v
            torch = {"weight_orig": Entry(self.kernel, "oihw"),
                     "weight_u": Entry(self.sn.u, "flat"), "weight_v": Entry(self.sn.v, "flat")}
        out = self._kernel_and_bias(flavour, Entry(self.kernel, "hwio"), torch)
        if flavour == "tf1" and self.sn is not None:
            out[_join(self.tf1_scope, "u")] = Entry(self.sn.u, "u_row")
        return out


class Dense(CheckpointNamed):
    """Fully connected layer on a flattened input (NHWC flatten order, as TF1's).
    `defer_gradient`: inside deferred_gradients.recording, the kernel's gradient is left to the
    recorder (the full model's 1 GiB MLP kernel; see model/deferred_gradients.py)."""

    def __init__(self, units, use_bias=True, torch_chw=False, defer_gradient=False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.torch_chw = torch_chw
        self.defer_gradient = defer_gradient
        self.input_spatial = None

    def build(self, input_shape):
        fan_in = 1
        for d in input_shape[1:]:
            fan_in *= d
        if len(input_shape) == 4:
            self.input_spatial = tuple(input_shape[1:])
        self.kernel = self.add_weight(name="kernel", shape=(fan_in, self.units),
                                      initializer=weight_init(self.kernel_init), autocast=False)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer="zeros",
                                     autocast=False)
                     if self.use_bias else None)

    def call(self, x):
        if len(x.shape) != 2:
            x = tf.reshape(x, [tf.shape(x)[0], -1])
        recorder = deferred_gradients.active() if self.defer_gradient else None
        if recorder is not None:
            x = recorder.matmul(x, self.kernel)
        else:
            x = tf.matmul(x, tf.cast(self.kernel, x.dtype))
        if self.bias is not None:
            x = x + tf.cast(self.bias, x.dtype)
        return x

    def checkpoint_entries(self, flavour):
        if self.input_spatial is not None:
            torch = {"weight": Entry(self.kernel, "oi_chw", self.input_spatial)}
        else:
            torch = {"weight": Entry(self.kernel, "oi")}
        return self._kernel_and_bias(flavour, Entry(self.kernel, "io"), torch)


def _instance_moments(x32):
    """Biased per-sample, per-channel mean and variance over H, W: [N, 1, 1, C] each."""
    return tf.nn.moments(x32, axes=[1, 2], keepdims=True)


def _layer_moments(in_mean, in_var):
    """Biased per-sample moments over H, W, C from the instance moments (law of total
    variance: no second pass over the feature map, no cancellation): [N, 1, 1, 1] each."""
    ln_mean = tf.reduce_mean(in_mean, axis=3, keepdims=True)
    ln_var = tf.reduce_mean(in_var + tf.square(in_mean - ln_mean), axis=3, keepdims=True)
    return ln_mean, ln_var


def _spatial_count(x, channels=False):
    n = x.shape[1] * x.shape[2]
    return n * x.shape[3] if channels else n


def _lin_coefficients(in_mean, in_var, rho, unbiased, n_in, n_ln):
    """(scale, shift) [N, 1, 1, C] with rho * IN(x) + (1 - rho) * LN(x) == x * scale + shift,
    from x's biased instance moments; n_in = H * W, n_ln = H * W * C.

    IN(x) = (x - m_in) * r_in and LN(x) = (x - m_ln) * r_ln are both affine in x with
    per-sample, per-channel coefficients, so their mix is one multiply-add per element
    instead of two normalised copies of the feature map."""
    ln_mean, ln_var = _layer_moments(in_mean, in_var)
    if unbiased:  # torch: N-1 variance for both statistics
        in_var = in_var * (n_in / (n_in - 1))
        ln_var = ln_var * (n_ln / (n_ln - 1))
    r_in = tf.math.rsqrt(in_var + EPS)
    r_ln = tf.math.rsqrt(ln_var + EPS)
    scale = rho * r_in + (1.0 - rho) * r_ln
    shift = -(rho * in_mean * r_in + (1.0 - rho) * ln_mean * r_ln)
    return scale, shift


def _layer_instance_affine(x32, rho, unbiased):
    """_lin_coefficients from x's own moments (the "reference" kernels)."""
    in_mean, in_var = _instance_moments(x32)
    return _lin_coefficients(in_mean, in_var, rho, unbiased, _spatial_count(x32),
                             _spatial_count(x32, channels=True))


def _apply_affine(x, x32, scale, shift, relu=False):
    """x * scale + shift in float32 (statistics and mixing stay float32 under mixed
    precision), returned in x's dtype; with relu, ReLU after the cast (as the original)."""
    y = tf.cast(x32 * scale + shift, x.dtype)
    return tf.nn.relu(y) if relu else y


# ---------------------------------------------------------------------------
# "inference" kernels: the same normalisations through oneDNN's batch-norm kernel
# ---------------------------------------------------------------------------

# How the normalisations and reflect pads run (Generator.call(kernels=...)): "reference" as
# the formulas written with TensorFlow ops (training, gradients, TFLite); "inference" through
# FusedBatchNormV3 (oneDNN: statistics in float32, one pass to apply them, ReLU fused by
# Grappler's remapper, no casts around it under mixed precision) and reflect padding by
# one gather. Forward only: the statistics fed to the kernel get no gradient.
# "frozen" is "inference" with the convolutions' kernels and biases read once, when the
# function is traced, and put into its graph as constants: oneDNN then keeps each kernel in
# its own blocked layout between calls instead of reordering it on every call, and under
# mixed precision the casts of the weights are folded. The same bits as "inference"; for
# functions traced after the weights are final (a later change of the variables does not
# reach them: see `live_kernels`).
KERNELS = ("frozen", "inference", "reference")
# The kernels of TFLite files (export/tflite.py; not a --kernels choice): "reference" with
# each reflect pad as a concatenation of one-pixel slices, the same values. TFLite's XNNPACK
# delegate runs slices and concatenations but not MirrorPad, and every op it does not run
# cuts the delegated graph: 23 partitions with MirrorPad, 5 with slices (docs/speed.md).
TFLITE_KERNELS = "tflite"
# The kernels of training (--train_kernels): "reference", or "fast": the same formulas through
# other ops, so with other float rounding (not the original's float32 bits, hence not the
# default): instance norms through FusedBatchNormV3 in training mode (its own statistics and
# its fused gradient; LIN and AdaLIN, whose statistics need their own gradient, as in
# "reference"), and convolutions with a kernel much larger than their patches
# (`_patches_pay`: the global discriminator's last two 4x4 layers) as one matrix product of
# patches. docs/speed.md has what each gave.
TRAIN_KERNELS = ("reference", "fast")


def check_kernels(kernels):
    if kernels not in KERNELS + (TFLITE_KERNELS, "fast"):
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")


def check_train_kernels(kernels):
    if kernels not in TRAIN_KERNELS:
        raise ValueError(f"training kernels must be one of {TRAIN_KERNELS}, not {kernels!r}")


def _forward_only(kernels):
    """Whether `kernels` are the forward-only sets ("inference", "frozen"): LIN and AdaLIN
    through FusedBatchNormV3 with statistics fed in (no gradient for them) and pads by
    gathers instead of MirrorPad."""
    return kernels in ("inference", "frozen")


def _fused_instance_norms(kernels):
    """Whether `kernels` run instance norms through FusedBatchNormV3: the forward-only sets
    and training's "fast" (the kernel's training mode computes the statistics and has a
    gradient)."""
    return _forward_only(kernels) or kernels == "fast"


def choose_kernels(flag, batched):
    """The kernels for a --kernels value (KERNELS or "auto"). "auto" is "frozen" where a phase
    translates one image per call (test phase, photos) and "inference" where calls are batched
    (serve, the SavedModel, evaluation): there the frozen weights bought no throughput under
    load (2.48 against 2.46 requests/s, light 256 px, 8 clients) and held about 1 GB more."""
    if flag == "auto":
        return "inference" if batched else "frozen"
    check_kernels(flag)
    return flag


def live_kernels(kernels):
    """`kernels` for a function that must follow later changes of the weights (evaluation
    during training): "frozen" becomes "inference", the same computation on the variables."""
    check_kernels(kernels)
    return "inference" if kernels == "frozen" else kernels


def _frozen(variable):
    """The variable's current value as a constant of the graph being traced."""
    with tf.init_scope():  # read eagerly, outside the function being traced
        value = variable.numpy()
    return tf.constant(value)


def _instances_as_channels(x):
    """[N, H, W, C] -> [1, H, W, N * C]: every (sample, channel) becomes one channel of a
    single image, so a batch norm over batch and space is an instance norm. Free for N = 1
    (the transpose only moves an axis of size 1, which TensorFlow does as a reshape). H and W
    are static (the model's size); N may be dynamic."""
    return tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, x.shape[1], x.shape[2], -1])


def _instances_back(y, x):
    """The inverse of _instances_as_channels, to x's shape."""
    return tf.transpose(tf.reshape(y, [x.shape[1], x.shape[2], -1, x.shape[3]]), [2, 0, 1, 3])


def _batch_norm(xi, scale, offset, mean=None, variance=None, epsilon=EPS):
    """FusedBatchNormV3 over [1, H, W, K] with float32 [K] scale and offset: with the
    kernel's own (training-mode) statistics when mean is None, otherwise
    scale * (x - mean) / sqrt(variance + epsilon) + offset. -> (y, mean, unbiased var)."""
    empty = tf.constant([], tf.float32)
    own = mean is None
    y, m, v, *_ = tf.raw_ops.FusedBatchNormV3(
        x=xi, scale=scale, offset=offset, mean=empty if own else mean,
        variance=empty if own else variance, epsilon=epsilon, is_training=own,
        data_format="NHWC")
    return y, m, v


def _fused_instance_norm(x, gamma, beta, relu):
    """relu?(gamma * IN(x) + beta) with gamma, beta float32 [C] (one pass of FusedBatchNorm)."""
    n = tf.shape(x)[:1]
    y = _batch_norm(_instances_as_channels(x), tf.tile(gamma, n), tf.tile(beta, n))[0]
    return _instances_back(tf.nn.relu(y) if relu else y, x)


def _fused_layer_instance_norm(x, rho, gamma, beta, unbiased, relu):
    """relu?(LIN/AdaLIN) with the "inference" kernels: FusedBatchNorm's statistics pass (its
    variance output is the unbiased one), the coefficients in float32 as the reference
    computes them, then one scale-and-shift pass (mean 0, variance 1, epsilon 0). gamma and
    beta broadcast to [N, 1, 1, C] (float32)."""
    xi = _instances_as_channels(x)
    k = tf.shape(xi)[3:]
    n_in, n_ln = _spatial_count(x), _spatial_count(x, channels=True)
    _, mean, var = _batch_norm(xi, tf.ones(k), tf.zeros(k))
    stats_shape = [-1, 1, 1, x.shape[3]]
    in_mean = tf.reshape(mean, stats_shape)
    in_var = tf.reshape(var * ((n_in - 1) / n_in), stats_shape)
    scale, shift = _lin_coefficients(in_mean, in_var, rho, unbiased, n_in, n_ln)  # [N,1,1,C]
    y = _batch_norm(xi, tf.reshape(scale * gamma, [-1]), tf.reshape(shift * gamma + beta, [-1]),
                    tf.zeros(k), tf.ones(k), epsilon=0.0)[0]
    return _instances_back(tf.nn.relu(y) if relu else y, x)


def _layer_instance_norm(x, x32, rho, gamma, beta, unbiased, relu, kernels):
    """relu?((rho * IN(x) + (1 - rho) * LN(x)) * gamma + beta) in x's dtype, what LIN and
    AdaLIN share (x32: x in float32 or wider; rho [C], gamma and beta [C] or [N, 1, 1, C],
    in x32's dtype): the fused forward-only kernel, or the affine form of `_apply_affine`."""
    if _forward_only(kernels):
        return _fused_layer_instance_norm(x, rho, gamma, beta, unbiased, relu)
    scale, shift = _layer_instance_affine(x32, rho, unbiased)
    return _apply_affine(x, x32, scale * gamma, shift * gamma + beta, relu)


def reflect_pad(x, before, after, kernels="reference"):
    """Reflect padding of H and W (as np.pad mode 'reflect'): tf.pad(REFLECT) for the
    "reference" and "fast" kernels; for "inference" and "frozen", one gather of pixels (C
    values each) over the flattened H * W axis (the same values; plain copies in one pass,
    faster than MirrorPad or a gather of rows then of columns here; H and W static); for the
    "tflite" kernels, by concatenating one-pixel slices (`slice_pad`)."""
    if kernels == TFLITE_KERNELS:
        return slice_pad(slice_pad(x, 1, before, after), 2, before, after)
    if _forward_only(kernels):
        return gather_pixels(x, reflect_indices(x.shape[1], before, after),
                             reflect_indices(x.shape[2], before, after))
    return tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]], mode="REFLECT")


# Where "fast" training kernels compute a convolution as a matrix product of patches: kernels
# with at least this many times as many output channels as output pixels (see _patches_pay).
PATCHES_RATIO = 16


def convolve(x, kernel, stride, kernels="reference"):
    """VALID convolution of x [N, H, W, C] with kernel [k, k, C, O] (x's dtype); with the
    "fast" training kernels, as a product of patches where that pays (`_patches_pay`)."""
    if kernels == "fast" and _patches_pay(x, kernel, stride):
        return patch_matmul_conv(x, kernel, stride)
    return tf.nn.conv2d(x, kernel, strides=stride, padding="VALID")


def _patches_pay(x, kernel, stride):
    """Whether a k x k convolution (k > 1, H and W static) has at least PATCHES_RATIO output
    channels per output pixel: its kernel then holds at least 16 times the numbers of one
    sample's patch matrix. On such layers (the global discriminator's last two, 4x4 or 8x8
    outputs) oneDNN's convolution reorders the whole kernel on every call and its weight
    gradient ran at 30-100 GFLOP/s; a matrix product reads the kernel as it is."""
    k, (h, w) = kernel.shape[0], x.shape[1:3]
    if k == 1 or h is None or w is None:
        return False
    pixels = ((h - k) // stride + 1) * ((w - k) // stride + 1)
    return kernel.shape[-1] >= PATCHES_RATIO * pixels


def patch_matmul_conv(x, kernel, stride):
    """The VALID convolution as [N * Ho * Wo, k * k * C] x [k * k * C, O]: the patch matrix
    is the k * k shifted windows of x side by side along channels, in the kernel's (row,
    column, channel) order. Stride-1 windows are Slices (gradient: one Pad each)."""
    k, c, o = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1

    def window(i, j):
        if stride == 1:
            return tf.slice(x, [0, i, j, 0], [-1, ho, wo, -1])
        return x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
    patches = tf.concat([window(i, j) for i in range(k) for j in range(k)], axis=-1)
    y = tf.matmul(tf.reshape(patches, [-1, k * k * c]), tf.reshape(kernel, [k * k * c, o]))
    return tf.reshape(y, [-1, ho, wo, o])


def slice_pad(x, axis, before, after):
    """Reflect padding of one axis (static length) as [x[before], ..., x[1], x, x[n-2], ...]:
    one-pixel slices and one concatenation."""
    n = x.shape[axis]
    index = reflect_indices(n, before, after)

    def pixel(i):  # a StridedSlice: XNNPACK takes it, not Slice (43 partitions instead of 5)
        return x[(slice(None),) * axis + (slice(i, i + 1),)]
    return tf.concat([pixel(i) for i in index[:before]] + [x]
                     + [pixel(i) for i in index[before + n:]], axis=axis)


def gather_pixels(x, rows, cols):
    """x [N, H, W, C] (H, W static) -> [N, len(rows), len(cols), C], pixel (i, j) taken from
    (rows[i], cols[j]): one gather over the flattened H * W axis."""
    h, w, c = x.shape[1:]
    y = tf.gather(tf.reshape(x, [-1, h * w, c]), [r * w + q for r in rows for q in cols], axis=1)
    return tf.reshape(y, [-1, len(rows), len(cols), c])


def reflect_indices(n, before, after):
    """The source index of every position of a reflect-padded axis of length n."""
    return (list(range(before, 0, -1)) + list(range(n))
            + list(range(n - 2, n - 2 - after, -1)))


def edge_indices(n):
    """The source index of every position of an axis of length n padded by 1 on each side
    by repeating its edge (tf.pad SYMMETRIC by 1)."""
    return [0] + list(range(n)) + [n - 1]


class InstanceNorm(CheckpointNamed):
    """Instance norm (biased variance, eps 1e-5); affine in TF1 (tf.contrib instance_norm),
    plain in PyTorch (nn.InstanceNorm2d). Computed as one multiply-add with per-channel
    scale = gamma / sqrt(var + eps) and shift = beta - mean * scale."""

    def __init__(self, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.affine = affine

    def build(self, input_shape):
        c = input_shape[-1]
        if self.affine:
            self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones",
                                         autocast=False)
            self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros",
                                        autocast=False)

    def call(self, x, relu=False, kernels="reference"):
        """relu?(IN(x)) in x's dtype; kernels: see KERNELS."""
        if _fused_instance_norms(kernels):
            c = x.shape[-1]
            gamma = tf.convert_to_tensor(self.gamma) if self.affine else tf.ones([c])
            beta = tf.convert_to_tensor(self.beta) if self.affine else tf.zeros([c])
            return _fused_instance_norm(x, gamma, beta, relu)
        x32 = wide(x)
        mean, var = _instance_moments(x32)
        scale = tf.math.rsqrt(var + EPS)
        if self.affine:
            scale = scale * tf.cast(self.gamma, x32.dtype)
            shift = tf.cast(self.beta, x32.dtype) - mean * scale
        else:
            shift = -mean * scale
        return _apply_affine(x, x32, scale, shift, relu)

    def checkpoint_entries(self, flavour):
        if not self.affine:
            return {}
        return {_join(self.tf1_scope, "gamma"): Entry(self.gamma, "vector"),
                _join(self.tf1_scope, "beta"): Entry(self.beta, "vector")}


# rho is assigned by the optimizer's constraint inside each replica of a distributed step,
# always with the same value: keep the first replica's (no communication needed).
_RHO_ARGS = dict(autocast=False, aggregation="only_first_replica")


class AdaLIN(CheckpointNamed):
    """Adaptive Layer-Instance Normalization.

    out = (rho * x_in + (1 - rho) * x_ln) * gamma + beta, with gamma and beta [N, C] from the
    MLP and a learned per-channel rho kept in [0, 1]. TF1: rho starts at 1.0, biased moments,
    and with smoothing the forward pass uses clip(rho - 0.1, 0, 1). PyTorch: rho starts at 0.9,
    unbiased variance, no smoothing. Statistics, mixing and the affine part are float32."""

    def __init__(self, smoothing=True, rho_init=1.0, unbiased=False, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing
        self.rho_init = rho_init
        self.unbiased = unbiased

    def build(self, x_shape, gamma_shape=None, beta_shape=None):
        self.rho = self.add_weight(name="rho", shape=(x_shape[-1],),
                                   initializer=keras.initializers.Constant(self.rho_init),
                                   constraint=ClipRho(), **_RHO_ARGS)

    def call(self, x, gamma, beta, relu=False, kernels="reference"):
        """relu?(AdaLIN(x)) in x's dtype; gamma, beta [N, C]; kernels: see KERNELS."""
        x32 = wide(x)
        rho = tf.cast(self.rho, x32.dtype)
        if self.smoothing:
            rho = tf.clip_by_value(rho - 0.1, 0.0, 1.0)
        gamma = tf.cast(gamma, x32.dtype)[:, None, None, :]
        beta = tf.cast(beta, x32.dtype)[:, None, None, :]
        return _layer_instance_norm(x, x32, rho, gamma, beta, self.unbiased, relu, kernels)

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
                                   constraint=ClipRho(), **_RHO_ARGS)
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones",
                                     autocast=False)
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros",
                                    autocast=False)

    def call(self, x, relu=False, kernels="reference"):
        """relu?(LIN(x)) in x's dtype; kernels: see KERNELS."""
        x32 = wide(x)
        rho, gamma, beta = (tf.cast(v, x32.dtype) for v in (self.rho, self.gamma, self.beta))
        return _layer_instance_norm(x, x32, rho, gamma, beta, self.unbiased, relu, kernels)

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
            self.kernel = self.add_weight(name="kernel", shape=(c, 1),
                                          initializer=weight_init(self.kernel_init),
                                          autocast=False)
            self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros",
                                        autocast=False)
            self.sn = SpectralNorm(self, self.kernel, self.sn_mode) if self.sn_mode else None
        else:
            self.gap_layer = _BareKernel(c, self.sn_mode, self.kernel_init, name="gap_fc")
            self.gmp_layer = _BareKernel(c, self.sn_mode, self.kernel_init, name="gmp_fc")
            self.gap_layer.build(input_shape)
            self.gmp_layer.build(input_shape)

    def call(self, x, training=False, scales_only=False):
        """(map, logit): map = [x * w_gap, x * w_gmp] (2C channels), logit [N, 2] float32.
        With scales_only=True, ((w_gap, w_gmp), logit) instead: the two float32 [C] scales
        without the map, for a `Conv(cam_halves=True)` that folds them into its kernel."""
        x32 = wide(x)
        gap = tf.reduce_mean(x32, axis=[1, 2])
        gmp = tf.reduce_max(x32, axis=[1, 2])
        if self.variant == "tf1":
            kernel = self.sn.normalized(training) if self.sn else tf.convert_to_tensor(self.kernel)
            bias = tf.convert_to_tensor(self.bias)
            weights = kernel[:, 0] + bias
            logit = tf.concat([tf.matmul(gap, kernel), tf.matmul(gmp, kernel)], -1) + bias
            scales = (weights, weights)
        else:
            gap_k = self.gap_layer.effective(training)
            gmp_k = self.gmp_layer.effective(training)
            logit = tf.concat([tf.matmul(gap, gap_k), tf.matmul(gmp, gmp_k)], -1)
            scales = (tf.convert_to_tensor(self.gap_layer.kernel)[:, 0],
                      tf.convert_to_tensor(self.gmp_layer.kernel)[:, 0])
        if scales_only:
            return scales, logit
        out = tf.concat([x32 * scales[0], x32 * scales[1]], axis=-1)
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

    def __init__(self, channels, sn_mode, kernel_init="random", **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.sn_mode = sn_mode
        self.kernel_init = kernel_init

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.channels, 1),
                                      initializer=weight_init(self.kernel_init), autocast=False)
        self.sn = SpectralNorm(self, self.kernel, self.sn_mode) if self.sn_mode else None

    def effective(self, training):
        return self.sn.normalized(training) if self.sn else tf.convert_to_tensor(self.kernel)


def nearest_upsample_2x(x):
    """Nearest-neighbour x2 upsampling (each pixel repeated 2x2), as TF1's
    resize_nearest_neighbor and torch's Upsample(scale_factor=2, mode='nearest'). Written with
    4-D ops only (CONCATENATION + RESHAPE), which every TFLite kernel accepts (int8
    STRIDED_SLICE rejects the 6-D broadcast form)."""
    dynamic = tf.shape(x)
    n, h, w, c = [x.shape[i] if x.shape[i] is not None else dynamic[i] for i in range(4)]
    x = tf.reshape(tf.concat([x, x], axis=-1), [n, h, w * 2, c])   # repeat each column
    return tf.reshape(tf.concat([x, x], axis=2), [n, h * 2, w * 2, c])  # repeat each row


def fold_cam_halves(kernel, w_gap, w_gmp):
    """A 1x1 kernel [1, 1, 2C, out] applied to [x * w_gap, x * w_gmp] equals the kernel
    [1, 1, C, out] w_gap * K[:C] + w_gmp * K[C:] applied to x (exact up to rounding).
    Computed in float32 (the scales may arrive in the compute dtype)."""
    # tf.split, not two slices: its gradient is one concatenation, where each slice's would
    # be a zero-filled copy of the whole (large) kernel; the values are the same
    k = tf.convert_to_tensor(kernel)
    gap_half, gmp_half = tf.split(tf.reshape(k, k.shape[2:]), 2, axis=0)
    w_gap = tf.cast(w_gap, gap_half.dtype)[:, None]
    w_gmp = tf.cast(w_gmp, gap_half.dtype)[:, None]
    return (w_gap * gap_half + w_gmp * gmp_half)[None, None]


# conv3x3(reflect_pad1(upsample2x(x))) as a stride-2 transposed convolution: along each
# axis, output 2i sees (x[i-1], x[i], x[i]) and output 2i+1 sees (x[i], x[i], x[i+1]) (the
# reflect-padded upsampled map repeats x's edge), so each output is a 2-tap filter over x
# edge-padded by 1 (xp[j] = x[j-1]): y[2i] = xp[i] K0 + xp[i+1] (K1 + K2) and y[2i+1] =
# xp[i+1] (K0 + K1) + xp[i+2] K2. A transposed convolution with stride 2 computes
# out[q] = sum_j xp[j] W[q - 2j]; with the 4-tap kernel W = (K2, K1 + K2, K0 + K1, K0), whose
# rows are these combinations of K's rows, out[p + 3] = y[p].
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv3x3(x, kernel, kernels="reference"):
    """conv3x3_VALID(reflect_pad_1(nearest_upsample_2x(x))) without building the upsampled
    map: a stride-2 transposed convolution of x edge-padded by 1 with a 4x4 kernel made of
    sums of the 3x3 kernel's taps (see _UPSAMPLE_TAPS), cropped by 3 on each side. Exact up
    to rounding; 16 instead of 36 multiply-adds per input pixel and channel pair, forward and
    backward, and no full-resolution copy of the input.
    x [N, H, W, C], kernel [3, 3, C, O] (already in x's dtype) -> [N, 2H, 2W, O]; the edge
    padding by MirrorPad for the "reference" kernels (its gradient is one op), otherwise by
    gather_pixels (H, W static)."""
    c, o = kernel.shape[2], kernel.shape[3]
    taps = tf.constant(_UPSAMPLE_TAPS, kernel.dtype)                        # [4, 3]
    w = tf.reshape(tf.matmul(taps, tf.reshape(kernel, [3, -1])), [4, 3, c, o])  # rows
    w = tf.transpose(w, [1, 0, 2, 3])                                       # [3, 4, C, O]
    w = tf.reshape(tf.matmul(taps, tf.reshape(w, [3, -1])), [4, 4, c, o])   # columns
    w = tf.transpose(w, [1, 0, 3, 2])                      # [rows, cols, O, C]: transpose_conv
    if _forward_only(kernels):
        xp = gather_pixels(x, edge_indices(x.shape[1]), edge_indices(x.shape[2]))
    else:
        xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")  # edge replicate
    dynamic = tf.shape(x)
    h = x.shape[1] if x.shape[1] is not None else dynamic[1]
    width = x.shape[2] if x.shape[2] is not None else dynamic[2]
    if x.dtype in (tf.float32, tf.float64):
        # explicit padding crops inside the op (fastest in float32 here)
        return tf.nn.conv2d_transpose(xp, w, tf.stack([dynamic[0], 2 * h, 2 * width, o]),
                                      strides=2, padding=[[0, 0], [3, 3], [3, 3], [0, 0]])
    # half types: TensorFlow's oneDNN kernels take SAME/VALID only (the explicit-padding op
    # falls back to a generic kernel that is ~30x slower in bfloat16). SAME pads the
    # transposed convolution by 1 on each side, so out[p + 3] is at p + 2. The crop is a
    # Slice, whose gradient is one Pad: a strided slice's (StridedSliceGrad) gave the same
    # values 16x slower in bfloat16 (57 against 3.4 ms at 256 px, ch 64, batch 3).
    y = tf.nn.conv2d_transpose(xp, w, tf.stack([dynamic[0], 2 * h + 4, 2 * width + 4, o]),
                               strides=2, padding="SAME")
    return tf.slice(y, [0, 2, 2, 0], tf.stack([-1, 2 * h, 2 * width, -1]))
