"""The pytorch variant trains like the PyTorch original (what can be checked without torch):
spectral-norm power iterations per D / G step in torch's number and order against a numpy
float64 reference of torch.nn.utils.spectral_norm, printed losses without the weight-decay
term, torch.optim.Adam's epsilon and weight_decay, and the per-step lr decay. The side by side
run with torch itself is tools/peer/pytorch_fidelity.py (docs/variants-fidelity.md)."""

import numpy as np
import pytest
import tensorflow as tf

from ugatit_tf.config import Config
from ugatit_tf.train.optimizer import FusedAdam, learning_rate
from ugatit_tf.train.trainer import Trainer

L2 = 1e-4


def tiny(tmp_path, variant):
    return Config(dataset="fixed", light=True, img_size=32, ch=4, n_res=2, n_dis=4, epoch=1,
                  iteration=4, print_freq=100, save_freq=100, seed=7, variant=variant,
                  checkpoint_dir=str(tmp_path / "ck"), log_dir=str(tmp_path / "logs"),
                  sample_dir=str(tmp_path / "samples"))


def fixed_images(seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(2)]


def make_trainer(tmp_path, variant):
    images = fixed_images(1)
    datasets = [tf.data.Dataset.from_tensors(x).repeat() for x in images]
    return Trainer(tiny(tmp_path, variant), log=lambda *a: None, datasets=datasets), images


def sn_layers(trainer):
    """Every spectral-normalised kernel of both discriminators: (name, SpectralNorm)."""
    out = []
    for D in trainer.nets.discriminators:
        for head in (D.local, D.global_):
            layers = [*head.convs, head.conv_last, head.d_logit]
            cam = head.cam
            layers += ([cam.gap_layer, cam.gmp_layer] if hasattr(cam, "gap_layer") else [cam])
            out += [(f"{D.name}/{head.name}/{layer.name}", layer.sn) for layer in layers]
    return out


def snapshot(trainer):
    return {name: (sn.kernel.numpy().astype(np.float64), sn.u.numpy().astype(np.float64),
                   None if sn.v is None else sn.v.numpy().astype(np.float64))
            for name, sn in sn_layers(trainer)}


def _normalize(x):
    return x / max(np.linalg.norm(x), 1e-12)


def torch_iteration(w, u, v):
    """One power iteration of torch.nn.utils.spectral_norm in training mode (float64): the
    weight as [out, in * kh * kw] in torch's (out, in, kh, kw) order, v = W^T u / |.|,
    u = W v / |.|."""
    w_mat = np.transpose(w, (3, 2, 0, 1)).reshape(w.shape[-1], -1) if w.ndim == 4 else w.T
    v = _normalize(w_mat.T @ u)
    u = _normalize(w_mat @ v)
    return u, v


def tf1_iteration(w, u, v):
    """One power iteration of the TF1 original's spectral_norm: u [1, out],
    v_hat = u W^T / |.|, u_hat = v_hat W / |.| with W [-1, out]."""
    w_mat = w.reshape(-1, w.shape[-1])
    v_hat = _normalize(u @ w_mat.T)
    return _normalize(v_hat @ w_mat), None


def iterate(step, w, u, v, times):
    for _ in range(times):
        u, v = step(w, u, v)
    return u, v


def check_iterations(before, after, step, times):
    """after's u (and v) equal `times` iterations from before's on before's kernel; returns
    the largest distance of after's u to one iteration fewer (to show the count matters)."""
    fewer = 0.0
    for name, (w, u, v) in before.items():
        u_ref, v_ref = iterate(step, w, u, v, times)
        np.testing.assert_allclose(after[name][1], u_ref, atol=2e-5, err_msg=name)
        if v_ref is not None:
            np.testing.assert_allclose(after[name][2], v_ref, atol=2e-5, err_msg=name)
        u_fewer, _ = iterate(step, w, u, v, times - 1)
        fewer = max(fewer, float(np.abs(after[name][1] - u_fewer).max()))
    return fewer


@pytest.mark.slow
@pytest.mark.parametrize("variant,step,d_calls", [("pytorch", torch_iteration, 2),
                                                   ("tf1", tf1_iteration, 1)])
def test_power_iterations_per_d_and_g_step(tmp_path, variant, step, d_calls):
    """pytorch: the D step calls each discriminator on the real batch, then on the fake one,
    one power iteration per call (u and v updated in between), both on the kernel before the
    update; the G step one more on the updated kernel. tf1 (unchanged): one per step."""
    trainer, (a, b) = make_trainer(tmp_path, variant)
    lr = tf.constant(1e-4, tf.float32)
    start = snapshot(trainer)
    trainer.d_step(a, b, lr)
    after_d = snapshot(trainer)
    fewer = check_iterations(start, after_d, step, d_calls)
    if d_calls > 1:
        assert fewer > 1e-3  # one iteration fewer would be visibly different
    for name in start:  # the D update moved every kernel
        assert np.abs(after_d[name][0] - start[name][0]).max() > 1e-6, name
    trainer.g_step(a, b, lr)
    after_g = snapshot(trainer)
    check_iterations(after_d, after_g, step, 1)
    for name in start:  # the G step leaves the discriminators' kernels alone
        np.testing.assert_array_equal(after_g[name][0], after_d[name][0])


def l2_term(models, variant):
    """1e-4 * sum(p^2) / 2: every trainable variable (pytorch, Adam weight_decay) or every
    kernel (tf1, l2_regularizer)."""
    total = 0.0
    for m in models:
        for v in m.trainable_variables:
            if variant == "pytorch" or v.path.endswith("kernel"):
                total += float(np.sum(v.numpy().astype(np.float64) ** 2))
    return L2 * total / 2


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["pytorch", "tf1"])
def test_printed_losses(tmp_path, variant):
    """pytorch prints the original's losses, without the L2 term that stands in for Adam's
    weight_decay; tf1 prints the TF1 losses, which include the L2 regularisation."""
    trainer, (a, b) = make_trainer(tmp_path, variant)
    lr = tf.constant(1e-4, tf.float32)
    d_reg = l2_term(trainer.nets.discriminators, variant)
    d = {k: float(v) for k, v in trainer.d_step(a, b, lr).items()}
    g_reg = l2_term(trainer.nets.generators, variant)
    g = {k: float(v) for k, v in trainer.g_step(a, b, lr).items()}
    d_extra = 0.0 if variant == "pytorch" else d_reg
    g_extra = 0.0 if variant == "pytorch" else g_reg
    assert d_reg > 1e-4 and g_reg > 1e-4  # the term is big enough to be seen
    assert d["Discriminator_loss"] == pytest.approx(d["D_A_loss"] + d["D_B_loss"] + d_extra,
                                                    rel=1e-6, abs=1e-6)
    assert g["Generator_loss"] == pytest.approx(g["G_A_loss"] + g["G_B_loss"] + g_extra,
                                                rel=1e-6, abs=1e-6)


def torch_adam_reference(p, grads, lr, wd, b1=0.5, b2=0.999, eps=1e-8):
    """torch.optim.Adam (amsgrad off) with weight_decay, in float64, as documented: g += wd p;
    m, v moments; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
    return p


def test_torch_epsilon_adam_matches_torch_with_weight_decay():
    """FusedAdam(torch_epsilon=True) on the loss plus 1e-4 * sum(p^2) / 2 (how the pytorch
    variant stands in for weight_decay) follows torch's Adam, also where the gradients are
    as small as epsilon (where Keras' epsilon placement differs)."""
    rng = np.random.default_rng(3)
    init = (rng.normal(size=(4, 5)) * 1e-4).astype(np.float32)
    grads = [(rng.normal(size=(4, 5)) * 1e-8).astype(np.float32) for _ in range(4)]
    results = {}
    for torch_epsilon in (True, False):
        var = tf.Variable(init)
        opt = FusedAdam(learning_rate=1e-3, beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                        torch_epsilon=torch_epsilon)
        for g in grads:
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(g * var) + L2 * 0.5 * tf.reduce_sum(tf.square(var))
            opt.apply_gradients([(tape.gradient(loss, var), var)])
        results[torch_epsilon] = var.numpy().astype(np.float64)
    ref = torch_adam_reference(init, grads, 1e-3, L2)
    step = np.abs(ref - init).max()
    assert np.abs(results[True] - ref).max() < 1e-3 * step
    assert np.abs(results[False] - ref).max() > 0.1 * step  # the placement matters here


def test_pytorch_lr_decays_per_step_like_the_original_loop():
    """The official loop: from step iteration // 2 + 1 on, lr -= lr0 / (iteration // 2)
    before each update (steps 1-based; our total is epoch * iteration)."""
    cfg = Config(variant="pytorch", epoch=2, iteration=7, lr=2e-4)
    total, lr0 = 14, 2e-4
    lr = lr0
    for step in range(1, total + 1):
        if step > total // 2:
            lr -= lr0 / (total // 2)
        assert learning_rate(cfg, step - 1) == pytest.approx(lr, rel=1e-12, abs=1e-18), step
    assert lr == pytest.approx(0.0, abs=1e-18)
