"""The Keras networks against the independent numpy float64 reference (tests/reference/np_reference.py),
the parameter counts of the originals and the name maps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import np_reference as R
from tests.conftest import tiny_config
from ugatit_tf.config import Config
from ugatit_tf.model.layers import (AdaLIN, LIN, Conv, Dense, InstanceNorm, SpectralNorm,
                                    leaky_relu)
from ugatit_tf.model.networks import (Networks, build_discriminator, build_generator, count_params,
                                regularization_loss, tf1_name_map, torch_name_map)

TOL = 1e-5


@pytest.fixture(autouse=True)
def float64_models(request):
    """Build every model of this file in float64, so the comparison with the float64
    reference checks the math itself (float32 rounding alone reaches 1e-4 on outputs in the
    hundreds)."""
    if request.node.get_closest_marker("float32"):
        yield
        return
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(old_floatx)
    keras.config.set_dtype_policy(old_policy)


# ---------------------------------------------------------------------------
# Loading reference weights into the Keras models through the name maps
# ---------------------------------------------------------------------------

def load_tf1(model, weights):
    names = tf1_name_map(model)
    assert set(names) == set(weights), (set(names) ^ set(weights))
    for name, entry in names.items():
        entry.variable.assign(weights[name].astype(np.float64))


def torch_to_ours(entry, value):
    if entry.layout == "oihw":
        return np.transpose(value, (2, 3, 1, 0))
    if entry.layout == "oi":
        return value.T
    if entry.layout == "oi_chw":
        h, w, c = entry.spatial
        out = value.shape[0]
        return value.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)
    if entry.layout == "c111":
        return value.reshape(-1)
    return value


def load_torch(model, states):
    maps = torch_name_map(model)
    for key, entries in maps.items():
        state = states[key]
        assert set(entries) == set(state), (key, set(entries) ^ set(state))
        for name, entry in entries.items():
            entry.variable.assign(torch_to_ours(entry, state[name]).astype(np.float64))


def image(rng, n, size):
    return rng.uniform(-1, 1, (n, size, size, 3))


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_leaky_relu_output_gradient_gives_tensorflows_bits(dtype):
    """layers.leaky_relu takes its gradient from the output: the same values and gradient bits
    as tf.nn.leaky_relu (which reads the input), zeros, negative zero and tiny values included."""
    x = tf.constant(np.concatenate([np.random.default_rng(0).normal(0, 3, 997),
                                    [0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0]]), dtype)
    dy = tf.constant(np.random.default_rng(1).normal(0, 1, x.shape[0]), dtype)
    out = {}
    for name, f in (("ours", leaky_relu), ("tf", lambda t: tf.nn.leaky_relu(t, 0.2))):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        out[name] = (y, tape.gradient(y, x, output_gradients=dy))
    bits = {"float64": tf.uint64, "float32": tf.uint32, "bfloat16": tf.uint16}[dtype]
    for ours, theirs in zip(out["ours"], out["tf"]):
        np.testing.assert_array_equal(tf.bitcast(ours, bits), tf.bitcast(theirs, bits))


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm(affine):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 3)) * 3 + 1
    layer = InstanceNorm(affine=affine)
    layer.build(x.shape)
    gamma = beta = None
    if affine:
        gamma, beta = rng.normal(size=3), rng.normal(size=3)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    got = layer(tf.constant(x, tf.float64)).numpy()
    np.testing.assert_allclose(got, R.instance_norm(x, gamma, beta), atol=TOL)


@pytest.mark.parametrize("unbiased", [False, True])
def test_lin(unbiased):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 4, 6)) * 2
    layer = LIN(unbiased=unbiased)
    layer.build(x.shape)
    rho, gamma, beta = rng.uniform(size=6), rng.normal(size=6), rng.normal(size=6)
    for var, val in ((layer.rho, rho), (layer.gamma, gamma), (layer.beta, beta)):
        var.assign(val)
    want = (R.torch_iln if unbiased else R.tf1_lin)(x, rho, gamma, beta)
    np.testing.assert_allclose(layer(tf.constant(x, tf.float64)).numpy(), want, atol=TOL)
    assert float(LIN().build((1, 2, 2, 3)) or 0) == 0  # builds without error


@pytest.mark.parametrize("smoothing,unbiased", [(True, False), (False, False), (False, True)])
def test_adalin(smoothing, unbiased):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 5, 6)) * 2 - 1
    gamma, beta = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))  # per sample
    layer = AdaLIN(smoothing=smoothing, unbiased=unbiased)
    rho = np.array([0.0, 0.05, 0.1, 0.5, 0.95, 1.0])
    layer.build(x.shape)
    layer.rho.assign(rho)
    got = layer(tf.constant(x, tf.float64), tf.constant(gamma, tf.float64),
                tf.constant(beta, tf.float64)).numpy()
    if unbiased:
        want = R.torch_adailn(x, rho, gamma, beta)
    else:
        want = R.tf1_adalin(x, rho, gamma, beta, smoothing=smoothing)
    np.testing.assert_allclose(got, want, atol=TOL)


def test_adalin_smoothing_changes_output():
    x = tf.random.normal([1, 4, 4, 3])
    g = tf.ones([1, 3])
    b = tf.zeros([1, 3])
    a, c = AdaLIN(smoothing=True), AdaLIN(smoothing=False)
    assert np.abs(a(x, g, b).numpy() - c(x, g, b).numpy()).max() > 1e-3


def test_rho_initial_values_per_variant():
    tf1 = build_generator(tiny_config(), "generator_B")
    pt = build_generator(tiny_config(variant="pytorch"), "generator_B")
    ada_tf1 = tf1.ada_resblocks[0].norm1.rho.numpy()
    ada_pt = pt.ada_resblocks[0].norm1.rho.numpy()
    np.testing.assert_array_equal(ada_tf1, np.ones_like(ada_tf1))
    np.testing.assert_allclose(ada_pt, np.full_like(ada_pt, 0.9))
    np.testing.assert_array_equal(tf1.up_norms[0].rho.numpy(), 0)


def test_spectral_norm_tf1_value_u_update_and_gradient():
    rng = np.random.default_rng(3)
    conv = Conv(5, 4, 2, (1, 1), sn="tf1")
    conv.build((1, 8, 8, 3))
    w = rng.normal(size=(4, 4, 3, 5)) * 0.3
    u = rng.normal(size=(1, 5))
    conv.kernel.assign(w)
    conv.sn_u.assign(u)
    want_w, want_u, _ = R.sn_tf1(w, u)
    # inference: no u update
    got_w = conv.sn.normalized(training=False).numpy()
    np.testing.assert_allclose(got_w, want_w, atol=TOL)
    np.testing.assert_array_equal(conv.sn_u.numpy(), u.astype(np.float64))
    # training: u assigned, gradient flows through sigma with u, v constant
    upstream = rng.normal(size=w.shape)
    with tf.GradientTape() as tape:
        wn = conv.sn.normalized(training=True)
        loss = tf.reduce_sum(wn * tf.constant(upstream, tf.float64))
    grad = tape.gradient(loss, conv.kernel).numpy()
    np.testing.assert_allclose(conv.sn_u.numpy(), want_u, atol=TOL)
    np.testing.assert_allclose(grad, R.sn_tf1_grad(w, u, upstream), atol=1e-4, rtol=1e-4)
    assert not conv.sn_u.trainable and conv.kernel.trainable


def test_spectral_norm_torch_value_and_update():
    rng = np.random.default_rng(4)
    conv = Conv(5, 4, 2, (1, 1), sn="torch")
    conv.build((1, 8, 8, 3))
    w_oihw = rng.normal(size=(5, 3, 4, 4)) * 0.3
    u = R.normalize_torch(rng.normal(size=5))
    v = R.normalize_torch(rng.normal(size=48))
    conv.kernel.assign(np.transpose(w_oihw, (2, 3, 1, 0)))
    conv.sn_u.assign(u)
    conv.sn_v.assign(v)
    for training in (False, True):
        want_w, want_u, want_v = R.sn_torch(w_oihw, conv.sn_u.numpy(), conv.sn_v.numpy(),
                                            training)
        got = conv.sn.normalized(training).numpy()
        np.testing.assert_allclose(got, np.transpose(want_w, (2, 3, 1, 0)), atol=TOL)
        np.testing.assert_allclose(conv.sn_u.numpy(), want_u, atol=TOL)
        np.testing.assert_allclose(conv.sn_v.numpy(), want_v, atol=TOL)


def test_rho_constraint_applied_by_optimizer():
    layer = AdaLIN()
    layer.build((1, 2, 2, 3))
    opt = keras.optimizers.SGD(learning_rate=1.0)
    opt.apply_gradients([(tf.constant([-5.0, 5.0, 0.3]), layer.rho)])
    np.testing.assert_allclose(layer.rho.numpy(), [1.0, 0.0, 0.7], atol=1e-6)


# ---------------------------------------------------------------------------
# Whole networks against the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("light", [True, False])
def test_tf1_generator_matches_reference(light):
    cfg = tiny_config(light=light)
    model = build_generator(cfg, "generator_B")
    rng = np.random.default_rng(10)
    weights = R.random_weights(R.tf1_generator_names(light, cfg.ch, cfg.n_res, cfg.img_size),
                               rng, kernel_std=0.2)
    load_tf1(model, weights)
    x = image(rng, 2, cfg.img_size)
    img, cam, heat = model(tf.constant(x, tf.float64))
    want = R.tf1_generator(weights, x, "generator_B", light=light, ch=cfg.ch, n_res=cfg.n_res)
    for got, ref in zip((img, cam, heat), want):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref, atol=TOL, rtol=1e-5)


@pytest.mark.parametrize("sn", [True, False])
def test_tf1_discriminator_matches_reference(sn):
    cfg = tiny_config(sn=sn, n_dis=5, img_size=64)
    model = build_discriminator(cfg, "discriminator_A")
    rng = np.random.default_rng(11)
    weights = R.random_weights(R.tf1_discriminator_names(cfg.ch, cfg.n_dis, sn=sn), rng,
                               kernel_std=0.2)
    load_tf1(model, weights)
    x = image(rng, 2, cfg.img_size)
    want = R.tf1_discriminator(weights, x, "discriminator_A", ch=cfg.ch, n_dis=cfg.n_dis, sn=sn)
    logits, cams, heats = model(tf.constant(x, tf.float64), training=True)
    for got, ref in zip(logits + cams + heats, want["logits"] + want["cam_logits"] + want["heatmaps"]):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref, atol=TOL, rtol=1e-5)
    names = tf1_name_map(model)
    for name, u in want["u"].items():
        np.testing.assert_allclose(names[name].variable.numpy(), u, atol=TOL)


@pytest.mark.parametrize("light", [True, False])
def test_pytorch_generator_matches_reference(light):
    cfg = tiny_config(light=light, variant="pytorch")
    model = build_generator(cfg, "generator_B")
    rng = np.random.default_rng(12)
    state = R.random_weights(R.torch_generator_keys(light, cfg.ch, cfg.n_res, cfg.img_size), rng,
                             kernel_std=0.2)
    load_torch(model, {"genA2B": state})
    x = image(rng, 2, cfg.img_size)
    out = model(tf.constant(x, tf.float64))
    want = R.torch_generator(state, x, light=light, ch=cfg.ch, n_res=cfg.n_res,
                             img_size=cfg.img_size)
    for got, ref in zip(out, want):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref, atol=TOL, rtol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_pytorch_discriminator_matches_reference(training):
    cfg = tiny_config(variant="pytorch", n_dis=5, img_size=64)
    model = build_discriminator(cfg, "discriminator_B")
    rng = np.random.default_rng(13)
    states = {"disGB": R.random_weights(R.torch_discriminator_keys(cfg.ch, cfg.n_dis + 1), rng,
                                        kernel_std=0.2),
              "disLB": R.random_weights(R.torch_discriminator_keys(cfg.ch, cfg.n_dis - 1), rng,
                                        kernel_std=0.2)}
    load_torch(model, states)
    x = image(rng, 2, cfg.img_size)
    logits, cams, heats = model(tf.constant(x, tf.float64), training=training)
    for i, (key, n_layers) in enumerate((("disLB", cfg.n_dis - 1), ("disGB", cfg.n_dis + 1))):
        want = R.torch_discriminator(states[key], x, n_layers=n_layers, training=training)
        for got, ref in ((logits[i], want["logit"]), (cams[i], want["cam_logit"]),
                         (heats[i], want["heatmap"])):
            assert got.shape == ref.shape
            np.testing.assert_allclose(got.numpy(), ref, atol=TOL, rtol=1e-5)
        entries = torch_name_map(model)[key]
        for name, value in want["updates"].items():
            np.testing.assert_allclose(entries[name].variable.numpy(), value, atol=TOL)


def test_batch_items_are_independent():
    """AdaLIN's gamma/beta are per sample: a batch equals its items run one by one."""
    cfg = tiny_config()
    model = build_generator(cfg, "generator_B")
    x = tf.random.uniform([3, 32, 32, 3], -1, 1, seed=1)
    batch = model(x)[0].numpy()
    for i in range(3):
        np.testing.assert_allclose(model(x[i:i + 1])[0].numpy()[0], batch[i], atol=1e-5)


# ---------------------------------------------------------------------------
# Sizes, counts, name maps
# ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.float32  # 67M parameters: counts and shapes do not depend on the dtype
def test_parameter_counts_light_and_discriminators():
    cfg = Config(light=True)
    assert count_params(build_generator(cfg, "generator_B")) == 10_600_388
    d = build_discriminator(cfg, "discriminator_A")
    # the TF1 figure counts every variable of both heads, spectral-norm u vectors included
    assert sum(v.numpy().size for v in d.variables) == 56_423_176
    assert count_params(d) == 56_418_180
    logits = d(tf.zeros([1, 256, 256, 3]))[0]
    assert [tuple(l.shape[1:3]) for l in logits] == [(32, 32), (8, 8)]

    pt = Config(light=True, variant="pytorch")
    assert count_params(build_generator(pt, "generator_B")) == 10_589_888
    d = build_discriminator(pt, "discriminator_A")
    assert count_params(d.global_) == 53_130_176
    assert count_params(d.local) == 3_290_560
    logits = d(tf.zeros([1, 256, 256, 3]))[0]
    assert [tuple(l.shape[1:3]) for l in logits] == [(30, 30), (6, 6)]


@pytest.mark.slow
@pytest.mark.float32  # 279M parameters: float64 would need twice the memory for nothing
def test_parameter_count_full_generator():
    assert count_params(build_generator(Config(light=False), "generator_B")) == 278_970_308


@pytest.mark.parametrize("light", [True, False])
@pytest.mark.parametrize("sn", [True, False])
def test_tf1_name_maps_complete_and_one_to_one(light, sn):
    cfg = tiny_config(light=light, sn=sn)
    nets = Networks(cfg)
    want_g = R.tf1_generator_names(light, cfg.ch, cfg.n_res, cfg.img_size, scope="generator_A")
    want_d = R.tf1_discriminator_names(cfg.ch, cfg.n_dis, sn=sn, scope="discriminator_B")
    for model, want in ((nets.genB2A, want_g), (nets.disB, want_d)):
        names = tf1_name_map(model)
        assert {k: tuple(v) for k, v in want.items()} == \
            {k: tuple(e.variable.shape) if e.layout != "u_row" else tuple(e.variable.shape)
             for k, e in names.items()}
        variables = [id(e.variable) for e in names.values()]
        assert len(set(variables)) == len(variables) == len(model.variables)


def test_torch_name_maps_complete_and_one_to_one():
    cfg = tiny_config(light=False, variant="pytorch")
    nets = Networks(cfg)
    maps = {**torch_name_map(nets.genA2B), **torch_name_map(nets.disA)}
    assert set(maps) == {"genA2B", "disGA", "disLA"}
    assert set(maps["genA2B"]) == set(R.torch_generator_keys(False, 4, 2, 32))
    assert set(maps["disGA"]) == set(R.torch_discriminator_keys(4, cfg.n_dis + 1))
    assert set(maps["disLA"]) == set(R.torch_discriminator_keys(4, cfg.n_dis - 1))
    for model, keys in ((nets.genA2B, ["genA2B"]), (nets.disA, ["disGA", "disLA"])):
        ids = [id(e.variable) for k in keys for e in maps[k].values()]
        assert len(set(ids)) == len(ids) == len(model.variables)


def test_name_map_refuses_other_variant():
    with pytest.raises(ValueError, match="tf1 variant"):
        tf1_name_map(build_generator(tiny_config(variant="pytorch"), "generator_B"))


def test_regularization_loss_tf1_kernels_only_pytorch_all():
    cfg = tiny_config()
    g = build_generator(cfg, "generator_B")
    kernels = [v.numpy() for v in g.trainable_variables if v.path.endswith("kernel")]
    want = 1e-4 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels) / 2
    assert float(regularization_loss(g, "tf1")) == pytest.approx(want, rel=1e-5)
    everything = 1e-4 * sum(float(np.sum(v.numpy().astype(np.float64) ** 2))
                            for v in g.trainable_variables) / 2
    assert float(regularization_loss(g, "pytorch")) == pytest.approx(everything, rel=1e-5)
    assert everything > want


def test_init_is_normal_002():
    g = build_generator(Config(light=True, img_size=64, ch=16), "generator_B")
    w = g.mlp.linear_1.kernel.numpy()
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    assert np.all(g.conv.bias.numpy() == 0)


def test_checkpoint_holds_every_variable(tmp_path):
    """Without an optimizer in the checkpoint (as the converter writes it), every variable,
    spectral-norm u included, must be saved and restored."""
    from ugatit_tf.model.checkpoints import make_checkpoint
    cfg = tiny_config()
    a, b = Networks(cfg), Networks(cfg)
    prefix = make_checkpoint(a).write(str(tmp_path / "ck"))
    make_checkpoint(b).read(prefix).assert_consumed()
    for m1, m2 in zip(a.generators + a.discriminators, b.generators + b.discriminators):
        assert len(m1.variables) == len(m2.variables)
        for v1, v2 in zip(m1.variables, m2.variables):
            np.testing.assert_array_equal(v1.numpy(), v2.numpy())


# ---------------------------------------------------------------------------
# Other sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_res", [1, 3, 6])
def test_other_n_res_work(n_res):
    g = build_generator(tiny_config(n_res=n_res), "generator_B")
    assert g(tf.zeros([1, 32, 32, 3]))[0].shape == (1, 32, 32, 3)


@pytest.mark.float32
def test_float32_models_match_reference_to_float32_precision():
    """The production dtype: float32 outputs stay within float32 rounding of the reference."""
    assert keras.config.dtype_policy().name == "float32"
    cfg = tiny_config()
    model = build_generator(cfg, "generator_B")
    rng = np.random.default_rng(20)
    weights = R.random_weights(R.tf1_generator_names(True, cfg.ch, cfg.n_res, cfg.img_size),
                               rng, kernel_std=0.1)
    load_tf1(model, weights)
    x = image(rng, 1, cfg.img_size)
    img, cam, heat = model(tf.constant(x, tf.float32))
    assert img.dtype == tf.float32
    want = R.tf1_generator(weights, x, "generator_B", light=True, ch=cfg.ch, n_res=cfg.n_res)
    np.testing.assert_allclose(img.numpy(), want[0], atol=1e-4)
    np.testing.assert_allclose(cam.numpy(), want[1], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# kernels="inference": the forward-only oneDNN normalisations (issue 15)
# ---------------------------------------------------------------------------

@pytest.mark.float32
@pytest.mark.parametrize("variant,light", [("tf1", True), ("tf1", False), ("pytorch", True)])
def test_inference_kernels_match_reference_to_float32_precision(variant, light):
    """Batch of 2 (instances laid out as channels of one image), float32, both variants:
    the same outputs as the float64 reference to float32 precision, and as the training
    ("reference") kernels to a few float32 roundings."""
    cfg = tiny_config(light=light, variant=variant)
    model = build_generator(cfg, "generator_B")
    rng = np.random.default_rng(21)
    if variant == "tf1":
        weights = R.random_weights(R.tf1_generator_names(light, cfg.ch, cfg.n_res, cfg.img_size),
                                   rng, kernel_std=0.1)
        load_tf1(model, weights)
    else:
        weights = R.random_weights(R.torch_generator_keys(light, cfg.ch, cfg.n_res,
                                                          cfg.img_size), rng, kernel_std=0.1)
        load_torch(model, {"genA2B": weights})
    x = image(rng, 2, cfg.img_size)
    fast = tf.function(lambda t: model(t, kernels="inference"))(tf.constant(x, tf.float32))
    slow = model(tf.constant(x, tf.float32))
    if variant == "tf1":
        want = R.tf1_generator(weights, x, "generator_B", light=light, ch=cfg.ch, n_res=cfg.n_res)
    else:
        want = R.torch_generator(weights, x, light=light, ch=cfg.ch, n_res=cfg.n_res,
                                 img_size=cfg.img_size)
    for got, ref, ops in zip(fast, want, slow):
        assert got.dtype == tf.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-4, rtol=1e-4)
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(got.numpy() - ops.numpy()).max() <= 64 * np.finfo(np.float32).eps * scale


@pytest.mark.float32
def test_inference_kernels_in_bfloat16_are_as_close_as_the_reference_kernels():
    """Under mixed_bfloat16 the oneDNN path keeps float32 statistics: its distance to the
    float64 reference is of the order of the training kernels' (bfloat16 rounding)."""
    cfg = tiny_config()
    rng = np.random.default_rng(22)
    weights = R.random_weights(R.tf1_generator_names(True, cfg.ch, cfg.n_res, cfg.img_size),
                               rng, kernel_std=0.1)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_generator(cfg, "generator_B")
    finally:
        keras.config.set_dtype_policy("float32")
    load_tf1(model, weights)
    x = image(rng, 2, cfg.img_size)
    want = R.tf1_generator(weights, x, "generator_B", light=True, ch=cfg.ch, n_res=cfg.n_res)[0]
    errors = {}
    for kernels in ("reference", "inference"):
        got = tf.function(lambda t: model(t, kernels=kernels))(tf.constant(x, tf.float32))[0]
        assert got.dtype == tf.float32  # tanh output is widened
        errors[kernels] = float(np.abs(got.numpy() - want).max())
    assert 0 < errors["reference"] < 0.1
    assert errors["inference"] <= 2 * errors["reference"]


def test_inference_pads_are_tf_pads():
    """The gathers of the inference kernels and the slices of the TFLite ones copy the same
    pixels as MirrorPad: reflect pads, and (gathers) the edge pad inside the fused upsample
    convolution (whose output is then the same to the bit)."""
    from ugatit_tf.model.layers import reflect_pad, upsample_conv3x3
    x = tf.reshape(tf.range(2 * 6 * 7 * 3, dtype=tf.float64), [2, 6, 7, 3])
    for before, after in ((1, 1), (3, 3), (0, 1), (1, 0), (2, 1)):
        want = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]], mode="REFLECT")
        for kernels in ("inference", "tflite"):  # a gather; one-pixel slices
            np.testing.assert_array_equal(reflect_pad(x, before, after, kernels).numpy(),
                                          want.numpy())
        np.testing.assert_array_equal(reflect_pad(x, before, after).numpy(), want.numpy())
    kernel = tf.random.stateless_normal([3, 3, 3, 4], [6, 7], dtype=tf.float64)
    want = upsample_conv3x3(x, kernel).numpy()
    np.testing.assert_array_equal(upsample_conv3x3(x, kernel, "inference").numpy(), want)
    np.testing.assert_allclose(want, R.conv2d(R.reflect_pad(R.upsample_nearest2x(x.numpy()),
                                                            1, 1, 1, 1), kernel.numpy()),
                               rtol=1e-12, atol=1e-9)


def test_half_precision_upsample_crop_backpropagates_as_one_pad():
    """In bfloat16 the fused upsample convolution crops a SAME transposed convolution. The
    crop is a Slice, whose gradient is one Pad (a strided slice's StridedSliceGrad gave the
    same values 16x slower), and output and gradients are those of float64 autodiff of the
    explicit-padding form, up to bfloat16 rounding: the inputs are bfloat16 numbers, so each
    value differs by its own roundings to bfloat16 (relative 2^-9 each, a few in a row for
    the kernel's gradient, which goes through the taps' products) and float32 sums."""
    from ugatit_tf.model.layers import upsample_conv3x3
    x = tf.cast(tf.random.stateless_normal([2, 5, 6, 8], [1, 2]), tf.bfloat16)
    kernel = tf.cast(tf.random.stateless_normal([3, 3, 8, 4], [3, 4]), tf.bfloat16)
    dy = tf.cast(tf.random.stateless_normal([2, 10, 12, 4], [5, 6]), tf.bfloat16)

    def forward_backward(x, kernel, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = upsample_conv3x3(x, kernel)
        return [y] + tape.gradient(y, [x, kernel], output_gradients=dy)

    half = tf.function(forward_backward)
    types = {op.type for op in half.get_concrete_function(x, kernel, dy).graph.get_operations()}
    assert "Pad" in types and "StridedSliceGrad" not in types
    got = half(x, kernel, dy)
    want = forward_backward(*(tf.cast(t, tf.float64) for t in (x, kernel, dy)))
    for g, w in zip(got, want):
        assert g.dtype == tf.bfloat16
        w = w.numpy()
        np.testing.assert_allclose(g.numpy().astype(np.float64), w, rtol=0,
                                   atol=2.0 ** -6 * np.abs(w).max())


# ---------------------------------------------------------------------------
# --train_kernels fast: the same formulas through other ops
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kernel_size,stride,size", [(4, 1, 7), (4, 2, 10), (3, 2, 9), (3, 1, 3)])
def test_patch_matmul_conv_is_the_valid_convolution(kernel_size, stride, size):
    from ugatit_tf.model.layers import patch_matmul_conv
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, size, size + 1, 3))
    kernel = rng.normal(size=(kernel_size, kernel_size, 3, 5))
    got = patch_matmul_conv(tf.constant(x), tf.constant(kernel), stride).numpy()
    np.testing.assert_allclose(got, R.conv2d(x, kernel, stride), rtol=1e-12, atol=1e-12)


def test_patches_pay_only_where_the_kernel_dwarfs_the_patches():
    from ugatit_tf.model.layers import PATCHES_RATIO, _patches_pay

    def pays(size, k, stride, out):
        return _patches_pay(tf.zeros([1, size, size, 2]), tf.zeros([k, k, 2, out]), stride)
    assert PATCHES_RATIO == 16
    assert pays(7, 4, 1, 1024) and pays(11, 4, 1, 2048)  # global conv_last, 128 and 256 px
    assert pays(7, 4, 1, 256) and not pays(7, 4, 1, 255)  # 4x4 output: 16 * 16 channels
    assert pays(10, 4, 2, 512) and not pays(19, 4, 1, 256)  # global conv_4; local conv_last
    assert not pays(4, 1, 1, 4096)  # a 1x1 convolution is already a matrix product
    assert not _patches_pay(tf.keras.Input([None, None, 2]), tf.zeros([4, 4, 2, 4096]), 1)


def _layer_op_types(function, layer, *args):
    """The op types of the global head's `layer` (scopes named like global_1/conv_3_1/)."""
    import re
    pattern = re.compile(rf"/global(_\d+)?/{layer}(_\d+)?/")
    graph = function.get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations() if pattern.search(op.name)}


def test_fast_train_kernels_discriminator_matches_reference_with_the_same_gradients():
    """The global head's last two convolutions (4x4 outputs with 256 and 512 channels here)
    run as matrix products of patches; outputs match the numpy float64 reference, and
    gradients (input and every weight) match those of the reference kernels."""
    cfg = tiny_config(sn=True, n_dis=5, ch=32, img_size=64)
    model = build_discriminator(cfg, "discriminator_A")
    rng = np.random.default_rng(12)
    weights = R.random_weights(R.tf1_discriminator_names(cfg.ch, cfg.n_dis, sn=True), rng,
                               kernel_std=0.2)
    load_tf1(model, weights)
    x = tf.constant(image(rng, 2, cfg.img_size))

    def grads(kernels):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits, cams, heats = model(x, kernels=kernels)
            loss = sum(tf.reduce_sum(t * t) for t in logits + cams + heats)
        return tape.gradient(loss, [x] + model.trainable_variables)

    fast = tf.function(lambda t: model(t, training=True, kernels="fast"))
    for layer in ("conv_3", "conv_last"):
        types = _layer_op_types(fast, layer, x)
        assert "ConcatV2" in types and "Conv2D" not in types, (layer, types)
    for layer in ("conv_2", "D_logit"):
        assert "Conv2D" in _layer_op_types(fast, layer, x)
    want = R.tf1_discriminator(weights, x.numpy(), "discriminator_A", ch=cfg.ch,
                               n_dis=cfg.n_dis, sn=True)
    logits, cams, heats = fast(x)
    for got, ref in zip(logits + cams + heats,
                        want["logits"] + want["cam_logits"] + want["heatmaps"]):
        np.testing.assert_allclose(got.numpy(), ref, atol=TOL, rtol=1e-5)
    for got, ref in zip(grads("fast"), grads("reference")):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-10,
                                   atol=1e-12 * np.abs(ref.numpy()).max())
    with pytest.raises(ValueError, match="training kernels must be one of"):
        model(x, kernels="inference")


@pytest.mark.float32  # FusedBatchNormV3 has no float64 kernel
@pytest.mark.parametrize("affine,precision", [(True, "float32"), (False, "float32"),
                                              (True, "mixed_bfloat16")])
def test_fast_train_kernels_instance_norm_gradients(affine, precision):
    """Instance norm through FusedBatchNormV3 in training mode and its fused gradient: the
    output and the gradients of x, gamma and beta are float64 autodiff's of the reference
    formulas, up to float32 rounding (relative 2^-24 per operation, a few dozen in a row, on
    values of order one). Under mixed_bfloat16 (bfloat16 maps, float32 statistics and
    variables), from the same bfloat16 inputs, up to the rounding of the bfloat16 outputs
    (relative 2^-9 each; 2^-7 of the largest value allows for a few)."""
    rng = np.random.default_rng(3)
    half = precision == "mixed_bfloat16"
    dtype = tf.bfloat16 if half else tf.float32

    def rounded(a):  # the values the layer gets, in float64
        return tf.cast(tf.cast(a, dtype), tf.float64).numpy()
    x64 = rounded(rng.normal(size=(3, 6, 5, 4)) * 2 + 1)
    dy64 = rounded(rng.normal(size=x64.shape))
    gamma, beta = rng.normal(size=4), rng.normal(size=4)

    def forward_backward(policy, x_dtype, kernels):
        layer = InstanceNorm(affine=affine, dtype=policy)
        layer.build(x64.shape)
        if affine:
            layer.gamma.assign(gamma)
            layer.beta.assign(beta)
        x = tf.constant(x64, x_dtype)

        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, relu=True, kernels=kernels)
            return [y] + tape.gradient(y, [x] + layer.trainable_variables,
                                       output_gradients=tf.constant(dy64, y.dtype))
        function = tf.function(run)
        types = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
        return [tf.cast(t, tf.float64).numpy() for t in function(x)], types

    got, types = forward_backward(precision, dtype, "fast")
    assert "FusedBatchNormGradV3" in types and "Mean" not in types
    want, _ = forward_backward("float64", tf.float64, "reference")
    assert len(got) == len(want) == (4 if affine else 2)
    tolerance = 2.0 ** -7 if half else 1e-5
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=tolerance * max(1.0, np.abs(w).max()))


def test_kernels_are_checked_and_the_flag_offers_them():
    import dataclasses
    from ugatit_tf.model.layers import KERNELS
    model = build_generator(tiny_config(), "generator_B")
    with pytest.raises(ValueError, match="kernels must be one of"):
        model(tf.zeros([1, 32, 32, 3], tf.float64), kernels="quick")
    field = next(f for f in dataclasses.fields(Config) if f.name == "kernels")
    assert set(field.metadata["choices"]) == set(KERNELS) | {"auto"}
    assert Config().kernels == "auto"
    from ugatit_tf.model.layers import TRAIN_KERNELS
    field = next(f for f in dataclasses.fields(Config) if f.name == "train_kernels")
    assert field.metadata["choices"] == TRAIN_KERNELS and Config().train_kernels == "reference"


def test_auto_kernels_freeze_only_one_image_at_a_time():
    from ugatit_tf.model.layers import choose_kernels
    assert choose_kernels("auto", batched=False) == "frozen"
    assert choose_kernels("auto", batched=True) == "inference"
    for kernels in ("frozen", "inference", "reference"):
        assert choose_kernels(kernels, batched=True) == kernels
    with pytest.raises(ValueError, match="kernels must be one of"):
        choose_kernels("quick", batched=False)


# ---------------------------------------------------------------------------
# kernels="frozen": "inference" with the convolutions' weights as graph constants
# ---------------------------------------------------------------------------

@pytest.mark.float32
@pytest.mark.parametrize("light,policy", [(True, "float32"), (False, "float32"),
                                          (True, "mixed_bfloat16")])
def test_frozen_kernels_give_the_inference_bits_without_reading_conv_variables(light, policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = build_generator(tiny_config(light=light, ch=8), "generator_B")
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(23)
    for v in model.variables:  # not the zero biases and unit gammas of a fresh model
        v.assign(rng.normal(0, 0.1, v.shape).astype(v.dtype))
    x = tf.constant(image(rng, 2, 32), tf.float32)
    runs = {k: tf.function(lambda t, k=k: model(t, kernels=k)).get_concrete_function(x)
            for k in ("inference", "frozen")}
    for got, want in zip(runs["frozen"](x), runs["inference"](x)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    # the variables a function reads are the resource handles it captures
    conv_weights = {id(v.value.handle) for layer in model._flatten_layers()
                    if isinstance(layer, Conv) for v in (layer.kernel, layer.bias)
                    if v is not None}
    read = {id(h) for h in runs["frozen"].captured_inputs}
    assert conv_weights and not conv_weights & read
    assert conv_weights <= {id(h) for h in runs["inference"].captured_inputs}
    assert read  # the norms' and MLP's weights stay variables


@pytest.mark.float32
def test_frozen_functions_keep_the_weights_they_were_traced_with():
    """What "frozen" means, and why evaluation during training uses live_kernels."""
    from ugatit_tf.model.layers import live_kernels
    model = build_generator(tiny_config(), "generator_B")
    x = tf.random.stateless_uniform([1, 32, 32, 3], [4, 5], -1, 1)
    frozen = tf.function(lambda t: model(t, kernels="frozen")[0])
    live = tf.function(lambda t: model(t, kernels=live_kernels("frozen"))[0])
    before = frozen(x).numpy()
    np.testing.assert_array_equal(live(x).numpy(), before)
    model.g_logit.kernel.assign(model.g_logit.kernel * 2.0)
    np.testing.assert_array_equal(frozen(x).numpy(), before)
    assert np.abs(live(x).numpy() - before).max() > 1e-3
    assert live_kernels("reference") == "reference"
    with pytest.raises(ValueError, match="frozen kernels are for generators' forward passes"):
        Conv(4, 3, sn="tf1", name="d_conv")(tf.zeros([1, 8, 8, 2]), kernels="frozen")
