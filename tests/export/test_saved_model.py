"""ugatit_tf.export.saved_model: the SavedModel's layout and signatures (compared with the
Keras generators), no overwriting, saved_model_cli, models.config and the README text."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.export.helpers import SIZE, decode, encode, keras_uint8, rgb, run_bytes, tiny_config
from ugatit_tf.export import saved_model as ex
from ugatit_tf.export.pixels import from_uint8, resize_uint8, to_uint8

def test_saved_model_layout_and_signatures(saved_model_dir, loaded):
    assert os.path.basename(saved_model_dir) == "1"
    assert os.path.exists(os.path.join(saved_model_dir, "saved_model.pb"))
    assert set(loaded.signatures.keys()) == set(ex.SIGNATURES)
    # no temporary folder left behind
    assert os.listdir(os.path.dirname(saved_model_dir)) == ["1"]
    sig = loaded.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["image_bytes"]
    assert sig.structured_input_signature[1]["image_bytes"].dtype == tf.string
    assert list(sig.structured_outputs) == ["image_bytes"]
    a2b = loaded.signatures["a2b"]
    assert a2b.structured_input_signature[1]["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    assert set(a2b.structured_outputs) == {"images", "cam_logits", "heatmaps"}


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_float_signatures_equal_keras(nets, loaded, direction):
    generator = nets.genA2B if direction == "a2b" else nets.genB2A
    x = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[3, 4], minval=-1, maxval=1)
    out = loaded.signatures[direction](images=x)
    y, cam, heat = generator(x, training=False)
    assert out["images"].shape == (2, SIZE, SIZE, 3)
    assert out["cam_logits"].shape == (2, 2)
    assert out["heatmaps"].shape == (2, SIZE // 4, SIZE // 4)
    assert np.max(np.abs(out["images"].numpy() - y.numpy())) <= 1e-5
    assert np.max(np.abs(out["cam_logits"].numpy() - cam.numpy())) <= 1e-5
    assert np.max(np.abs(out["heatmaps"].numpy() - heat.numpy())) <= 1e-5 * max(
        1.0, float(np.max(np.abs(heat.numpy()))))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "gif"])
def test_bytes_signature_round_trip(loaded, fmt):
    image = rgb(40, 50, seed=2)
    data = encode(image, fmt)
    out_a2b, out_other = run_bytes(loaded, [data, data]), run_bytes(loaded, [data], "b2a_bytes")
    for png in out_a2b + out_other:
        assert png.startswith(b"\x89PNG")
        assert decode(png).shape == (40, 50, 3)
    assert out_a2b[0] == out_a2b[1]
    small = run_bytes(loaded, [data], "a2b_bytes_model_size")
    assert decode(small[0]).shape == (SIZE, SIZE, 3)
    # the bytes path is decode -> resize to the model size -> generator -> resize back
    assert run_bytes(loaded, [data], "a2b_bytes") == out_a2b[:1]


@pytest.mark.parametrize("direction", ["a2b", "b2a"])
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_bytes_equals_float_path_at_model_size(nets, loaded, direction, fmt):
    generator = nets.genA2B if direction == "a2b" else nets.genB2A
    image = rgb(SIZE, SIZE, seed=5)
    data = encode(image, fmt)
    pixels = tf.io.decode_image(data, channels=3).numpy()  # what the graph decodes
    expected = keras_uint8(generator, pixels[None])[0]
    signature = "serving_default" if direction == "a2b" else "b2a_bytes"
    got = decode(run_bytes(loaded, [data], signature)[0])
    assert np.max(np.abs(got.astype(int) - expected.astype(int))) <= 1
    got_model = decode(run_bytes(loaded, [data], f"{direction}_bytes_model_size")[0])
    assert np.max(np.abs(got_model.astype(int) - expected.astype(int))) <= 1
    # the float signature agrees too
    y = loaded.signatures[direction](images=from_uint8(pixels[None]))["images"]
    assert np.max(np.abs(to_uint8(y).numpy()[0].astype(int) - expected.astype(int))) <= 1


def test_bytes_resize_matches_original_preprocessing(nets, loaded):
    """A 64x48 input is bilinearly resized to 32x32 (as cv2.resize), rounded to uint8."""
    cv2 = pytest.importorskip("cv2")
    image = rgb(48, 64, seed=9)
    data = encode(image, "png")
    resized = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    ours = resize_uint8(tf.constant(image), SIZE).numpy()
    assert np.max(np.abs(ours.astype(int) - resized.astype(int))) <= 1
    expected = keras_uint8(nets.genA2B, ours[None])[0]
    got = decode(run_bytes(loaded, [data], "a2b_bytes_model_size")[0])
    assert np.max(np.abs(got.astype(int) - expected.astype(int))) <= 1


def test_refuses_to_overwrite_a_version(nets, saved_model_dir):
    with pytest.raises(ex.ExportError, match="already exists.*new --version"):
        ex.export_saved_model(nets, tiny_config(), saved_model_dir)


def test_saved_model_cli_lists_signatures(saved_model_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run(command + ["show", "--dir", saved_model_dir, "--all"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ex.SIGNATURES:
        assert f"signature_def['{name}']" in result.stdout
    assert "image_bytes" in result.stdout and "cam_logits" in result.stdout


def test_models_config_and_instructions(tmp_path):
    (tmp_path / "selfie2anime" / "1").mkdir(parents=True)
    (tmp_path / "selfie2anime" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "tflite" / "selfie2anime" / "1").mkdir(parents=True)
    path = ex.write_models_config(str(tmp_path))
    text = open(path).read()
    assert text == ('model_config_list {\n  config {\n    name: "selfie2anime"\n'
                    '    base_path: "/models/selfie2anime"\n    model_platform: "tensorflow"\n'
                    '  }\n}\n')
    readme = ex.serving_instructions("export", "selfie2anime", 256)
    assert ex.docker_command("export", "selfie2anime") in readme
    assert ("docker run -p 8501:8501 --mount type=bind,source=$(pwd)/export/selfie2anime,"
            "target=/models/selfie2anime -e MODEL_NAME=selfie2anime -t tensorflow/serving"
            in readme)
    assert "http://localhost:8501/v1/models/selfie2anime:predict" in readme
