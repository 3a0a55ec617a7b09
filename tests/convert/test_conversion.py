"""Converting the originals' checkpoints (ugatit_tf/convert/: tf1, pytorch, shared, writer, cli).

TF1 checkpoints are written here the way the original code writes them: tf.compat.v1 variables
saved by tf.compat.v1.train.Saver inside a tf.Graph(), with the original names (and Adam slots
and beta powers for some). PyTorch checkpoints are written with our torch_format writer. The
converted networks are checked against the independent numpy reference (tests/reference/np_reference.py).
"""

import io
import math
import os
import pickle
import shutil
import struct
import types
import zipfile
from collections import OrderedDict

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import np_reference as R
from ugatit_tf.convert import cli, shared, tf1, writer
from ugatit_tf.convert import torch_format as T
from ugatit_tf.convert import torch_writer
from ugatit_tf.convert.pytorch import convert_pytorch, infer_torch_config
from ugatit_tf.convert.tf1 import convert_tf1, infer_tf1_config
from ugatit_tf.convert.writer import adam_slots
from ugatit_tf.model.checkpoints import (build_optimizers, load_networks, make_checkpoint,
                                   model_checkpoint_dir, read_config)
from ugatit_tf.train.optimizer import make_optimizer
from ugatit_tf.config import Config
from ugatit_tf.convert.shared import ConversionError
from ugatit_tf.model.networks import Networks, tf1_name_map, torch_name_map

TOL = 1e-5
TINY = dict(ch=4, n_res=2, n_dis=4, img_size=32)
GENS = (("generator_B", "genA2B"), ("generator_A", "genB2A"))
DISS = ("discriminator_A", "discriminator_B")


def _precision(name):
    # Keras caches its global dtype policy from floatx on first use, so both are set (and
    # restored): floatx alone would leak into, or miss, models built later.
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(name)
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


@pytest.fixture
def float64():
    """Convert and load in float64, so the comparison with the float64 reference checks the
    mapping itself rather than float32 rounding."""
    yield from _precision("float64")


@pytest.fixture
def float32():
    yield from _precision("float32")


def quiet(*args, **kwargs):
    pass


# ---------------------------------------------------------------------------
# Writing original-format checkpoints
# ---------------------------------------------------------------------------

def tf1_weights(light, rng, sn=True, ch=4, n_res=2, n_dis=4, img_size=32):
    names = {}
    for scope, _ in GENS:
        names.update(R.tf1_generator_names(light, ch, n_res, img_size, scope=scope))
    for scope in DISS:
        names.update(R.tf1_discriminator_names(ch, n_dis, sn=sn, scope=scope))
    return R.random_weights(names, rng, kernel_std=0.2)


def adam_state(weights, rng, g_steps, d_steps):
    """TF1 Adam slots for every trainable variable and the beta powers (G created first)."""
    out = {}
    for name, value in weights.items():
        if not name.endswith("/u"):
            out[name + "/Adam"] = 0.01 * rng.standard_normal(value.shape)
            out[name + "/Adam_1"] = 1e-4 * rng.uniform(size=value.shape)
    out["beta1_power"] = np.float32(0.5 ** (g_steps + 1))
    out["beta2_power"] = np.float32(0.999 ** (g_steps + 1))
    out["beta1_power_1"] = np.float32(0.5 ** (d_steps + 1))
    out["beta2_power_1"] = np.float32(0.999 ** (d_steps + 1))
    return out


def write_tf1(prefix, values, step, dtype=np.float64):
    """Save {original name: value} with tf.compat.v1.train.Saver in a TF1 graph, as the
    original does (prefix .../UGATIT.model, the counter appended: UGATIT.model-STEP)."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        var_list = {}
        for i, (name, value) in enumerate(values.items()):
            value = np.asarray(value)
            if not name.startswith("beta"):
                value = value.astype(dtype)
            var_list[name] = tf.compat.v1.Variable(value, name=f"v{i}")
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, prefix, global_step=step, write_meta_graph=False)


def torch_states(light, rng, ch=4, n_res=2, n_dis=4, img_size=32):
    states = {}
    for key in ("genA2B", "genB2A"):
        states[key] = R.random_weights(R.torch_generator_keys(light, ch, n_res, img_size), rng,
                                       kernel_std=0.2)
    for domain in "AB":
        states["disG" + domain] = R.random_weights(R.torch_discriminator_keys(ch, n_dis + 1),
                                                   rng, kernel_std=0.2)
        states["disL" + domain] = R.random_weights(R.torch_discriminator_keys(ch, n_dis - 1),
                                                   rng, kernel_std=0.2)
    return states


def write_torch(path, states):
    torch_writer.save({k: OrderedDict(v) for k, v in states.items()}, path)


def images(rng, n=2, size=32):
    return rng.uniform(-1, 1, (n, size, size, 3))


def leftovers(folder):
    """Temporary folders the converter may have left next to its destination."""
    return [n for n in os.listdir(folder) if n.startswith(".")] if os.path.isdir(folder) else []


# ---------------------------------------------------------------------------
# TF1: whole conversion against the numpy reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("light", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_tf1_conversion_matches_reference(tmp_path, float64, light):
    rng = np.random.default_rng(1 if light else 2)
    weights = tf1_weights(light, rng)
    values = dict(weights)
    if not light:  # the full model's checkpoint carries the Adam state
        values.update(adam_state(weights, rng, g_steps=40, d_steps=57))
    folder = tmp_path / (("UGATIT_light" if light else "UGATIT") +
                         "_tiny_hinge_2resblock_4dis_1_1_10_10_1000_sn_smoothing")
    prefix = write_tf1(str(folder / "UGATIT.model"), values, step=58)
    out_dir = str(tmp_path / "ckpts")
    result = convert_tf1(prefix, "tiny", checkpoint_dir=out_dir, img_size=32 if light else None,
                           log=quiet)

    cfg = result.config
    assert (cfg.light, cfg.ch, cfg.n_res, cfg.n_dis, cfg.img_size, cfg.sn, cfg.variant) == \
        (light, 4, 2, 4, 32, True, "tf1")
    assert cfg.gan_type == "hinge" and cfg.smoothing  # from the original folder name
    assert result.folder == model_checkpoint_dir(cfg)
    assert read_config(result.folder)["light"] == light
    assert result.step == 58 and os.path.basename(result.checkpoint) == "ckpt-58"
    assert leftovers(out_dir) == []

    nets, prefix_used = load_networks(cfg, discriminators=True)
    assert prefix_used == result.checkpoint
    x = images(rng)
    for scope, _ in GENS:
        model = nets.genA2B if scope == "generator_B" else nets.genB2A
        got = model(tf.constant(x), training=False)
        want = R.tf1_generator(weights, x, scope, light=light, ch=4, n_res=2, smoothing=True)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g.numpy(), w, atol=TOL, rtol=TOL)
    for scope, model in zip(DISS, (nets.disA, nets.disB)):
        want = R.tf1_discriminator(weights, x, scope, ch=4, n_dis=4, sn=True)
        logits, cams, heats = model(tf.constant(x), training=False)
        for g, w in zip(logits + cams + heats,
                        want["logits"] + want["cam_logits"] + want["heatmaps"]):
            assert g.shape == w.shape
            np.testing.assert_allclose(g.numpy(), w, atol=TOL, rtol=TOL)
        names = tf1_name_map(model)
        for name, u in want["u"].items():  # inference leaves u alone ...
            np.testing.assert_array_equal(names[name].variable.numpy(), weights[name])
        model(tf.constant(x), training=True)
        for name, u in want["u"].items():  # ... training does the power iteration
            np.testing.assert_allclose(names[name].variable.numpy(), u, atol=TOL)

    if light:
        assert result.optimizer == "fresh"
        return
    # The Adam slots, iteration counts and step arrive in a training checkpoint.
    assert result.optimizer == "converted"
    assert (result.g_iterations, result.d_iterations) == (40, 57)
    nets = Networks(cfg)
    g_optim, d_optim = make_optimizer(cfg, "G_optim"), make_optimizer(cfg, "D_optim")
    build_optimizers(nets, g_optim, d_optim)
    step = tf.Variable(0, dtype=tf.int64)
    make_checkpoint(nets, g_optim, d_optim, step=step).read(result.checkpoint) \
        .assert_existing_objects_matched()
    assert int(step.numpy()) == 58
    assert int(g_optim.iterations.numpy()) == 40 and int(d_optim.iterations.numpy()) == 57
    checked = 0
    for optim, models in ((g_optim, nets.generators), (d_optim, nets.discriminators)):
        for model in models:
            for name, entry in tf1_name_map(model).items():
                if not entry.variable.trainable:
                    continue
                m, v = adam_slots(optim, entry.variable)
                np.testing.assert_array_equal(m.numpy(), values[name + "/Adam"])
                np.testing.assert_array_equal(v.numpy(), values[name + "/Adam_1"])
                checked += 1
    assert checked == sum(1 for n in weights if not n.endswith("/u"))


@pytest.mark.slow
def test_tf1_float32_checkpoint_default_precision(tmp_path, float32):
    """The real case: float32 weights into float32 networks (no sn, light, n_dis 5)."""
    rng = np.random.default_rng(3)
    weights = tf1_weights(True, rng, sn=False, n_dis=5, img_size=64)
    weights32 = {k: v.astype(np.float32) for k, v in weights.items()}
    prefix = write_tf1(str(tmp_path / "src" / "UGATIT_light.model"), weights32, step=7,
                       dtype=np.float32)
    result = convert_tf1(prefix, "tiny32", checkpoint_dir=str(tmp_path / "out"), img_size=64,
                           log=quiet)
    cfg = result.config
    assert (cfg.light, cfg.sn, cfg.n_dis, cfg.img_size) == (True, False, 5, 64)
    assert cfg.gan_type == "lsgan"  # no original folder name: the defaults
    nets, _ = load_networks(cfg, discriminators=True)
    assert nets.genA2B.conv.kernel.dtype == "float32"
    x = images(rng, 1, 64)
    img, cam, _ = nets.genA2B(tf.constant(x, tf.float32))
    want = R.tf1_generator(weights32, x, "generator_B", light=True, ch=4, n_res=2)
    np.testing.assert_allclose(img.numpy(), want[0], atol=1e-4)
    np.testing.assert_allclose(cam.numpy(), want[1], atol=1e-4, rtol=1e-4)
    want_d = R.tf1_discriminator(weights32, x, "discriminator_B", ch=4, n_dis=5, sn=False)
    got_d = nets.disB(tf.constant(x, tf.float32))[0]
    for g, w in zip(got_d, want_d["logits"]):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------
# PyTorch: whole conversion against the numpy reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("light", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_pytorch_conversion_matches_reference(tmp_path, float64, light):
    rng = np.random.default_rng(4 if light else 5)
    states = torch_states(light, rng)
    path = str(tmp_path / "tiny_params_0012345.pt")
    write_torch(path, states)
    result = convert_pytorch(path, checkpoint_dir=str(tmp_path / "out"),
                               img_size=32 if light else None, log=quiet)
    cfg = result.config
    assert (cfg.light, cfg.ch, cfg.n_res, cfg.n_dis, cfg.img_size, cfg.sn, cfg.variant,
            cfg.dataset) == (light, 4, 2, 4, 32, True, "pytorch", "tiny")
    assert result.step == 12345 and result.optimizer == "fresh"
    assert cfg.model_dir.endswith("_pytorch")

    nets, _ = load_networks(cfg, discriminators=True)
    x = images(rng)
    for model, key in ((nets.genA2B, "genA2B"), (nets.genB2A, "genB2A")):
        got = model(tf.constant(x))
        want = R.torch_generator(states[key], x, light=light, ch=4, n_res=2, img_size=32)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g.numpy(), w, atol=TOL, rtol=TOL)
    for model, domain in ((nets.disA, "A"), (nets.disB, "B")):
        logits, cams, heats = model(tf.constant(x), training=False)
        for i, (key, n_layers) in enumerate((("disL" + domain, 3), ("disG" + domain, 5))):
            want = R.torch_discriminator(states[key], x, n_layers=n_layers, training=False)
            for g, w in ((logits[i], want["logit"]), (cams[i], want["cam_logit"]),
                         (heats[i], want["heatmap"])):
                assert g.shape == w.shape
                np.testing.assert_allclose(g.numpy(), w, atol=TOL, rtol=TOL)
            entries = torch_name_map(model)[key]
            for name, value in want["updates"].items():  # u, v as stored
                np.testing.assert_allclose(entries[name].variable.numpy(), value, atol=TOL)


# ---------------------------------------------------------------------------
# Safety and failures
# ---------------------------------------------------------------------------

def _zip_with_pickle(path, data):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("protocol", [0, 4])
def test_restricted_unpickler_refuses_os_system(tmp_path, protocol):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    if protocol == 0:  # GLOBAL 'os system', as pickle protocol 0 writes it
        data = b"cos\nsystem\n(V" + command.encode() + b"\ntR."
    else:  # STACK_GLOBAL (protocol 4)
        def s(text):
            raw = text.encode()
            return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE
        data = b"\x80\x04" + s("os") + s("system") + b"\x93" + s(command) + b"\x85R."
    with pytest.raises(T.UnsafePickleError, match=r"os\.system"):
        T.loads_pickle(data)
    assert not marker.exists()
    # sanity check of the hand-made pickle: the plain unpickler WOULD resolve os.system
    assert pickle.Unpickler(io.BytesIO(data)).find_class("os", "system") is os.system
    # the same inside a torch zip, through the converter
    path = str(tmp_path / "evil.pt")
    _zip_with_pickle(path, data)
    with pytest.raises(ConversionError, match=r"os\.system"):
        convert_pytorch(path, "x", checkpoint_dir=str(tmp_path / "out"), log=quiet)
    assert not marker.exists() and not (tmp_path / "out").exists()
    for module, name in (("builtins", "eval"), ("torch", "load"), ("numpy", "load")):
        with pytest.raises(T.UnsafePickleError, match=f"{module}.{name}"):
            T.loads_pickle(f"c{module}\n{name}\n.".encode())


def test_torch_format_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(6)
    arrays = OrderedDict([
        ("f32", rng.standard_normal((2, 3, 4)).astype(np.float32)),
        ("f64", rng.standard_normal(5)),
        ("f16", rng.standard_normal((3, 1)).astype(np.float16)),
        ("i64", np.arange(-3, 3, dtype=np.int64)),
        ("u8", np.arange(7, dtype=np.uint8)),
        ("b", np.array([True, False])),
        ("scalar", np.array(2.5, dtype=np.float32)),
        ("empty", np.zeros((0, 3), np.float32)),
        ("fortran", np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))),
    ])
    path = str(tmp_path / "t.pt")
    torch_writer.save({"sd": arrays, "n": 3, "name": "x", "big": 2 ** 40, "neg": -7, "lst": [1.5, None]},
           path)
    back = T.load(path)
    assert back["n"] == 3 and back["name"] == "x" and back["big"] == 2 ** 40
    assert back["neg"] == -7 and back["lst"] == [1.5, None]
    assert isinstance(back["sd"], OrderedDict) and list(back["sd"]) == list(arrays)
    for key, value in arrays.items():
        assert back["sd"][key].dtype == value.dtype and back["sd"][key].shape == value.shape
        np.testing.assert_array_equal(back["sd"][key], value)
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        names = zf.namelist()
        assert names[0] == "archive/data.pkl" and names[-1] == "archive/version"
        assert zf.read("archive/version") == b"3\n"
        assert zf.read("archive/byteorder") == b"little"
        assert "archive/data/0" in names
        for info in zf.infolist():  # uncompressed, data aligned to 64 bytes as torch does
            assert info.compress_type == zipfile.ZIP_STORED
            f.seek(info.header_offset)
            header = f.read(30)
            n_name, n_extra = struct.unpack("<HH", header[26:30])
            assert (info.header_offset + 30 + n_name + n_extra) % 64 == 0
        assert zf.read("archive/data.pkl")[:2] == b"\x80\x02"


def test_torch_format_bounds_and_legacy(tmp_path):
    storage = T._Storage(np.arange(6, dtype=np.float32), "0")
    np.testing.assert_array_equal(T._rebuild_tensor(storage, 1, (2, 2), (1, 2), False, {}),
                                  [[1, 3], [2, 4]])  # a strided (transposed) view
    with pytest.raises(T.TorchFormatError, match="reaches element"):
        T._rebuild_tensor(storage, 1, (2, 3), (3, 1), False, {})  # one past the end
    with pytest.raises(T.TorchFormatError, match="more elements"):  # no memory bombs
        T._rebuild_tensor(storage, 0, (10 ** 6, 10 ** 6), (0, 0), False, {})
    with pytest.raises(T.TorchFormatError, match="negative"):
        T._rebuild_tensor(storage, 0, (2,), (-1,), False, {})
    legacy = tmp_path / "old.pt"
    legacy.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + b"\0" * 40)
    with pytest.raises(T.TorchFormatError, match=r"legacy.*torch>=1\.6"):
        T.load(str(legacy))
    with pytest.raises(ConversionError, match=r"legacy.*torch>=1\.6"):
        convert_pytorch(str(legacy), "x", checkpoint_dir=str(tmp_path / "o"), log=quiet)


@pytest.mark.slow
def test_truncated_files(tmp_path):
    rng = np.random.default_rng(7)
    weights = tf1_weights(True, rng)
    prefix = write_tf1(str(tmp_path / "tf1" / "UGATIT_light.model"), weights, step=3)
    out = str(tmp_path / "out")
    data = prefix + ".data-00000-of-00001"
    with open(data, "rb") as f:
        raw = f.read()
    with open(data, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(ConversionError, match="cannot read") as err:
        convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, log=quiet)
    assert "generator" in str(err.value) or "discriminator" in str(err.value)
    assert not os.path.exists(out) or (os.listdir(out) == [])
    with open(prefix + ".index", "r+b") as f:
        f.truncate(20)
    with pytest.raises(ConversionError, match="cannot read the TF1 checkpoint"):
        convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, log=quiet)

    path = str(tmp_path / "t_params_0000001.pt")
    write_torch(path, torch_states(True, rng))
    raw = open(path, "rb").read()
    for cut in (len(raw) // 3, len(raw) - 30):
        with open(path, "wb") as f:
            f.write(raw[:cut])
        with pytest.raises(ConversionError, match="corrupt or truncated"):
            convert_pytorch(path, checkpoint_dir=out, img_size=32, log=quiet)
    assert not os.path.exists(out) or (os.listdir(out) == [])


@pytest.mark.slow
def test_missing_extra_and_wrong_shape_are_all_listed(tmp_path):
    rng = np.random.default_rng(8)
    weights = tf1_weights(True, rng)
    values = dict(weights)
    del values["generator_A/up_conv_1/conv2d/bias"]
    del values["discriminator_B/local/conv_last/u"]
    values["generator_B/extra/kernel"] = np.zeros(3)
    values["global_step"] = np.zeros(())
    values["generator_B/conv_1x1/conv2d/kernel"] = np.zeros((1, 1, 32, 15))
    prefix = write_tf1(str(tmp_path / "tf1" / "UGATIT_light.model"), values, step=3)
    out = str(tmp_path / "out")
    with pytest.raises(ConversionError) as err:
        convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, log=quiet)
    text = str(err.value)
    lines = text.splitlines()
    assert "missing from the checkpoint (2):" in lines
    i = lines.index("missing from the checkpoint (2):")
    assert lines[i + 1:i + 3] == ["  discriminator_B/local/conv_last/u",
                                  "  generator_A/up_conv_1/conv2d/bias"]
    i = lines.index("unknown to the network (2):")
    assert lines[i + 1:i + 3] == ["  generator_B/extra/kernel", "  global_step"]
    i = lines.index("wrong shape (1):")
    assert lines[i + 1] == ("  generator_B/conv_1x1/conv2d/kernel: checkpoint [1, 1, 32, 15], "
                            "expected [1, 1, 32, 16]")
    assert not os.path.exists(out) or os.listdir(out) == []
    with pytest.raises(ConversionError) as err:  # unknown names may be dropped, the rest not
        convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, ignore_unknown=True,
                      log=quiet)
    assert "unknown" not in str(err.value) and "missing from the checkpoint (2)" in str(err.value)

    # partial Adam state: the missing slots are named
    values = dict(weights)
    values.update(adam_state(weights, rng, 3, 3))
    del values["generator_B/G_logit/conv2d/bias/Adam_1"]
    del values["beta2_power_1"]
    prefix = write_tf1(str(tmp_path / "tf1b" / "UGATIT_light.model"), values, step=3)
    with pytest.raises(ConversionError, match=r"(?s)missing.*beta2_power_1\n"
                                              r"  generator_B/G_logit/conv2d/bias/Adam_1"):
        convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, log=quiet)
    # ... unless the optimizer state is left out; with ignore_unknown an extra name is dropped
    values["global_step"] = np.zeros(())
    prefix = write_tf1(str(tmp_path / "tf1c" / "UGATIT_light.model"), values, step=3)
    result = convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, optimizer=False,
                           ignore_unknown=True, log=quiet)
    assert result.optimizer == "omitted"
    assert any("global_step" in note for note in result.notes)
    shutil.rmtree(result.folder)

    # PyTorch: the same accounting, with 'key/state_dict key' names
    states = torch_states(True, rng)
    del states["genB2A"]["UpBlock2.8.rho"]
    states["disLA"]["model.4.weight_orig"] = np.zeros((8, 4, 4, 3))
    states["disGB"]["num_batches_tracked"] = np.zeros((), np.int64)
    states["optimizer"] = {}
    path = str(tmp_path / "t_params_0000001.pt")
    write_torch(path, states)
    with pytest.raises(ConversionError) as err:
        convert_pytorch(path, checkpoint_dir=out, img_size=32, log=quiet)
    text = str(err.value)
    assert "  genB2A/UpBlock2.8.rho" in text
    assert "  disLA/model.4.weight_orig: checkpoint [8, 4, 4, 3], expected [8, 4, 4, 4]" in text
    assert "unknown to the network (2):\n  disGB/num_batches_tracked\n  optimizer" in text


@pytest.mark.slow
def test_refuses_to_overwrite(tmp_path):
    rng = np.random.default_rng(9)
    prefix = write_tf1(str(tmp_path / "tf1" / "UGATIT_light.model"), tf1_weights(True, rng),
                       step=5)
    out = str(tmp_path / "out")
    first = convert_tf1(prefix + ".index", "t", checkpoint_dir=out, img_size=32, log=quiet)
    assert first.step == 5 and first.checkpoint.endswith("ckpt-5")
    before = sorted(os.listdir(first.folder))
    with pytest.raises(ConversionError, match="--force"):
        convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, log=quiet)
    assert sorted(os.listdir(first.folder)) == before
    (tmp_path / "out" / first.config.model_dir / "stale.txt").write_text("old")
    again = convert_tf1(prefix, "t", checkpoint_dir=out, img_size=32, force=True, log=quiet)
    assert sorted(os.listdir(again.folder)) == before  # replaced, not merged
    assert leftovers(out) == []


@pytest.mark.slow
def test_cli_prints_flags_and_verifies(tmp_path, capsys):
    rng = np.random.default_rng(10)
    src = tmp_path / "UGATIT_light_faces_lsgan_2resblock_4dis_1_1_10_10_1000_sn_smoothing"
    prefix = write_tf1(str(src / "UGATIT_light.model"), tf1_weights(True, rng), step=1001)
    out = str(tmp_path / "ck")
    assert prefix.endswith("UGATIT_light.model-1001")
    with open(src / "checkpoint", "w") as f:  # a state file naming the authors' paths
        f.write('model_checkpoint_path: "/home/them/UGATIT_light.model-1001"\n')
    argv = ["--source", "tf1", "--checkpoint", str(src), "--checkpoint_dir", out,  # its folder
            "--img_size", "32", "--verify"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    flags = ("--dataset faces --light True --img_size 32 --ch 4 --n_res 2 --n_dis 4 --sn True "
             f"--smoothing True --checkpoint_dir {out}")
    assert f"python main.py --phase test {flags}" in text
    assert "verify: A2B (generator_B): output min" in text and "cam logits" in text
    assert "(step 1001, optimizer state: fresh)" in text
    assert cli.main(argv) == 2  # exists: refused
    assert "--force" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Inference, iteration counts, names
# ---------------------------------------------------------------------------

def _tf1_shapes(light, ch, n_res, n_dis, img_size, sn):
    shapes = {}
    for scope, _ in GENS:
        shapes.update(R.tf1_generator_names(light, ch, n_res, img_size, scope=scope))
    for scope in DISS:
        shapes.update(R.tf1_discriminator_names(ch, n_dis, sn=sn, scope=scope))
    return shapes


@pytest.mark.parametrize("light,ch,n_res,n_dis,img_size,sn", [
    (False, 64, 4, 6, 256, True),   # the released selfie2anime model
    (False, 8, 3, 5, 96, False),
    (True, 16, 6, 7, 256, True),
])
def test_infer_config(light, ch, n_res, n_dis, img_size, sn):
    arch, _ = infer_tf1_config(_tf1_shapes(light, ch, n_res, n_dis, img_size, sn),
                                 None if not light else img_size)
    assert arch == dict(light=light, ch=ch, n_res=n_res, n_dis=n_dis, sn=sn,
                        img_size=img_size, img_ch=3)

    def shaped(keys):
        return {k: types.SimpleNamespace(shape=s, ndim=len(s)) for k, s in keys.items()}

    state = {"genA2B": shaped(R.torch_generator_keys(light, ch, n_res, img_size)),
             "disGA": shaped(R.torch_discriminator_keys(ch, n_dis + 1))}
    arch, _ = infer_torch_config(state, None if not light else img_size)
    assert arch == dict(light=light, ch=ch, n_res=n_res, n_dis=n_dis, sn=True,
                        img_size=img_size, img_ch=3)


def test_infer_config_errors():
    shapes = _tf1_shapes(False, 4, 2, 4, 32, True)
    with pytest.raises(ConversionError, match="img_size 32"):
        infer_tf1_config(shapes, 64)
    shapes["generator_B/MLP/linear_0/dense/kernel"] = (16 * 50, 16)
    with pytest.raises(ConversionError, match="neither"):
        infer_tf1_config(shapes)
    with pytest.raises(ConversionError, match="object-based"):
        infer_tf1_config({"_CHECKPOINTABLE_OBJECT_GRAPH": (),
                            "generator_B/conv/.ATTRIBUTES/VARIABLE_VALUE": (7, 7, 3, 4)})
    arch, notes = infer_tf1_config(_tf1_shapes(True, 4, 2, 4, 32, True))
    assert arch["img_size"] == 256 and "--img_size" in notes[0]


def test_adam_iterations():
    for n in (0, 5, 125):
        assert tf1.adam_iterations(np.float32(0.5 ** (n + 1)), 0.999 ** (n + 1), 9) == \
            (n, "beta1_power")
    assert tf1.adam_iterations(0.0, 0.0, 1_000_000) == (1_000_000, "checkpoint counter")
    steps, how = tf1.adam_iterations(0.0, float(np.float32(0.999 ** 3001)), None)
    assert abs(steps - 3000) <= 2 and how.startswith("beta2_power")
    steps, how = tf1.adam_iterations(0.0, 0.0, None)
    assert steps == tf1.BETA2_UNDERFLOW_T and how.startswith("lower bound")
    assert 87_000 < steps and 0.999 ** steps <= 2.0 ** -126 < 0.999 ** (steps - 1)
    assert math.isclose(np.float32(1) - np.float32(0.999) ** np.float32(steps), 1.0)
    for bad in (math.inf, math.nan, 2.0, -0.5):  # damage: one line naming --no_optimizer
        for powers in ((np.float32(bad), 0.0), (0.0, np.float32(bad))):
            with pytest.raises(ConversionError) as e:
                tf1.adam_iterations(*powers, None)
            name = "beta1_power" if powers[1] == 0.0 else "beta2_power"
            assert str(e.value) == (f"the checkpoint's Adam {name} is {float(bad)!r}, not in "
                                    f"[0, 1]: its optimizer state is damaged; convert the "
                                    f"weights alone with --no_optimizer")


def test_parse_model_dir_and_flags():
    got = shared.parse_model_dir("/x/UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_"
                            "smoothing")
    assert got == dict(light=False, dataset="selfie2anime", gan_type="lsgan", n_res=4, n_dis=6,
                       n_critic=1, adv_weight=1, cycle_weight=10, identity_weight=10,
                       cam_weight=1000, sn=True, smoothing=True)
    got = shared.parse_model_dir("UGATIT_light_my_data_gan_2resblock_5dis_2_0.5_10_10_100")
    assert (got["light"], got["dataset"], got["gan_type"], got["adv_weight"], got["sn"],
            got["smoothing"]) == (True, "my_data", "gan", 0.5, False, False)
    assert shared.parse_model_dir("checkpoints") is None
    # the flags printed are the ones main.py needs to find the same folder
    cfg = Config(dataset="selfie2anime", light=False)
    assert shared.main_flags(cfg) == ("--dataset selfie2anime --light False --img_size 256 --ch 64 "
                                 "--n_res 4 --n_dis 6 --sn True --smoothing True")
    assert shared.main_flags(Config(dataset="d", variant="pytorch", gan_type="hinge")).startswith(
        "--dataset d --variant pytorch --light False")
    # paths with spaces are quoted: the printed line is pasted into a shell
    import shlex
    spaced = shared.main_flags(Config(dataset="my set", checkpoint_dir="sp ace/ck"))
    argv = shlex.split(spaced)
    assert argv[:2] == ["--dataset", "my set"] and argv[-2:] == ["--checkpoint_dir", "sp ace/ck"]


# ---------------------------------------------------------------------------
# The streamed checkpoint, user mistakes
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_streamed_checkpoint_equals_a_saved_model(tmp_path, monkeypatch):
    """writer.py writes the checkpoint tensor by tensor from a ch-1 twin's keys: it must have
    the keys, shapes, dtypes and object graph that saving the built networks gives. Here with
    tiny slices and shards, so that tensors are split across them as the full model's are."""
    monkeypatch.setattr(writer, "SLICE_BYTES", 256)
    monkeypatch.setattr(writer, "SHARD_BYTES", 2048)
    rng = np.random.default_rng(11)
    weights = tf1_weights(False, rng)
    values = dict(weights)
    values.update(adam_state(weights, rng, g_steps=3, d_steps=4))
    prefix = write_tf1(str(tmp_path / "src" / "UGATIT.model"), values, step=5,
                       dtype=np.float32)
    result = convert_tf1(prefix, "t", checkpoint_dir=str(tmp_path / "out"), log=quiet)
    cfg = result.config
    nets = Networks(cfg)
    g_optim, d_optim = make_optimizer(cfg, "G_optim"), make_optimizer(cfg, "D_optim")
    build_optimizers(nets, g_optim, d_optim)
    step = tf.Variable(5, dtype=tf.int64, trainable=False, name="step")
    manager = tf.train.CheckpointManager(make_checkpoint(nets, g_optim, d_optim, step=step),
                                         str(tmp_path / "saved"), max_to_keep=3)
    saved = manager.save(checkpoint_number=5)
    ours, theirs = tf.train.load_checkpoint(result.checkpoint), tf.train.load_checkpoint(saved)
    assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
    assert ours.get_variable_to_dtype_map() == theirs.get_variable_to_dtype_map()
    graph = "_CHECKPOINTABLE_OBJECT_GRAPH"
    assert ours.get_tensor(graph) == theirs.get_tensor(graph)
    shards = [n for n in os.listdir(result.folder) if ".data-" in n]
    assert len(shards) > 10 and sorted(os.listdir(result.folder)) == sorted(
        ["checkpoint", "config.json", "ckpt-5.index"] + shards)
    make_checkpoint(nets, g_optim, d_optim, step=step).read(result.checkpoint) \
        .assert_existing_objects_matched()
    checked, f32 = 0, {k: np.float32(v) for k, v in values.items()}
    for optim, models in ((g_optim, nets.generators), (d_optim, nets.discriminators)):
        for model in models:
            for name, entry in tf1_name_map(model).items():
                np.testing.assert_array_equal(entry.variable.numpy(), f32[name])
                if entry.variable.trainable:
                    m, v = adam_slots(optim, entry.variable)
                    np.testing.assert_array_equal(m.numpy(), f32[name + "/Adam"])
                    np.testing.assert_array_equal(v.numpy(), f32[name + "/Adam_1"])
                checked += 1
    assert checked == len(weights)


@pytest.mark.slow
def test_binary_state_file_and_bad_paths(tmp_path, capsys):
    rng = np.random.default_rng(12)
    src = tmp_path / "src"
    prefix = write_tf1(str(src / "UGATIT_light.model"), tf1_weights(True, rng), step=9)
    (src / "checkpoint").write_bytes(b"\xff\xfe\x00\x80 not a text proto \xc3\x28")
    out = str(tmp_path / "out")
    result = convert_tf1(str(src), "t", checkpoint_dir=out, img_size=32, log=quiet)
    assert result.checkpoint.endswith("ckpt-9")  # the newest .index, the state file ignored
    for name in os.listdir(src):
        if name != "checkpoint":
            os.remove(src / name)
    with pytest.raises(ConversionError, match=r"holds no TF1 checkpoint \(no \.index file\)"):
        convert_tf1(str(src), "t", checkpoint_dir=out, img_size=32, log=quiet)
    assert prefix.endswith("-9")
    for argv, message in (
            (["--source", "tf1", "--checkpoint", str(tmp_path / "nope")],
             f"error: --checkpoint {tmp_path / 'nope'}: no such TF1 checkpoint"),
            (["--source", "pytorch", "--checkpoint", str(src)],
             f"error: --checkpoint {src} is not a file (a .pt file is expected)"),
            (["--source", "tf1", "--checkpoint", str(src)],
             f"error: {src} holds no TF1 checkpoint (no .index file)"),
            (["--source", "tf1", "--checkpoint", str(src), "--verify_image", str(src)],
             f"error: --verify_image {src} is not a file")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and len(err.splitlines()) == 1, err


def test_verify_image_and_checkpoint_dir_are_checked_before_converting(tmp_path, capsys):
    """A bad --verify_image used to be found after the conversion (with --force, after the
    old checkpoint was replaced); a --checkpoint_dir under a file after reading everything."""
    rng = np.random.default_rng(13)
    src = tmp_path / "src"
    write_tf1(str(src / "UGATIT_light.model"), tf1_weights(True, rng), step=9)
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    common = ["--source", "tf1", "--checkpoint", str(src), "--img_size", "32", "--dataset", "t"]
    for extra, message in (
            (["--checkpoint_dir", str(tmp_path / "ck"), "--verify_image", str(junk)],
             f"error: --verify_image {junk}: not a JPEG, PNG (APNG), GIF, WebP, BMP or TIFF "
             f"image"),
            (["--checkpoint_dir", str(notes / "x")],
             f"error: --checkpoint_dir {notes / 'x'}: {notes} is a file, not a folder")):
        assert cli.main(common + extra) == 2
        err = capsys.readouterr()
        assert err.err.startswith(message) and len(err.err.splitlines()) == 1, err.err
        assert err.out == ""  # refused before any work
    assert not (tmp_path / "ck").exists() and notes.read_text() == "mine"
