"""Independent numpy float64 reference of the U-GAT-IT forward passes (test oracle).

Written from the two original code bases (read, not copied):
  * TF1 original  (taki0112/UGATIT: UGATIT.py, ops.py)    -> ``tf1_*`` functions
  * PyTorch original (znxlwm/UGATIT-pytorch: networks.py) -> ``torch_*`` functions

Everything here is plain numpy in float64, NHWC, with no TensorFlow / Keras / torch
import, so the port's Keras models can be checked against it.

Conventions
-----------
* Images and feature maps are NHWC float64 arrays.
* TF1 weights: a dict keyed by the TF1 checkpoint variable name without ``:0`` and WITH the
  model scope, e.g. ``generator_B/conv/conv2d/kernel`` or
  ``discriminator_A/global/conv_0/kernel``. Conv kernels HWIO, dense kernels [in, out].
* PyTorch weights: a dict keyed by the exact ``state_dict`` key of networks.py's
  ``ResnetGenerator`` / ``Discriminator`` (no model prefix), with the torch layouts
  (conv OIHW, linear [out, in], rho/gamma/beta of ILN [1, C, 1, 1]).
* Heatmaps are returned as [N, H, W] (channel sum; the batch axis is kept, unlike the
  TF1 ``tf.squeeze`` and the torch ``keepdim`` [N, 1, H, W]).
* Patch logits are returned NHWC, [N, h, w, 1]. CAM logits are [N, 2] = [gap, gmp].

Documented choices
------------------
* MLP width of the TF1 generator: the original uses ``ch * n_res`` and reshapes gamma/beta
  to ``ch * 4`` channels (the feature width), so it only runs at n_res == 4; we use
  ``ch * 4`` (identical at n_res = 4), which is also the PyTorch width.
* TF1 discriminator CAM_logit: the original calls spectral_norm twice with reuse (gap and
  gmp) on the same ``u`` variable; both calls start from the same stored ``u`` and the same
  kernel, so they give the same normalised kernel. We apply SN once and use it for both.
"""

from __future__ import annotations

import numpy as np

EPS_NORM = 1e-5

# ----------------------------------------------------------------------------------------
# Primitives (NHWC, float64)
# ----------------------------------------------------------------------------------------


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def reflect_pad(x, top, bottom, left, right):
    """Reflect padding (edge not repeated), as tf.pad REFLECT / torch ReflectionPad2d."""
    x = _f64(x)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="reflect")


def zero_pad(x, top, bottom, left, right):
    x = _f64(x)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="constant")


def conv2d(x, kernel, stride=1, bias=None):
    """VALID 2-D convolution (cross-correlation). x NHWC, kernel HWIO.

    im2col split per kernel tap: out = sum_{i,j} x[:, i::s, j::s, :] @ K[i, j].
    """
    x = _f64(x)
    k = _f64(kernel)
    n, h, w, c = x.shape
    kh, kw, ci, co = k.shape
    if ci != c:
        raise ValueError(f"kernel expects {ci} input channels, got {c}")
    ho = (h - kh) // stride + 1
    wo = (w - kw) // stride + 1
    if ho <= 0 or wo <= 0:
        raise ValueError("input smaller than kernel")
    out = np.zeros((n, ho, wo, co), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
            out += patch @ k[i, j]
    if bias is not None:
        out += _f64(bias).reshape(1, 1, 1, co)
    return out


def tf1_conv_pads(kernel, stride, pad):
    """(before, after) padding of ops.py conv(): symmetric if (kernel-stride) is even,
    else `pad` before and `kernel - stride - pad` after (k3 s2 p1 -> (1, 0);
    k4 s1 p1 -> (1, 2))."""
    if pad <= 0:
        return 0, 0
    if (kernel - stride) % 2 == 0:
        return pad, pad
    return pad, kernel - stride - pad


def tf1_conv(x, kernel, bias, stride, pad=0, pad_type="zero"):
    """ops.py conv(): pad by the TF1 rule, then VALID conv with stride, plus bias."""
    k = _f64(kernel)
    before, after = tf1_conv_pads(k.shape[0], stride, pad)
    if before or after:
        padder = reflect_pad if pad_type == "reflect" else zero_pad
        x = padder(x, before, after, before, after)
    return conv2d(x, k, stride, bias)


def upsample_nearest2x(x):
    """Nearest-neighbour x2 (tf.image.resize_nearest_neighbor / nn.Upsample nearest)."""
    x = _f64(x)
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def relu(x):
    return np.maximum(_f64(x), 0.0)


def leaky_relu(x, alpha=0.2):
    x = _f64(x)
    return np.where(x >= 0, x, alpha * x)


def _as_nhwc_param(p):
    """Per-channel parameter [C], [N, C] or [1, C, 1, 1] -> broadcastable to NHWC."""
    p = _f64(p)
    if p.ndim == 4 and p.shape[2:] == (1, 1):  # torch [1, C, 1, 1]
        return p.reshape(p.shape[0], 1, 1, p.shape[1])
    if p.ndim == 2:  # [N, C] from an MLP
        return p.reshape(p.shape[0], 1, 1, p.shape[1])
    return p  # [C]


def _moments(x, axes, unbiased):
    mean = x.mean(axis=axes, keepdims=True)
    cnt = np.prod([x.shape[a] for a in axes])
    ddof = 1 if unbiased else 0
    var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (cnt - ddof)
    return mean, var


def instance_norm(x, gamma=None, beta=None, eps=EPS_NORM):
    """Instance norm over H, W; biased variance; optional affine (TF1 contrib instance_norm,
    torch InstanceNorm2d(affine=False) when gamma/beta are None)."""
    x = _f64(x)
    mean, var = _moments(x, (1, 2), unbiased=False)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * _as_nhwc_param(gamma)
    if beta is not None:
        y = y + _as_nhwc_param(beta)
    return y


def layer_instance_norm(x, rho, gamma, beta, unbiased=False, eps=EPS_NORM):
    """Generic (Ada)LIN: rho * IN(x) + (1 - rho) * LN(x), then * gamma + beta.

    IN stats over (H, W), LN stats over (H, W, C); ``unbiased`` selects N-1 variance.
    rho/gamma/beta may be [C], [N, C] (MLP output) or [1, C, 1, 1] (torch)."""
    x = _f64(x)
    m_in, v_in = _moments(x, (1, 2), unbiased)
    m_ln, v_ln = _moments(x, (1, 2, 3), unbiased)
    x_in = (x - m_in) / np.sqrt(v_in + eps)
    x_ln = (x - m_ln) / np.sqrt(v_ln + eps)
    r = _as_nhwc_param(rho)
    y = r * x_in + (1.0 - r) * x_ln
    return y * _as_nhwc_param(gamma) + _as_nhwc_param(beta)


def tf1_adalin(x, rho, gamma, beta, smoothing=True):
    """ops.py adaptive_instance_layer_norm: biased moments, eps 1e-5; with smoothing the
    forward uses clip(rho - 0.1, 0, 1)."""
    rho = _f64(rho)
    if smoothing:
        rho = np.clip(rho - 0.1, 0.0, 1.0)
    return layer_instance_norm(x, rho, gamma, beta, unbiased=False)


def tf1_lin(x, rho, gamma, beta):
    """ops.py layer_instance_norm: biased moments, learned rho/gamma/beta, no smoothing."""
    return layer_instance_norm(x, rho, gamma, beta, unbiased=False)


def torch_adailn(x, rho, gamma, beta):
    """networks.py adaILN: unbiased (N-1) variance, no smoothing."""
    return layer_instance_norm(x, rho, gamma, beta, unbiased=True)


def torch_iln(x, rho, gamma, beta):
    """networks.py ILN: unbiased (N-1) variance."""
    return layer_instance_norm(x, rho, gamma, beta, unbiased=True)


# ----------------------------------------------------------------------------------------
# Spectral norm
# ----------------------------------------------------------------------------------------


def l2_normalize_tf(x, eps=1e-12):
    """tf.nn.l2_normalize over all elements: x / sqrt(max(sum x^2, eps))."""
    x = _f64(x)
    return x / np.sqrt(max(float(np.sum(x * x)), eps))


def normalize_torch(x, eps=1e-12):
    """torch.nn.functional.normalize of a vector: x / max(||x||, eps)."""
    x = _f64(x)
    return x / max(float(np.sqrt(np.sum(x * x))), eps)


def sn_tf1(w, u):
    """ops.py spectral_norm with one power iteration.

    w: any shape, last axis = out; u: [1, out]. Returns (w / sigma in w's shape,
    u_new [1, out], sigma float)."""
    w = _f64(w)
    shape = w.shape
    w2 = w.reshape(-1, shape[-1])
    u = _f64(u).reshape(1, shape[-1])
    v = l2_normalize_tf(u @ w2.T)  # [1, M]
    u_new = l2_normalize_tf(v @ w2)  # [1, out]
    sigma = float((v @ w2 @ u_new.T)[0, 0])
    return (w2 / sigma).reshape(shape), u_new, sigma


def sn_tf1_grad(w, u, upstream):
    """Gradient of sum(upstream * w / sigma) w.r.t. w, u_new and v stop-gradiented
    (as in ops.py): grad = G / sigma - (sum(G * W) / sigma^2) * v^T u_new."""
    w = _f64(w)
    shape = w.shape
    w2 = w.reshape(-1, shape[-1])
    g2 = _f64(upstream).reshape(w2.shape)
    u = _f64(u).reshape(1, shape[-1])
    v = l2_normalize_tf(u @ w2.T)
    u_new = l2_normalize_tf(v @ w2)
    sigma = float((v @ w2 @ u_new.T)[0, 0])
    grad = g2 / sigma - (np.sum(g2 * w2) / sigma**2) * (v.T @ u_new)
    return grad.reshape(shape)


def sn_torch(weight, u, v, training=True, eps=1e-12):
    """torch.nn.utils.spectral_norm (dim 0, one power iteration when training).

    weight: torch layout (out first); u: [out]; v: [prod(rest)].
    Returns (weight / sigma, u, v) with the (possibly updated) u and v."""
    weight = _f64(weight)
    wm = weight.reshape(weight.shape[0], -1)
    u = _f64(u).reshape(-1)
    v = _f64(v).reshape(-1)
    if training:
        v = normalize_torch(wm.T @ u, eps)
        u = normalize_torch(wm @ v, eps)
    sigma = float(u @ (wm @ v))
    return weight / sigma, u, v


# ----------------------------------------------------------------------------------------
# TF1 variable names and shapes
# ----------------------------------------------------------------------------------------


def tf1_generator_names(light, ch, n_res, img_size, scope="generator_B", img_ch=3):
    """TF1 generator variable name -> shape (all trainable)."""
    s = {}
    p = scope + "/"

    def conv(name, k, cin, cout):
        s[p + name + "/conv2d/kernel"] = (k, k, cin, cout)
        s[p + name + "/conv2d/bias"] = (cout,)

    def inorm(name, c):
        s[p + name + "/beta"] = (c,)
        s[p + name + "/gamma"] = (c,)

    def dense(name, cin, cout):
        s[p + name + "/dense/kernel"] = (cin, cout)
        s[p + name + "/dense/bias"] = (cout,)

    c = ch
    conv("conv", 7, img_ch, c)
    inorm("ins_norm", c)
    for i in range(2):
        conv(f"conv_{i}", 3, c, 2 * c)
        inorm(f"ins_norm_{i}", 2 * c)
        c *= 2
    for k in range(n_res):
        for r in ("res1", "res2"):
            conv(f"resblock_{k}/{r}/conv_0", 3, c, c)
            inorm(f"resblock_{k}/{r}/instance_norm", c)
    s[p + "CAM_logit/kernel"] = (c, 1)
    s[p + "CAM_logit/bias"] = (1,)
    conv("conv_1x1", 1, 2 * c, c)
    width = ch * 4  # original: ch * n_res (== ch * 4 at the only runnable n_res = 4)
    mlp_in = c if light else (img_size // 4) * (img_size // 4) * c
    dense("MLP/linear_0", mlp_in, width)
    dense("MLP/linear_1", width, width)
    dense("MLP/gamma", width, width)
    dense("MLP/beta", width, width)
    for k in range(n_res):
        for r in ("res1", "res2"):
            conv(f"adaptive_resblock{k}/{r}/conv_0", 3, c, c)
            s[p + f"adaptive_resblock{k}/{r}/instance_layer_norm/rho"] = (c,)
    for i in range(2):
        conv(f"up_conv_{i}", 3, c, c // 2)
        c //= 2
        s[p + f"layer_ins_norm_{i}/rho"] = (c,)
        s[p + f"layer_ins_norm_{i}/gamma"] = (c,)
        s[p + f"layer_ins_norm_{i}/beta"] = (c,)
    conv("G_logit", 7, c, 3)
    return s


def _tf1_dis_head_names(prefix, ch, n_down, sn, img_ch):
    s = {}

    def snconv(name, k, cin, cout):
        if sn:
            s[prefix + name + "/kernel"] = (k, k, cin, cout)
            s[prefix + name + "/bias"] = (cout,)
            s[prefix + name + "/u"] = (1, cout)
        else:  # ops.conv without sn goes through tf.layers.conv2d -> extra "conv2d/" scope
            s[prefix + name + "/conv2d/kernel"] = (k, k, cin, cout)
            s[prefix + name + "/conv2d/bias"] = (cout,)

    c = ch
    snconv("conv_0", 4, img_ch, c)
    for i in range(1, n_down):
        snconv(f"conv_{i}", 4, c, 2 * c)
        c *= 2
    snconv("conv_last", 4, c, 2 * c)
    c *= 2
    s[prefix + "CAM_logit/kernel"] = (c, 1)
    s[prefix + "CAM_logit/bias"] = (1,)
    if sn:
        s[prefix + "CAM_logit/u"] = (1, 1)
    s[prefix + "conv_1x1/conv2d/kernel"] = (1, 1, 2 * c, c)
    s[prefix + "conv_1x1/conv2d/bias"] = (c,)
    snconv("D_logit", 4, c, 1)
    return s


def tf1_discriminator_names(ch, n_dis, sn=True, scope="discriminator_A", img_ch=3):
    """TF1 names -> shapes of one domain's discriminator (local + global).
    Names ending in '/u' are the non-trainable power-iteration vectors."""
    s = {}
    s.update(_tf1_dis_head_names(f"{scope}/local/", ch, n_dis - 3, sn, img_ch))
    s.update(_tf1_dis_head_names(f"{scope}/global/", ch, n_dis - 1, sn, img_ch))
    return s


# ----------------------------------------------------------------------------------------
# TF1 forward passes
# ----------------------------------------------------------------------------------------


def tf1_mlp_input(h, light):
    """Input of the TF1 MLP: light = global average pool [N, C]; full = flatten in
    NHWC (h, w, c) order [N, H*W*C] (tf.layers.flatten of an NHWC tensor)."""
    h = _f64(h)
    return h.mean(axis=(1, 2)) if light else h.reshape(h.shape[0], -1)


def _tf1_cam(x, kernel, bias):
    """Shared CAM dense for gap and gmp. Returns (cam_logit [N,2], fused map [N,H,W,2C])."""
    kernel = _f64(kernel)  # [C, 1]
    bias = _f64(bias).reshape(-1)  # [1]
    gap = x.mean(axis=(1, 2))
    gmp = x.max(axis=(1, 2))
    gap_logit = gap @ kernel + bias
    gmp_logit = gmp @ kernel + bias
    cam_w = kernel[:, 0] + bias[0]  # per-channel weights = kernel + bias
    fused = np.concatenate([x * cam_w, x * cam_w], axis=-1)
    return np.concatenate([gap_logit, gmp_logit], axis=-1), fused


def tf1_generator(weights, x, scope="generator_B", light=True, ch=64, n_res=4, smoothing=True):
    """TF1 UGATIT.generator. Returns (image [N,H,W,3] tanh, cam_logit [N,2], heatmap [N,H/4,W/4])."""
    W = weights
    p = scope + "/"

    def conv(h, name, stride, pad, pad_type="reflect"):
        return tf1_conv(h, W[p + name + "/conv2d/kernel"], W[p + name + "/conv2d/bias"], stride, pad, pad_type)

    def dense(h, name):
        return h @ _f64(W[p + name + "/dense/kernel"]) + _f64(W[p + name + "/dense/bias"])

    h = _f64(x)
    h = conv(h, "conv", 1, 3)
    h = relu(instance_norm(h, W[p + "ins_norm/gamma"], W[p + "ins_norm/beta"]))
    for i in range(2):
        h = conv(h, f"conv_{i}", 2, 1)
        h = relu(instance_norm(h, W[p + f"ins_norm_{i}/gamma"], W[p + f"ins_norm_{i}/beta"]))
    for k in range(n_res):
        r = f"resblock_{k}/"
        y = conv(h, r + "res1/conv_0", 1, 1)
        y = relu(instance_norm(y, W[p + r + "res1/instance_norm/gamma"], W[p + r + "res1/instance_norm/beta"]))
        y = conv(y, r + "res2/conv_0", 1, 1)
        y = instance_norm(y, W[p + r + "res2/instance_norm/gamma"], W[p + r + "res2/instance_norm/beta"])
        h = h + y

    cam_logit, h = _tf1_cam(h, W[p + "CAM_logit/kernel"], W[p + "CAM_logit/bias"])
    h = relu(conv(h, "conv_1x1", 1, 0))
    heatmap = h.sum(axis=-1)

    m = tf1_mlp_input(h, light)
    m = relu(dense(m, "MLP/linear_0"))
    m = relu(dense(m, "MLP/linear_1"))
    gamma = dense(m, "MLP/gamma")  # [N, C]
    beta = dense(m, "MLP/beta")

    for k in range(n_res):
        r = f"adaptive_resblock{k}/"
        y = conv(h, r + "res1/conv_0", 1, 1)
        y = relu(tf1_adalin(y, W[p + r + "res1/instance_layer_norm/rho"], gamma, beta, smoothing))
        y = conv(y, r + "res2/conv_0", 1, 1)
        y = tf1_adalin(y, W[p + r + "res2/instance_layer_norm/rho"], gamma, beta, smoothing)
        h = h + y

    for i in range(2):
        h = upsample_nearest2x(h)
        h = conv(h, f"up_conv_{i}", 1, 1)
        q = p + f"layer_ins_norm_{i}/"
        h = relu(tf1_lin(h, W[q + "rho"], W[q + "gamma"], W[q + "beta"]))

    img = np.tanh(conv(h, "G_logit", 1, 3))
    return img, cam_logit, heatmap


def _tf1_dis_head(W, x, prefix, n_down, sn):
    new_u = {}

    def kernel_of(name):
        if not sn:
            return _f64(W[prefix + name + "/conv2d/kernel"]), _f64(W[prefix + name + "/conv2d/bias"])
        k, u_new, _ = sn_tf1(W[prefix + name + "/kernel"], W[prefix + name + "/u"])
        new_u[prefix + name + "/u"] = u_new
        return k, _f64(W[prefix + name + "/bias"])

    def snconv(h, name, stride):
        k, b = kernel_of(name)
        return tf1_conv(h, k, b, stride, 1, "reflect")

    h = _f64(x)
    for i in range(n_down):
        h = leaky_relu(snconv(h, f"conv_{i}", 2), 0.2)
    h = leaky_relu(snconv(h, "conv_last", 1), 0.2)

    cam_k = _f64(W[prefix + "CAM_logit/kernel"])
    if sn:
        cam_k, u_new, _ = sn_tf1(cam_k, W[prefix + "CAM_logit/u"])
        new_u[prefix + "CAM_logit/u"] = u_new
    cam_logit, h = _tf1_cam(h, cam_k, W[prefix + "CAM_logit/bias"])
    h = tf1_conv(h, W[prefix + "conv_1x1/conv2d/kernel"], W[prefix + "conv_1x1/conv2d/bias"], 1, 0)
    h = leaky_relu(h, 0.2)
    heatmap = h.sum(axis=-1)
    logit = snconv(h, "D_logit", 1)
    return logit, cam_logit, heatmap, new_u


def tf1_discriminator(weights, x, scope="discriminator_A", ch=64, n_dis=6, sn=True):
    """TF1 UGATIT.discriminator (local + global heads; ``ch`` is implied by the weights).

    Returns dict: 'logits' [local, global] ([N,h,w,1] each), 'cam_logits' [local, global]
    ([N,2]), 'heatmaps' [local, global] ([N,h,w]), 'u' {full name of u: u_new [1,out]}
    (empty when sn=False)."""
    out = {"logits": [], "cam_logits": [], "heatmaps": [], "u": {}}
    for head, n_down in (("local", n_dis - 3), ("global", n_dis - 1)):
        lg, cam, hm, nu = _tf1_dis_head(weights, x, f"{scope}/{head}/", n_down, sn)
        out["logits"].append(lg)
        out["cam_logits"].append(cam)
        out["heatmaps"].append(hm)
        out["u"].update(nu)
    return out


# ----------------------------------------------------------------------------------------
# PyTorch variant: keys, shapes and forward passes
# ----------------------------------------------------------------------------------------


def torch_generator_keys(light, ch, n_res, img_size, img_ch=3):
    """networks.ResnetGenerator state_dict key -> shape."""
    s = {}
    c = ch
    s["DownBlock.1.weight"] = (c, img_ch, 7, 7)
    for idx in (5, 9):  # Sequential: pad, conv, IN, ReLU per stage
        s[f"DownBlock.{idx}.weight"] = (2 * c, c, 3, 3)
        c *= 2
    for k in range(n_res):  # ResnetBlocks follow at index 12
        s[f"DownBlock.{12 + k}.conv_block.1.weight"] = (c, c, 3, 3)
        s[f"DownBlock.{12 + k}.conv_block.5.weight"] = (c, c, 3, 3)
    s["gap_fc.weight"] = (1, c)
    s["gmp_fc.weight"] = (1, c)
    s["conv1x1.weight"] = (c, 2 * c, 1, 1)
    s["conv1x1.bias"] = (c,)
    fc_in = c if light else (img_size // 4) * (img_size // 4) * c
    s["FC.0.weight"] = (c, fc_in)
    s["FC.2.weight"] = (c, c)
    s["gamma.weight"] = (c, c)
    s["beta.weight"] = (c, c)
    for k in range(1, n_res + 1):
        s[f"UpBlock1_{k}.norm1.rho"] = (1, c, 1, 1)
        s[f"UpBlock1_{k}.conv1.weight"] = (c, c, 3, 3)
        s[f"UpBlock1_{k}.norm2.rho"] = (1, c, 1, 1)
        s[f"UpBlock1_{k}.conv2.weight"] = (c, c, 3, 3)
    for conv_i, norm_i in ((2, 3), (7, 8)):
        s[f"UpBlock2.{conv_i}.weight"] = (c // 2, c, 3, 3)
        c //= 2
        for nm in ("rho", "gamma", "beta"):
            s[f"UpBlock2.{norm_i}.{nm}"] = (1, c, 1, 1)
    s["UpBlock2.11.weight"] = (3, c, 7, 7)
    return s


def torch_discriminator_keys(ch, n_layers, img_ch=3):
    """networks.Discriminator state_dict key -> shape (weight_u / weight_v are buffers)."""
    s = {}

    def snconv(key, cin, cout, bias=True):
        if bias:
            s[key + ".bias"] = (cout,)
        s[key + ".weight_orig"] = (cout, cin, 4, 4)
        s[key + ".weight_u"] = (cout,)
        s[key + ".weight_v"] = (cin * 16,)

    snconv("model.1", img_ch, ch)
    c = ch
    for i in range(1, n_layers - 2):
        snconv(f"model.{1 + 3 * i}", c, 2 * c)
        c *= 2
    snconv(f"model.{1 + 3 * (n_layers - 2)}", c, 2 * c)
    c *= 2
    for fc in ("gap_fc", "gmp_fc"):
        s[fc + ".weight_orig"] = (1, c)
        s[fc + ".weight_u"] = (1,)
        s[fc + ".weight_v"] = (c,)
    s["conv1x1.weight"] = (c, 2 * c, 1, 1)
    s["conv1x1.bias"] = (c,)
    snconv("conv", c, 1, bias=False)
    return s


def oihw_to_hwio(w):
    return np.transpose(_f64(w), (2, 3, 1, 0))


def torch_mlp_input(h_nhwc, light):
    """Input of the torch FC block: light = adaptive avg pool [N, C]; full = x.view(N, -1)
    of the NCHW map, i.e. (c, h, w) order [N, C*H*W]."""
    h = _f64(h_nhwc)
    if light:
        return h.mean(axis=(1, 2))
    return np.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)


def _torch_conv(x, w_oihw, stride=1, pad=0, bias=None):
    if pad:
        x = reflect_pad(x, pad, pad, pad, pad)
    return conv2d(x, oihw_to_hwio(w_oihw), stride, bias)


def torch_generator(state, x_nhwc, light=True, ch=64, n_res=4, img_size=256):
    """networks.ResnetGenerator.forward, NHWC in/out (``ch``/``img_size`` are implied by
    the state shapes). Returns (image [N,H,W,3], cam_logit [N,2], heatmap [N,H/4,W/4])."""
    S = {k: _f64(v) for k, v in state.items()}
    h = _f64(x_nhwc)
    h = relu(instance_norm(_torch_conv(h, S["DownBlock.1.weight"], 1, 3)))
    for idx in (5, 9):
        h = relu(instance_norm(_torch_conv(h, S[f"DownBlock.{idx}.weight"], 2, 1)))
    for k in range(n_res):
        b = f"DownBlock.{12 + k}.conv_block."
        y = relu(instance_norm(_torch_conv(h, S[b + "1.weight"], 1, 1)))
        y = instance_norm(_torch_conv(y, S[b + "5.weight"], 1, 1))
        h = h + y

    gap_w = S["gap_fc.weight"][0]  # [C]
    gmp_w = S["gmp_fc.weight"][0]
    gap_logit = h.mean(axis=(1, 2)) @ gap_w
    gmp_logit = h.max(axis=(1, 2)) @ gmp_w
    cam_logit = np.stack([gap_logit, gmp_logit], axis=-1)
    h = np.concatenate([h * gap_w, h * gmp_w], axis=-1)
    h = relu(_torch_conv(h, S["conv1x1.weight"], 1, 0, S["conv1x1.bias"]))
    heatmap = h.sum(axis=-1)

    m = torch_mlp_input(h, light)
    m = relu(m @ S["FC.0.weight"].T)
    m = relu(m @ S["FC.2.weight"].T)
    gamma = m @ S["gamma.weight"].T
    beta = m @ S["beta.weight"].T

    for k in range(1, n_res + 1):
        b = f"UpBlock1_{k}."
        y = _torch_conv(h, S[b + "conv1.weight"], 1, 1)
        y = relu(torch_adailn(y, S[b + "norm1.rho"], gamma, beta))
        y = _torch_conv(y, S[b + "conv2.weight"], 1, 1)
        y = torch_adailn(y, S[b + "norm2.rho"], gamma, beta)
        h = h + y

    for conv_i, norm_i in ((2, 3), (7, 8)):
        h = upsample_nearest2x(h)
        h = _torch_conv(h, S[f"UpBlock2.{conv_i}.weight"], 1, 1)
        q = f"UpBlock2.{norm_i}."
        h = relu(torch_iln(h, S[q + "rho"], S[q + "gamma"], S[q + "beta"]))
    img = np.tanh(_torch_conv(h, S["UpBlock2.11.weight"], 1, 3))
    return img, cam_logit, heatmap


def torch_discriminator(state, x_nhwc, n_layers=7, training=True):
    """networks.Discriminator.forward, NHWC in/out. Spectral norm per
    torch.nn.utils.spectral_norm (one power iteration when training).

    Returns dict: 'logit' [N,h,w,1], 'cam_logit' [N,2], 'heatmap' [N,h,w],
    'updates' {state key: new value} for every weight_u / weight_v (unchanged values
    when training=False)."""
    S = {k: _f64(v) for k, v in state.items()}
    updates = {}

    def sn(key):
        w, u, v = sn_torch(S[key + ".weight_orig"], S[key + ".weight_u"], S[key + ".weight_v"], training)
        updates[key + ".weight_u"] = u
        updates[key + ".weight_v"] = v
        return w

    h = _f64(x_nhwc)
    for j in range(n_layers - 1):
        key = f"model.{1 + 3 * j}"
        stride = 2 if j < n_layers - 2 else 1
        h = leaky_relu(_torch_conv(h, sn(key), stride, 1, S[key + ".bias"]), 0.2)

    gap_w_sn = sn("gap_fc")[0]  # normalised, for the logit
    gmp_w_sn = sn("gmp_fc")[0]
    gap_logit = h.mean(axis=(1, 2)) @ gap_w_sn
    gmp_logit = h.max(axis=(1, 2)) @ gmp_w_sn
    cam_logit = np.stack([gap_logit, gmp_logit], axis=-1)
    # parameters()[0] of an SN module is weight_orig: the map is scaled by the RAW weight
    h = np.concatenate([h * S["gap_fc.weight_orig"][0], h * S["gmp_fc.weight_orig"][0]], axis=-1)
    h = leaky_relu(_torch_conv(h, S["conv1x1.weight"], 1, 0, S["conv1x1.bias"]), 0.2)
    heatmap = h.sum(axis=-1)
    logit = _torch_conv(h, sn("conv"), 1, 1)
    return {"logit": logit, "cam_logit": cam_logit, "heatmap": heatmap, "updates": updates}


# ----------------------------------------------------------------------------------------
# Shapes, counts and random weights
# ----------------------------------------------------------------------------------------


def is_power_iteration_vector(name):
    """True for TF1 '.../u' and torch '...weight_u' / '...weight_v' (not trainable)."""
    return name.endswith("/u") or name.endswith(".weight_u") or name.endswith(".weight_v")


def count_params(names_to_shapes):
    """Sum of sizes, excluding spectral-norm u / v vectors."""
    return int(sum(int(np.prod(s)) for k, s in names_to_shapes.items() if not is_power_iteration_vector(k)))


def tf1_patch_map_sizes(img_size, n_dis):
    """(local, global) patch-logit side at img_size (stride-1 4x4 convs keep the size)."""
    return img_size // 2 ** (n_dis - 3), img_size // 2 ** (n_dis - 1)


def torch_patch_map_size(img_size, n_layers):
    """Patch-logit side: n_layers-2 stride-2 4x4 convs (pad 1 each side), then two 4x4
    stride-1 convs with pad (1, 1), each shrinking the side by 1."""
    s = img_size
    for _ in range(n_layers - 2):
        s = (s + 2 - 4) // 2 + 1
    return s - 2


def random_weights(names_to_shapes, rng, kernel_std=0.02, norm_std=0.1):
    """Random float64 weights for a name/key -> shape dict.

    kernels / weights / weight_orig / biases: N(0, kernel_std); rho: U[0, 1];
    norm gamma: 1 + N(0, norm_std); norm beta: N(0, norm_std); TF1 u: N(0, 1);
    torch weight_u / weight_v: unit-norm N(0, 1) vectors (as torch initialises them)."""
    out = {}
    for name, shape in names_to_shapes.items():
        leaf = name.replace(".", "/").split("/")[-1]
        if name.endswith(".weight_u") or name.endswith(".weight_v"):
            val = normalize_torch(rng.standard_normal(shape))
        elif leaf == "u":
            val = rng.standard_normal(shape)
        elif leaf == "rho":
            val = rng.uniform(0.0, 1.0, shape)
        elif leaf == "gamma":
            val = 1.0 + norm_std * rng.standard_normal(shape)
        elif leaf == "beta":
            val = norm_std * rng.standard_normal(shape)
        elif leaf in ("kernel", "weight", "weight_orig", "bias"):
            val = kernel_std * rng.standard_normal(shape)
        else:
            raise KeyError(f"unknown parameter kind: {name}")
        out[name] = np.asarray(val, dtype=np.float64)
    return out
