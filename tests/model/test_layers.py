"""Self-tests of the numpy float64 reference (tests/reference/np_reference.py). numpy only, fast."""

import os
import sys

import numpy as np
import pytest

from tests.reference import np_reference as R


# ------------------------------------------------------------------ parameter counts


def test_tf1_generator_param_counts():
    assert R.count_params(R.tf1_generator_names(True, 64, 4, 256)) == 10_600_388
    assert R.count_params(R.tf1_generator_names(False, 64, 4, 256)) == 278_970_308


def test_tf1_discriminator_param_count():
    names = R.tf1_discriminator_names(64, 6, sn=True)
    trainable = R.count_params(names)
    n_u = sum(int(np.prod(s)) for k, s in names.items() if k.endswith("/u"))
    # 56,423,176 is every variable of one domain's D (local + global) including the
    # non-trainable u vectors (4,996 values); the trainable part is 56,418,180.
    assert trainable + n_u == 56_423_176
    assert trainable == 56_418_180
    names_nosn = R.tf1_discriminator_names(64, 6, sn=False)
    assert R.count_params(names_nosn) == trainable
    assert not any(k.endswith("/u") for k in names_nosn)


def test_torch_param_counts():
    assert R.count_params(R.torch_generator_keys(True, 64, 4, 256)) == 10_589_888
    assert R.count_params(R.torch_discriminator_keys(64, 7)) == 53_130_176
    assert R.count_params(R.torch_discriminator_keys(64, 5)) == 3_290_560


def test_some_names_and_shapes():
    g = R.tf1_generator_names(False, 64, 4, 256)
    assert g["generator_B/MLP/linear_0/dense/kernel"] == (64 * 64 * 256, 256)
    assert g["generator_B/CAM_logit/kernel"] == (256, 1)
    assert g["generator_B/CAM_logit/bias"] == (1,)
    assert g["generator_B/conv_1x1/conv2d/kernel"] == (1, 1, 512, 256)
    assert g["generator_B/adaptive_resblock3/res2/instance_layer_norm/rho"] == (256,)
    assert g["generator_B/resblock_0/res1/instance_norm/gamma"] == (256,)
    assert g["generator_B/layer_ins_norm_1/rho"] == (64,)
    assert g["generator_B/G_logit/conv2d/kernel"] == (7, 7, 64, 3)
    d = R.tf1_discriminator_names(64, 6, scope="discriminator_B")
    assert d["discriminator_B/global/conv_4/kernel"] == (4, 4, 512, 1024)
    assert d["discriminator_B/global/conv_last/kernel"] == (4, 4, 1024, 2048)
    assert d["discriminator_B/local/conv_last/u"] == (1, 512)
    assert d["discriminator_B/global/D_logit/kernel"] == (4, 4, 2048, 1)
    assert "discriminator_B/local/conv_3/kernel" not in d
    t = R.torch_generator_keys(False, 64, 4, 256)
    assert t["FC.0.weight"] == (256, 64 * 64 * 256)
    assert t["DownBlock.15.conv_block.5.weight"] == (256, 256, 3, 3)
    assert t["UpBlock2.8.gamma"] == (1, 64, 1, 1)
    td = R.torch_discriminator_keys(64, 7)
    assert td["model.16.weight_orig"] == (2048, 1024, 4, 4)
    assert td["conv.weight_v"] == (2048 * 16,)
    assert "conv.bias" not in td and "gap_fc.bias" not in td


# ------------------------------------------------------------------ primitives


def test_tf1_conv_pads():
    assert R.tf1_conv_pads(3, 2, 1) == (1, 0)
    assert R.tf1_conv_pads(4, 1, 1) == (1, 2)
    assert R.tf1_conv_pads(4, 2, 1) == (1, 1)
    assert R.tf1_conv_pads(7, 1, 3) == (3, 3)
    assert R.tf1_conv_pads(1, 1, 0) == (0, 0)


def _naive_conv(x, k, s):
    n, h, w, _ = x.shape
    kh, kw, _, co = k.shape
    ho, wo = (h - kh) // s + 1, (w - kw) // s + 1
    out = np.zeros((n, ho, wo, co))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                patch = x[b, i * s : i * s + kh, j * s : j * s + kw, :]
                out[b, i, j] = np.tensordot(patch, k, axes=([0, 1, 2], [0, 1, 2]))
    return out


@pytest.mark.parametrize("kk,s", [(3, 1), (3, 2), (4, 2), (4, 1), (1, 1), (7, 1)])
def test_conv2d_matches_naive(kk, s):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 11, 10, 3))
    k = rng.standard_normal((kk, kk, 3, 4))
    b = rng.standard_normal(4)
    np.testing.assert_allclose(R.conv2d(x, k, s, b), _naive_conv(x, k, s) + b, atol=1e-12)


def test_pads_and_upsample():
    x = np.arange(2 * 4 * 5 * 1, dtype=float).reshape(2, 4, 5, 1)
    p = R.reflect_pad(x, 1, 2, 2, 1)
    assert p.shape == (2, 7, 8, 1)
    # reflect does not repeat the edge
    np.testing.assert_array_equal(p[:, 0, 2:7], x[:, 1])
    np.testing.assert_array_equal(p[:, 5, 2:7], x[:, 2])
    np.testing.assert_array_equal(p[:, 6, 2:7], x[:, 1])
    np.testing.assert_array_equal(p[:, 1:5, 0], x[:, :, 2])
    z = R.zero_pad(x, 1, 0, 0, 1)
    assert z.shape == (2, 5, 6, 1) and z[:, 0].sum() == 0 and z[:, :, -1].sum() == 0
    u = R.upsample_nearest2x(x)
    assert u.shape == (2, 8, 10, 1)
    np.testing.assert_array_equal(u[:, 1::2, 1::2], x)
    np.testing.assert_array_equal(u[:, ::2, 1::2], x)


def test_instance_norm_and_adalin():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 6, 4)) * 3 + 1
    gamma = rng.standard_normal((2, 4))
    beta = rng.standard_normal((2, 4))
    inn = R.instance_norm(x)
    np.testing.assert_allclose(inn.mean(axis=(1, 2)), 0, atol=1e-12)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(inn, (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(var + 1e-5), atol=1e-12)
    ones = np.ones(4)
    expect = inn * gamma[:, None, None, :] + beta[:, None, None, :]
    # rho = 1 without smoothing is instance norm (TF1 biased form)
    np.testing.assert_allclose(R.tf1_adalin(x, ones, gamma, beta, smoothing=False), expect, atol=1e-12)
    # smoothing uses clip(rho - 0.1): rho = 1 -> 0.9, rho = 0.05 -> 0
    ln = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + 1e-5)
    mix = 0.9 * inn + 0.1 * ln
    np.testing.assert_allclose(
        R.tf1_adalin(x, ones, gamma, beta, smoothing=True), mix * gamma[:, None, None, :] + beta[:, None, None, :], atol=1e-12
    )
    np.testing.assert_allclose(R.tf1_adalin(x, 0.05 * ones, 1.0, 0.0, smoothing=True), ln, atol=1e-12)
    # rho = 0 is layer norm; LIN has no smoothing
    np.testing.assert_allclose(R.tf1_lin(x, 0 * ones, ones, 0 * ones), ln, atol=1e-12)
    # torch forms use unbiased (N-1) variance
    in_u = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True, ddof=1) + 1e-5)
    rho_t = np.ones((1, 4, 1, 1))
    np.testing.assert_allclose(R.torch_adailn(x, rho_t, gamma, beta), in_u * gamma[:, None, None, :] + beta[:, None, None, :], atol=1e-12)
    ln_u = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(1, 2, 3), keepdims=True, ddof=1) + 1e-5)
    np.testing.assert_allclose(R.torch_iln(x, 0 * rho_t, rho_t, 0 * rho_t), ln_u, atol=1e-12)


def test_leaky_relu():
    x = np.array([-2.0, -0.5, 0.0, 3.0])
    np.testing.assert_array_equal(R.leaky_relu(x, 0.2), [-0.4, -0.1, 0.0, 3.0])
    np.testing.assert_array_equal(R.relu(x), [0, 0, 0, 3.0])


# ------------------------------------------------------------------ spectral norm


def test_sn_tf1_converges_to_largest_singular_value():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 3, 4, 6))
    u = rng.standard_normal((1, 6))
    for _ in range(300):
        wn, u, sigma = R.sn_tf1(w, u)
    smax = np.linalg.svd(w.reshape(-1, 6), compute_uv=False)[0]
    assert abs(sigma - smax) < 1e-9 * smax
    assert abs(np.linalg.svd(wn.reshape(-1, 6), compute_uv=False)[0] - 1.0) < 1e-9
    assert u.shape == (1, 6) and abs(np.linalg.norm(u) - 1) < 1e-12


def test_sn_tf1_dense_cam_kernel_is_unit_norm():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((16, 1))
    wn, u, sigma = R.sn_tf1(w, rng.standard_normal((1, 1)))
    np.testing.assert_allclose(sigma, np.linalg.norm(w), rtol=1e-12)
    np.testing.assert_allclose(wn, w / np.linalg.norm(w), rtol=1e-12)


def test_sn_torch_converges_and_eval_mode():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 4, 4, 4))
    u = R.normalize_torch(rng.standard_normal(6))
    v = R.normalize_torch(rng.standard_normal(64))
    wn0, u0, v0 = R.sn_torch(w, u, v, training=False)
    np.testing.assert_array_equal(u0, u)
    np.testing.assert_allclose(wn0, w / (u @ (w.reshape(6, -1) @ v)), rtol=1e-12)
    for _ in range(300):
        wn, u, v = R.sn_torch(w, u, v, training=True)
    smax = np.linalg.svd(w.reshape(6, -1), compute_uv=False)[0]
    np.testing.assert_allclose(np.linalg.svd(wn.reshape(6, -1), compute_uv=False)[0], 1.0, rtol=1e-9)
    np.testing.assert_allclose(u @ (w.reshape(6, -1) @ v), smax, rtol=1e-9)


def test_sn_tf1_grad_vs_finite_differences():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((2, 2, 3, 4))
    u = rng.standard_normal((1, 4))
    g = rng.standard_normal(w.shape)
    # u_new and v are stop-gradiented: freeze them at their values for w
    w2 = w.reshape(-1, 4)
    v = R.l2_normalize_tf(u @ w2.T)
    un = R.l2_normalize_tf(v @ w2)

    def f(wp):
        wp2 = wp.reshape(-1, 4)
        return np.sum(g.reshape(wp2.shape) * wp2) / float((v @ wp2 @ un.T)[0, 0])

    num = np.zeros_like(w)
    h = 1e-6
    for idx in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[idx] = h
        num[idx] = (f(w + e) - f(w - e)) / (2 * h)
    np.testing.assert_allclose(R.sn_tf1_grad(w, u, g), num, atol=1e-7, rtol=1e-6)
    # and the forward value of the loss agrees with sn_tf1
    np.testing.assert_allclose(f(w), np.sum(g * R.sn_tf1(w, u)[0]), rtol=1e-12)


# ------------------------------------------------------------------ forward passes


def test_patch_map_sizes_analytic():
    assert R.tf1_patch_map_sizes(256, 6) == (32, 8)
    assert R.torch_patch_map_size(256, 7) == 6
    assert R.torch_patch_map_size(256, 5) == 30


def test_patch_map_sizes_real_forward_256():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (1, 256, 256, 3))
    w = R.random_weights(R.tf1_discriminator_names(1, 6, sn=True), rng)
    out = R.tf1_discriminator(w, x, "discriminator_A", 1, 6, sn=True)
    assert out["logits"][0].shape == (1, 32, 32, 1)
    assert out["logits"][1].shape == (1, 8, 8, 1)
    assert out["heatmaps"][0].shape == (1, 32, 32) and out["heatmaps"][1].shape == (1, 8, 8)
    for n_layers, side in ((7, 6), (5, 30)):
        st = R.random_weights(R.torch_discriminator_keys(1, n_layers), rng)
        o = R.torch_discriminator(st, x, n_layers, training=True)
        assert o["logit"].shape == (1, side, side, 1)
        assert o["heatmap"].shape == (1, side + 1, side + 1)


@pytest.mark.parametrize("light", [True, False])
def test_tf1_generator_tiny(light):
    rng = np.random.default_rng(8)
    ch, n_res, size = 4, 4, 32
    names = R.tf1_generator_names(light, ch, n_res, size, scope="generator_A")
    w = R.random_weights(names, rng, kernel_std=0.2)
    x = rng.uniform(-1, 1, (2, size, size, 3))
    img, cam, hm = R.tf1_generator(w, x, "generator_A", light, ch, n_res, smoothing=True)
    assert img.shape == (2, size, size, 3) and cam.shape == (2, 2) and hm.shape == (2, size // 4, size // 4)
    assert np.all(np.isfinite(img)) and np.all(np.abs(img) <= 1)
    assert np.all(np.isfinite(cam)) and np.all(hm >= 0)
    # each sample is processed independently (instance / layer norm per sample)
    img0, cam0, hm0 = R.tf1_generator(w, x[:1], "generator_A", light, ch, n_res, smoothing=True)
    np.testing.assert_allclose(img0, img[:1], atol=1e-12)
    # smoothing changes the output
    img_ns, _, _ = R.tf1_generator(w, x, "generator_A", light, ch, n_res, smoothing=False)
    assert np.abs(img_ns - img).max() > 1e-8


@pytest.mark.parametrize("sn", [True, False])
def test_tf1_discriminator_tiny(sn):
    rng = np.random.default_rng(9)
    ch, n_dis, size = 4, 4, 32
    names = R.tf1_discriminator_names(ch, n_dis, sn=sn, scope="discriminator_B")
    w = R.random_weights(names, rng)
    x = rng.uniform(-1, 1, (2, size, size, 3))
    out = R.tf1_discriminator(w, x, "discriminator_B", ch, n_dis, sn=sn)
    loc, glob = R.tf1_patch_map_sizes(size, n_dis)
    assert out["logits"][0].shape == (2, loc, loc, 1) and out["logits"][1].shape == (2, glob, glob, 1)
    assert all(c.shape == (2, 2) for c in out["cam_logits"])
    assert out["heatmaps"][0].shape == (2, loc, loc) and out["heatmaps"][1].shape == (2, glob, glob)
    for a in out["logits"] + out["cam_logits"] + out["heatmaps"]:
        assert np.all(np.isfinite(a))
    if sn:
        assert set(out["u"]) == {k for k in names if k.endswith("/u")}
        for k, v in out["u"].items():
            assert v.shape == names[k]
    else:
        assert out["u"] == {}


@pytest.mark.parametrize("light", [True, False])
def test_torch_generator_tiny(light):
    rng = np.random.default_rng(10)
    ch, n_res, size = 4, 2, 32
    st = R.random_weights(R.torch_generator_keys(light, ch, n_res, size), rng, kernel_std=0.2)
    x = rng.uniform(-1, 1, (2, size, size, 3))
    img, cam, hm = R.torch_generator(st, x, light, ch, n_res, size)
    assert img.shape == (2, size, size, 3) and cam.shape == (2, 2) and hm.shape == (2, size // 4, size // 4)
    assert np.all(np.isfinite(img)) and np.all(np.isfinite(cam)) and np.all(hm >= 0)


def test_mlp_input_flatten_orders():
    rng = np.random.default_rng(11)
    h = rng.standard_normal((2, 3, 4, 5))  # N, H, W, C
    tf_in = R.tf1_mlp_input(h, light=False)
    th_in = R.torch_mlp_input(h, light=False)
    assert tf_in.shape == th_in.shape == (2, 60)
    for y, x_, c in [(0, 0, 1), (2, 3, 4), (1, 2, 0)]:
        assert tf_in[1, (y * 4 + x_) * 5 + c] == h[1, y, x_, c]  # (h, w, c)
        assert th_in[1, (c * 3 + y) * 4 + x_] == h[1, y, x_, c]  # (c, h, w)
    np.testing.assert_allclose(R.tf1_mlp_input(h, True), h.mean(axis=(1, 2)))
    np.testing.assert_allclose(R.torch_mlp_input(h, True), h.mean(axis=(1, 2)))


@pytest.mark.parametrize("training", [True, False])
def test_torch_discriminator_tiny(training):
    rng = np.random.default_rng(12)
    ch, n_layers, size = 4, 4, 32
    keys = R.torch_discriminator_keys(ch, n_layers)
    st = R.random_weights(keys, rng)
    x = rng.uniform(-1, 1, (2, size, size, 3))
    o = R.torch_discriminator(st, x, n_layers, training)
    side = R.torch_patch_map_size(size, n_layers)
    assert o["logit"].shape == (2, side, side, 1) and o["cam_logit"].shape == (2, 2)
    assert o["heatmap"].shape == (2, side + 1, side + 1)
    assert all(np.all(np.isfinite(o[k])) for k in ("logit", "cam_logit", "heatmap"))
    assert set(o["updates"]) == {k for k in keys if k.endswith((".weight_u", ".weight_v"))}
    if not training:
        for k, v in o["updates"].items():
            np.testing.assert_array_equal(v, st[k])


def test_torch_discriminator_cam_scales_by_raw_weight():
    """Scaling gap_fc.weight_orig by a constant leaves the SN-normalised CAM logit
    unchanged (up to the power-iteration estimate) but changes the fused map."""
    rng = np.random.default_rng(13)
    keys = R.torch_discriminator_keys(2, 4)
    st = R.random_weights(keys, rng)
    x = rng.uniform(-1, 1, (1, 32, 32, 3))
    a = R.torch_discriminator(st, x, 4, training=True)
    st2 = dict(st)
    st2["gap_fc.weight_orig"] = 3.0 * st["gap_fc.weight_orig"]
    b = R.torch_discriminator(st2, x, 4, training=True)
    np.testing.assert_allclose(a["cam_logit"], b["cam_logit"], rtol=1e-12)
    assert np.abs(a["heatmap"] - b["heatmap"]).max() > 1e-8
