"""ugatit_tf.export.tflite: builtin ops only, uint8/float I/O, agreement with the Keras
generator per quantization, clear refusals; and the generator's TFLite-friendly upsampling."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

from tests.export.helpers import SIZE, keras_uint8, rgb, tiny_config
from ugatit_tf.evaluate.metrics import psnr
from ugatit_tf.export import tflite as ex
from ugatit_tf.export.pixels import from_uint8, resize_uint8
from ugatit_tf.export.saved_model import ExportError
from ugatit_tf.model import layers
from ugatit_tf.model.networks import Networks

def test_generator_upsample_modes_agree():
    """The TFLite export asks the generator for upsample="repeat" (separate nearest x2 with
    4-D ops, then the conv); the default "fused" sub-pixel convolution gives the same image."""
    x = tf.random.stateless_normal([2, 3, 5, 4], seed=[1, 2])
    repeated = np.repeat(np.repeat(x.numpy(), 2, axis=1), 2, axis=2)
    assert np.array_equal(layers.nearest_upsample_2x(x).numpy(), repeated)
    tf.random.set_seed(3)
    gen = Networks(tiny_config(), discriminators=False).genA2B
    images = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[7, 8], minval=-1, maxval=1)
    fused, repeat = gen(images), gen(images, upsample="repeat")
    for a, b in zip(fused, repeat):
        assert np.max(np.abs(a.numpy() - b.numpy())) <= 1e-5 * max(1.0, np.abs(a.numpy()).max())
    with pytest.raises(ValueError, match=r"upsample must be one of \('fused', 'repeat'\)"):
        gen(images, upsample="bilinear")


def _calibration():
    for i in range(8):
        yield rgb(40, 40, seed=100 + i)


@pytest.fixture(scope="module")
def scaled_nets():
    """Random weights with He-scaled kernels: activations of order 1 everywhere, as in a
    trained model. With the 0.02 init the decoder's AdaLIN gamma is ~1e-7 and the output is
    nearly constant, which says little about quantization error."""
    tf.random.set_seed(2)
    scaled = Networks(tiny_config(), discriminators=False)
    rng = np.random.default_rng(0)
    for gen in scaled.generators:
        for v in gen.variables:
            if v.path.endswith("kernel"):
                fan_in = int(np.prod(v.shape[:-1]))
                v.assign(rng.normal(0, np.sqrt(2.0 / fan_in), v.shape).astype(np.float32))
            elif v.path.endswith("bias") or v.path.endswith("beta"):
                v.assign(rng.normal(0, 0.1, v.shape).astype(np.float32))
    return scaled


@pytest.fixture(scope="module")
def tflite_models(scaled_nets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    config = tiny_config()
    out = {}
    for key, q, float_io in (("float32_io", "float32", True), ("float32", "float32", False),
                             ("float16_io", "float16", True), ("dynamic", "dynamic", False),
                             ("int8", "int8", False)):
        out[key] = ex.export_tflite(scaled_nets.genA2B, config,
                                    str(folder / f"a2b_{key}.tflite"), q,
                                    _calibration if q == "int8" else None, float_io=float_io)
    return out


@pytest.fixture(scope="module")
def test_pixels():
    return np.stack([resize_uint8(tf.constant(rgb(48, 48, seed=s)), SIZE).numpy()
                     for s in (21, 22)])


def test_tflite_files_have_builtin_ops_only(tflite_models):
    for key, path in tflite_models.items():
        ops = ex.tflite_ops(path)
        assert "CONV_2D" in ops
        assert ex.non_builtin_ops(ops) == [], key
        assert not any(op.startswith("Flex") for op in ops)
    int8_ops = ex.tflite_ops(tflite_models["int8"])
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=tflite_models["int8"])
    interpreter.allocate_tensors()
    conv_types = {interpreter._get_tensor_details(op["outputs"][0], 0)["dtype"]
                  for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"}
    assert conv_types == {np.int8}, conv_types
    assert int8_ops.count("CONV_2D") == ex.tflite_ops(tflite_models["float32"]).count("CONV_2D")


def test_tflite_reflect_pads_stay_inside_the_xnnpack_delegate(tflite_models):
    """No MirrorPad in the files (XNNPACK does not run it; layers.TFLITE_KERNELS pads by
    slices), so the delegate takes the float network in a few pieces instead of one per
    convolution (light 256 px: 5 instead of 23; float32 0.57 -> 0.44 s, dynamic 0.23 ->
    0.10 s, int8 0.40 -> 0.25 s)."""
    from ai_edge_litert.interpreter import Interpreter
    for key in ("float32", "dynamic", "int8"):
        ops = ex.tflite_ops(tflite_models[key])
        assert "MIRROR_PAD" not in ops and "CONCATENATION" in ops, key
        if key == "int8":  # its quantize / dequantize steps make many pieces either way
            continue
        interpreter = Interpreter(model_path=tflite_models[key], num_threads=2)
        interpreter.allocate_tensors()
        names = [op["op_name"] for op in interpreter._get_ops_details()]
        assert 0 < names.count("DELEGATE") < names.count("CONV_2D") / 2, (key, names)


def test_tflite_uint8_io_is_plain_pixels(tflite_models):
    """uint8 models take and give plain pixels (no quantization parameters to apply)."""
    from ai_edge_litert.interpreter import Interpreter
    for key in ("float32", "dynamic", "int8"):
        runner = Interpreter(model_path=tflite_models[key]).get_signature_runner()
        (inp,) = runner.get_input_details().values()
        outs = runner.get_output_details()
        assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, SIZE, SIZE, 3]
        assert inp["quantization"] == (0.0, 0), key
        assert outs["image"]["dtype"] == np.uint8 and outs["image"]["quantization"] == (0.0, 0)
        assert outs["heatmap"]["dtype"] == np.float32
        assert list(outs["heatmap"]["shape"]) == [1, SIZE // 4, SIZE // 4]


def test_tflite_float32_matches_keras(scaled_nets, tflite_models, test_pixels):
    for pixels in test_pixels:
        x = from_uint8(pixels[None])
        y, _, heat = scaled_nets.genA2B(x, training=False)
        out = ex.run_tflite(tflite_models["float32_io"], x.numpy())
        assert out["image"].dtype == np.float32 and out["image"].shape == (1, SIZE, SIZE, 3)
        assert np.max(np.abs(out["image"] - y.numpy())) <= 1e-4
        assert out["heatmap"].shape == (1, SIZE // 4, SIZE // 4)
        scale = max(1.0, float(np.max(np.abs(heat.numpy()))))
        assert np.max(np.abs(out["heatmap"] - heat.numpy())) <= 1e-4 * scale
        out8 = ex.run_tflite(tflite_models["float32"], pixels)
        assert out8["image"].dtype == np.uint8
        expected = keras_uint8(scaled_nets.genA2B, pixels[None])
        assert np.max(np.abs(out8["image"].astype(int) - expected.astype(int))) <= 1


def test_tflite_float16_within_1e2(scaled_nets, tflite_models, test_pixels):
    x = from_uint8(test_pixels[:1])
    y, _, _ = scaled_nets.genA2B(x, training=False)
    out = ex.run_tflite(tflite_models["float16_io"], x.numpy())
    assert np.max(np.abs(out["image"] - y.numpy())) <= 1e-2


def test_tflite_quantized_psnr(tflite_models, test_pixels):
    reference = [ex.run_tflite(tflite_models["float32"], p)["image"][0] for p in test_pixels]
    for key, bound in (("dynamic", 25.0), ("int8", 18.0)):
        outputs = [ex.run_tflite(tflite_models[key], p) for p in test_pixels]
        assert all(o["image"].dtype == np.uint8 for o in outputs)
        assert all(np.all(np.isfinite(o["heatmap"])) for o in outputs)
        value = np.mean([psnr(o["image"][0], r) for o, r in zip(outputs, reference)])
        print(f"\n[tflite] {key} PSNR vs float32 (tiny random model): {value:.2f} dB")
        assert value > bound, (key, value)


def test_tflite_latency_helper(tflite_models):
    from tools.benchmarking import tflite_latency  # the benchmark's helper, on these files
    stats = tflite_latency(tflite_models["float32"], runs=2, warmup=1)
    assert stats["runs"] == 2 and stats["threads"] == 2
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["bytes"] == os.path.getsize(tflite_models["float32"])


def test_tflite_refuses_overwrite_and_needs_calibration(scaled_nets, tflite_models, tmp_path):
    with pytest.raises(ExportError, match="already exists"):
        ex.export_tflite(scaled_nets.genA2B, tiny_config(), tflite_models["float32"])
    with pytest.raises(ExportError, match="representative images"):
        ex.export_tflite(scaled_nets.genA2B, tiny_config(), str(tmp_path / "x.tflite"), "int8")
    with pytest.raises(ExportError, match="--quantize must be one of"):
        ex.export_tflite(scaled_nets.genA2B, tiny_config(), str(tmp_path / "x.tflite"), "int4")


def test_tflite_refuses_over_2gb(tmp_path):
    """279M float32 parameters per generator would not fit; float16 would (estimate only)."""
    huge = types.SimpleNamespace(variables=[types.SimpleNamespace(shape=(600_000_000,))])
    with pytest.raises(ExportError, match=r"2\.24 GiB, over the 2 GiB FlatBuffer limit"):
        ex.export_tflite(huge, tiny_config(), str(tmp_path / "big.tflite"), "float32")
    assert ex.estimate_tflite_bytes(huge, "float16") < ex.FLATBUFFER_LIMIT


def test_tflite_fails_clearly_on_flex_ops(tmp_path):
    import keras

    class NeedsFlex(keras.Model):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(3,), initializer="ones", name="w")

        def call(self, x, training=False, upsample="fused", kernels="reference"):
            y = tf.math.bessel_i1e(x * self.w)  # no TFLite builtin for BesselI1e
            return y, tf.zeros([1, 2]), tf.reduce_sum(y, -1)

    model = NeedsFlex()
    model(tf.zeros([1, SIZE, SIZE, 3]))
    with pytest.raises(ExportError, match="(?s)BesselI1e.*no Flex"):
        ex.export_tflite(model, tiny_config(), str(tmp_path / "flex.tflite"))
    assert not (tmp_path / "flex.tflite").exists()
