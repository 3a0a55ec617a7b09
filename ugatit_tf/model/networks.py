"""U-GAT-IT generator and discriminator as Keras subclassed models.

Two variants behind `Config.variant`, never mixed:
- `tf1` (default): the official TF1 code (taki0112/UGATIT), whose released weights we load.
- `pytorch`: the official PyTorch networks (znxlwm/UGATIT-pytorch).

Each block is a class, readable top to bottom like the paper: encoder (down-sampling +
residual blocks), CAM attention, the MLP that gives AdaLIN its gamma and beta, the decoder
(AdaLIN residual blocks + up-sampling with LIN). `tf1_name_map()` / `torch_name_map()` give
every variable's name in the original checkpoints.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ugatit_tf.config import Config, conv_pads, discriminator_layer_counts
from ugatit_tf.model import deferred_gradients
from ugatit_tf.model.layers import (CAM, L2_SCALE, LIN, AdaLIN, Conv, Dense, Entry,
                                    InstanceNorm, check_kernels, check_train_kernels, leaky_relu,
                                    nearest_upsample_2x, wide)

# How the decoder computes "nearest x2 upsample, reflect pad, conv 3x3" (same values up to
# float rounding): "fused" as one sub-pixel (transposed) convolution that never builds the
# upsampled map (the default: fastest, used for training and inference); "repeat" as the
# original's separate steps with 4-D ops only, which TFLite's builtin kernels (int8 too) run.
UPSAMPLE_MODES = ("fused", "repeat")


def _pads(kernel, stride, pad, variant):
    return conv_pads(kernel, stride, pad, variant)


def _tracked(owner, prefix, layers):
    """Keep a list of sublayers where tf.train.Checkpoint and SavedModel can see them: Keras'
    tracked lists are not checkpoint dependencies, attributes are."""
    for i, layer in enumerate(layers):
        setattr(owner, f"{prefix}_{i}", layer)
    return layers


class ResnetBlock(keras.layers.Layer):
    """Encoder residual block: (reflect-pad conv3x3, IN, ReLU, reflect-pad conv3x3, IN) + x."""

    def __init__(self, dim, variant, tf1_scope, torch_prefix, kernel_init="random", **kwargs):
        super().__init__(**kwargs)
        tf1 = variant == "tf1"
        self.conv1 = Conv(dim, 3, 1, _pads(3, 1, 1, variant), use_bias=tf1,
                          tf1_scope=f"{tf1_scope}/res1/conv_0/conv2d", kernel_init=kernel_init,
                          torch_prefix=f"{torch_prefix}.conv_block.1", name="res1_conv")
        self.norm1 = InstanceNorm(affine=tf1, tf1_scope=f"{tf1_scope}/res1/instance_norm",
                                  name="res1_norm")
        self.conv2 = Conv(dim, 3, 1, _pads(3, 1, 1, variant), use_bias=tf1,
                          tf1_scope=f"{tf1_scope}/res2/conv_0/conv2d", kernel_init=kernel_init,
                          torch_prefix=f"{torch_prefix}.conv_block.5", name="res2_conv")
        self.norm2 = InstanceNorm(affine=tf1, tf1_scope=f"{tf1_scope}/res2/instance_norm",
                                  name="res2_norm")

    def call(self, x, kernels="reference"):
        y = self.norm1(self.conv1(x, kernels=kernels), relu=True, kernels=kernels)
        y = self.norm2(self.conv2(y, kernels=kernels), kernels=kernels)
        return x + y


class AdaLINResnetBlock(keras.layers.Layer):
    """Decoder residual block: conv3x3, AdaLIN, ReLU, conv3x3, AdaLIN, + x."""

    def __init__(self, dim, variant, smoothing, tf1_scope, torch_prefix, kernel_init="random",
                 **kwargs):
        super().__init__(**kwargs)
        tf1 = variant == "tf1"
        norm_args = dict(smoothing=smoothing and tf1, rho_init=1.0 if tf1 else 0.9,
                         unbiased=not tf1)
        self.conv1 = Conv(dim, 3, 1, _pads(3, 1, 1, variant), use_bias=tf1,
                          tf1_scope=f"{tf1_scope}/res1/conv_0/conv2d", kernel_init=kernel_init,
                          torch_prefix=f"{torch_prefix}.conv1", name="res1_conv")
        self.norm1 = AdaLIN(tf1_scope=f"{tf1_scope}/res1/instance_layer_norm",
                            torch_prefix=f"{torch_prefix}.norm1", name="res1_adalin",
                            **norm_args)
        self.conv2 = Conv(dim, 3, 1, _pads(3, 1, 1, variant), use_bias=tf1,
                          tf1_scope=f"{tf1_scope}/res2/conv_0/conv2d", kernel_init=kernel_init,
                          torch_prefix=f"{torch_prefix}.conv2", name="res2_conv")
        self.norm2 = AdaLIN(tf1_scope=f"{tf1_scope}/res2/instance_layer_norm",
                            torch_prefix=f"{torch_prefix}.norm2", name="res2_adalin",
                            **norm_args)

    def call(self, x, gamma, beta, kernels="reference"):
        y = self.norm1(self.conv1(x, kernels=kernels), gamma, beta, relu=True, kernels=kernels)
        y = self.norm2(self.conv2(y, kernels=kernels), gamma, beta, kernels=kernels)
        return x + y


class MLP(keras.layers.Layer):
    """Gamma/beta block: (light: global average pool) -> 2 x (dense, ReLU) -> dense gamma,
    dense beta. The full model flattens the whole feature map (most of its parameters); the
    trainer forms that first kernel's gradient itself (model/deferred_gradients.py)."""

    def __init__(self, width, light, variant, kernel_init="random", **kwargs):
        super().__init__(**kwargs)
        self.light = light
        args = dict(use_bias=variant == "tf1", kernel_init=kernel_init)
        self.linear_0 = Dense(width, tf1_scope="MLP/linear_0/dense", torch_prefix="FC.0",
                              name="linear_0", defer_gradient=not light, **args)
        self.linear_1 = Dense(width, tf1_scope="MLP/linear_1/dense", torch_prefix="FC.2",
                              name="linear_1", **args)
        self.gamma = Dense(width, tf1_scope="MLP/gamma/dense", torch_prefix="gamma",
                           name="gamma", **args)
        self.beta = Dense(width, tf1_scope="MLP/beta/dense", torch_prefix="beta", name="beta",
                          **args)

    def call(self, x):
        if self.light:
            x = tf.reduce_mean(x, axis=[1, 2])
        x = tf.nn.relu(self.linear_0(x))
        x = tf.nn.relu(self.linear_1(x))
        return self.gamma(x), self.beta(x)


class Generator(keras.Model):
    """ResNet generator with CAM attention and AdaLIN.

    call(x, training=False, upsample="fused", kernels="reference") -> (image [N,H,W,3] in
    [-1,1], cam_logit [N,2], heatmap [N,h,w]) (heatmap: channel sum of the attention-weighted
    bottleneck, at 1/4 resolution). `upsample` is one of UPSAMPLE_MODES: the TFLite exporter
    asks for "repeat". `kernels` is one of layers.KERNELS: "inference" (forward passes only:
    test phase, photos, serving, evaluation) runs the normalisations through oneDNN's fused
    batch-norm kernel, the same values up to float rounding; "frozen" is "inference" with
    the convolutions' weights folded into the traced graph as constants (the same bits, for
    functions traced once the weights are final); training takes layers.TRAIN_KERNELS
    ("reference", or "fast": instance norms through the fused kernel and its gradient).
    `kernel_init` "zeros" (see layers.weight_init) builds a generator whose weights are
    restored right after without drawing random numbers (export, test, photos)."""

    def __init__(self, config: Config, kernel_init="random", **kwargs):
        super().__init__(**kwargs)
        self.config = config
        variant = config.variant
        tf1 = variant == "tf1"
        ch = config.ch
        init = dict(kernel_init=kernel_init)
        self.conv = Conv(ch, 7, 1, _pads(7, 1, 3, variant), use_bias=tf1,
                         tf1_scope="conv/conv2d", torch_prefix="DownBlock.1", name="conv", **init)
        self.norm = InstanceNorm(affine=tf1, tf1_scope="ins_norm", name="ins_norm")
        down_convs, down_norms = [], []
        for i in range(2):
            ch *= 2
            down_convs.append(Conv(ch, 3, 2, _pads(3, 2, 1, variant), use_bias=tf1,
                                   tf1_scope=f"conv_{i}/conv2d",
                                   torch_prefix=f"DownBlock.{5 + 4 * i}", name=f"conv_{i}",
                                   **init))
            down_norms.append(InstanceNorm(affine=tf1, tf1_scope=f"ins_norm_{i}",
                                           name=f"ins_norm_{i}"))
        self.down_convs = _tracked(self, "down_conv", down_convs)
        self.down_norms = _tracked(self, "down_norm", down_norms)
        self.resblocks = _tracked(self, "resblock", [
            ResnetBlock(ch, variant, f"resblock_{k}", f"DownBlock.{12 + k}",
                        name=f"resblock_{k}", **init) for k in range(config.n_res)])
        self.cam = CAM(variant=variant, sn=None, tf1_scope="CAM_logit", torch_prefix="",
                       name="CAM_logit", **init)
        self.conv_1x1 = Conv(ch, 1, 1, use_bias=True, cam_halves=True,
                             tf1_scope="conv_1x1/conv2d", torch_prefix="conv1x1",
                             name="conv_1x1", **init)
        self.mlp = MLP(config.mlp_width, config.light, variant, name="MLP", **init)
        self.ada_resblocks = _tracked(self, "adaptive_resblock", [
            AdaLINResnetBlock(ch, variant, config.smoothing, f"adaptive_resblock{k}",
                              f"UpBlock1_{k + 1}", name=f"adaptive_resblock{k}", **init)
            for k in range(config.n_res)])
        up_convs, up_norms = [], []
        for i in range(2):
            ch //= 2
            up_convs.append(Conv(ch, 3, 1, _pads(3, 1, 1, variant), use_bias=tf1,
                                 tf1_scope=f"up_conv_{i}/conv2d",
                                 torch_prefix=f"UpBlock2.{2 + 5 * i}", name=f"up_conv_{i}",
                                 **init))
            up_norms.append(LIN(unbiased=not tf1, tf1_scope=f"layer_ins_norm_{i}",
                                torch_prefix=f"UpBlock2.{3 + 5 * i}",
                                name=f"layer_ins_norm_{i}"))
        self.up_convs = _tracked(self, "up_conv", up_convs)
        self.up_norms = _tracked(self, "up_norm", up_norms)
        self.g_logit = Conv(3, 7, 1, _pads(7, 1, 3, variant), use_bias=tf1,
                            tf1_scope="G_logit/conv2d", torch_prefix="UpBlock2.11", name="G_logit",
                            **init)

    def encode(self, x, kernels="reference"):
        x = self.norm(self.conv(x, kernels=kernels), relu=True, kernels=kernels)
        for conv, norm in zip(self.down_convs, self.down_norms):
            x = norm(conv(x, kernels=kernels), relu=True, kernels=kernels)
        for block in self.resblocks:
            x = block(x, kernels=kernels)
        return x

    def call(self, x, training=False, upsample="fused", kernels="reference"):
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, not {upsample!r}")
        check_kernels(kernels)
        x = self.encode(x, kernels)
        # CAM's two scaled copies of x and the 1x1 conv over their concatenation, folded
        # into one 1x1 conv over x (Conv(cam_halves=True)): same math, half the FLOPs
        scales, cam_logit = self.cam(x, scales_only=True)
        x = tf.nn.relu(self.conv_1x1(x, scales=scales, kernels=kernels))
        heatmap = tf.reduce_sum(wide(x), axis=-1)
        gamma, beta = self.mlp(x)
        for block in self.ada_resblocks:
            x = block(x, gamma, beta, kernels=kernels)
        for conv, norm in zip(self.up_convs, self.up_norms):
            if upsample == "fused":
                x = conv(x, upsample=True, kernels=kernels)
            else:
                x = conv(nearest_upsample_2x(x), kernels=kernels)
            x = norm(x, relu=True, kernels=kernels)
        x = tf.tanh(wide(self.g_logit(x, kernels=kernels)))
        return x, cam_logit, heatmap

    def checkpoint_layers(self):
        layers = [self.conv, self.norm]
        for conv, norm in zip(self.down_convs, self.down_norms):
            layers += [conv, norm]
        for block in self.resblocks:
            layers += [block.conv1, block.norm1, block.conv2, block.norm2]
        layers += [self.cam, self.conv_1x1, self.mlp.linear_0, self.mlp.linear_1,
                   self.mlp.gamma, self.mlp.beta]
        for block in self.ada_resblocks:
            layers += [block.conv1, block.norm1, block.conv2, block.norm2]
        for conv, norm in zip(self.up_convs, self.up_norms):
            layers += [conv, norm]
        layers.append(self.g_logit)
        return layers


class DiscriminatorHead(keras.layers.Layer):
    """One PatchGAN head with CAM: n_down x (4x4 stride-2 conv, LeakyReLU 0.2), conv_last
    (4x4 stride 1, doubling channels), CAM, conv_1x1 + LeakyReLU, D_logit (4x4 stride 1).

    call -> (logit [N,h,w,1], cam_logit [N,2], heatmap [N,h,w])."""

    def __init__(self, config: Config, n_down: int, tf1_scope: str, **kwargs):
        super().__init__(**kwargs)
        variant = config.variant
        tf1 = variant == "tf1"
        sn = ("tf1" if tf1 else "torch") if config.sn else None
        conv_scope = "" if config.sn or not tf1 else "/conv2d"  # tf.layers.conv2d without SN
        ch = config.ch
        convs = []
        for i in range(n_down):
            out = ch if i == 0 else ch * 2 ** i
            convs.append(Conv(out, 4, 2, _pads(4, 2, 1, variant), use_bias=True, sn=sn,
                                   tf1_scope=f"{tf1_scope}/conv_{i}{conv_scope}",
                                   torch_prefix=f"model.{1 + 3 * i}", name=f"conv_{i}"))
        self.convs = _tracked(self, "conv", convs)
        ch = ch * 2 ** (n_down - 1) * 2
        self.conv_last = Conv(ch, 4, 1, _pads(4, 1, 1, variant), use_bias=True, sn=sn,
                              tf1_scope=f"{tf1_scope}/conv_last{conv_scope}",
                              torch_prefix=f"model.{1 + 3 * n_down}", name="conv_last")
        self.cam = CAM(variant=variant, sn=sn, tf1_scope=f"{tf1_scope}/CAM_logit",
                       torch_prefix="", name="CAM_logit")
        self.conv_1x1 = Conv(ch, 1, 1, use_bias=True, cam_halves=True,
                             tf1_scope=f"{tf1_scope}/conv_1x1/conv2d", torch_prefix="conv1x1",
                             name="conv_1x1")
        self.d_logit = Conv(1, 4, 1, _pads(4, 1, 1, variant), use_bias=tf1, sn=sn,
                            tf1_scope=f"{tf1_scope}/D_logit{conv_scope}", torch_prefix="conv",
                            name="D_logit")

    def call(self, x, training=False, kernels="reference"):
        for conv in self.convs:
            x = leaky_relu(conv(x, training=training, kernels=kernels), 0.2)
        x = leaky_relu(self.conv_last(x, training=training, kernels=kernels), 0.2)
        scales, cam_logit = self.cam(x, training=training, scales_only=True)
        x = leaky_relu(self.conv_1x1(x, scales=scales, kernels=kernels), 0.2)
        heatmap = tf.reduce_sum(wide(x), axis=-1)
        logit = wide(self.d_logit(x, training=training, kernels=kernels))
        return logit, cam_logit, heatmap

    def checkpoint_layers(self):
        return [*self.convs, self.conv_last, self.cam, self.conv_1x1, self.d_logit]


class Discriminator(keras.Model):
    """The two discriminators of one domain: a local (n_dis-3 downsamplings, 70x70-like
    patches) and a global (n_dis-1) head.

    call(x, training=False, kernels="reference") -> (logits [local, global], cam_logits
    [local, global], heatmaps [local, global]). In training, every spectral-normalised layer
    does one power iteration and stores the new u. kernels: layers.TRAIN_KERNELS."""

    def __init__(self, config: Config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        counts = discriminator_layer_counts(config.n_dis)
        self.local = DiscriminatorHead(config, counts["local"], "local", name="local")
        self.global_ = DiscriminatorHead(config, counts["global"], "global", name="global")

    def call(self, x, training=False, kernels="reference"):
        check_train_kernels(kernels)
        local = self.local(x, training=training, kernels=kernels)
        global_ = self.global_(x, training=training, kernels=kernels)
        return ([local[0], global_[0]], [local[1], global_[1]], [local[2], global_[2]])


# ---------------------------------------------------------------------------
# Building, regularisation and name maps
# ---------------------------------------------------------------------------

def build_generator(config: Config, name: str, kernel_init: str = "random") -> Generator:
    model = Generator(config, kernel_init=kernel_init, name=name)
    model(tf.zeros([1, config.img_size, config.img_size, config.img_ch]))
    return model


def translator(generator: Generator, kernels: str, img_size: int | None = None):
    """The generator's forward pass (image, cam_logit, heatmap) for translating only, as a
    tf.function with `kernels` (layers.KERNELS); with img_size, for batches of that size's
    images of any length (one trace). With "frozen" kernels it keeps the weights it is first
    traced with: build it once the weights are final."""
    check_kernels(kernels)
    spec = None if img_size is None else [tf.TensorSpec([None, img_size, img_size, 3],
                                                       tf.float32)]
    return tf.function(lambda x: generator(x, training=False, kernels=kernels),
                       input_signature=spec)


def build_discriminator(config: Config, name: str) -> Discriminator:
    model = Discriminator(config, name=name)
    model(tf.zeros([1, config.img_size, config.img_size, config.img_ch]))
    return model


class Networks:
    """The four networks of U-GAT-IT with the original's names: `generator_B` translates
    A -> B, `generator_A` translates B -> A; `discriminator_A`/`_B` judge each domain.
    `generator_init` "zeros": generators about to be restored from a checkpoint (no random
    numbers drawn, see layers.weight_init)."""

    def __init__(self, config: Config, discriminators: bool = True,
                 generator_init: str = "random"):
        self.config = config
        self.genA2B = build_generator(config, "generator_B", generator_init)
        self.genB2A = build_generator(config, "generator_A", generator_init)
        if discriminators:
            self.disA = build_discriminator(config, "discriminator_A")
            self.disB = build_discriminator(config, "discriminator_B")
        else:
            self.disA = self.disB = None

    @property
    def generators(self):
        return [self.genA2B, self.genB2A]

    @property
    def discriminators(self):
        return [d for d in (self.disA, self.disB) if d is not None]


def regularization_loss(model: keras.Model, variant: str):
    """The original's weight penalty. TF1: l2_regularizer(1e-4) on every kernel, i.e.
    1e-4 * sum(w^2) / 2. PyTorch: Adam weight_decay 1e-4 on every parameter, whose gradient
    1e-4 * p equals that of 1e-4 * sum(p^2) / 2 over all trainable variables. Inside
    deferred_gradients.recording, deferred kernels' terms go through the recorder."""
    if variant == "tf1":
        variables = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    else:
        variables = list(model.trainable_variables)
    return L2_SCALE * 0.5 * tf.add_n([deferred_gradients.sum_of_squares(v) for v in variables])


def _checkpoint_layers(model):
    if isinstance(model, Generator):
        return model.checkpoint_layers()
    return model.local.checkpoint_layers() + model.global_.checkpoint_layers()


def tf1_name_map(model) -> dict[str, Entry]:
    """TF1 checkpoint name (e.g. 'generator_B/conv/conv2d/kernel') -> Entry(variable, layout)
    for every variable of a tf1-variant Generator or Discriminator."""
    if model.config.variant != "tf1":
        raise ValueError("tf1_name_map needs a model of the tf1 variant")
    out = {}
    for layer in _checkpoint_layers(model):
        for name, entry in layer.checkpoint_entries("tf1").items():
            out[f"{model.name}/{name}"] = entry
    return out


TORCH_KEYS = {"generator_B": "genA2B", "generator_A": "genB2A"}


def torch_name_map(model) -> dict[str, dict[str, Entry]]:
    """For a pytorch-variant model: {checkpoint dict key: {state_dict key: Entry}}. A generator
    maps to one dict ('genA2B' / 'genB2A'); a discriminator to two ('disGA' + 'disLA', ...)."""
    if model.config.variant != "pytorch":
        raise ValueError("torch_name_map needs a model of the pytorch variant")
    if isinstance(model, Generator):
        entries = {}
        for layer in model.checkpoint_layers():
            entries.update(layer.checkpoint_entries("torch"))
        return {TORCH_KEYS[model.name]: entries}
    domain = model.name[-1]
    out = {}
    for head, letter in ((model.global_, "G"), (model.local, "L")):
        entries = {}
        for layer in head.checkpoint_layers():
            entries.update(layer.checkpoint_entries("torch"))
        out[f"dis{letter}{domain}"] = entries
    return out


def count_params(model) -> int:
    return int(sum(v.numpy().size for v in model.trainable_variables))
