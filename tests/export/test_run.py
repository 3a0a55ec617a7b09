"""ugatit_tf.export.run.export_models (and main.py --phase export): from a checkpoint to the
SavedModel, models.config, README and TFLite files; options from Config; argument errors
before any work."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.cli_checkpoint import write_demo_checkpoint
from tests.export.helpers import SIZE, encode, rgb, tiny_config
from ugatit_tf.config import Config
from ugatit_tf.export import run as ex
from ugatit_tf.export.pixels import resize_uint8
from ugatit_tf.export.saved_model import ExportError
from ugatit_tf.export.tflite import QUANTIZATIONS, non_builtin_ops, run_tflite, tflite_ops
from ugatit_tf.model.checkpoints import make_checkpoint, model_checkpoint_dir, write_config
from ugatit_tf.model.networks import Networks

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "main.py")
MODEL_DIR = "UGATIT_light_demo_lsgan_4resblock_5dis_1_1_10_10_1000_sn_smoothing"

def _checkpointed(tmp_path, **changes):
    config = tiny_config(checkpoint_dir=str(tmp_path / "checkpoints"),
                         dataset_dir=str(tmp_path / "datasets"), **changes)
    tf.random.set_seed(7)
    nets = Networks(config, discriminators=False)
    folder = model_checkpoint_dir(config)
    manager = tf.train.CheckpointManager(make_checkpoint(nets), folder, max_to_keep=1)
    manager.save()
    write_config(folder, config)
    return config, nets


@pytest.mark.slow
def test_export_models_from_checkpoint(tmp_path, capsys):
    config, nets = _checkpointed(tmp_path)
    export_dir = str(tmp_path / "export")
    readme = str(tmp_path / "readme.md")
    written = ex.export_models(config, export_dir, export_format="all", quantize="float16",
                               version=3, readme_path=readme)
    assert written["saved_model"] == os.path.abspath(os.path.join(export_dir, "tiny", "3"))
    assert set(written) == {"saved_model", "models_config", "readme", "a2b_float16",
                            "b2a_float16"}
    assert written["a2b_float16"].endswith(os.path.join("tflite", "tiny", "3",
                                                        "a2b_float16.tflite"))
    assert 'name: "tiny"' in open(written["models_config"]).read()
    text = open(readme).read()
    assert "-e MODEL_NAME=tiny -t tensorflow/serving" in text
    assert "docker run -p 8501:8501" in capsys.readouterr().out
    # the restored weights are the checkpoint's
    loaded = tf.saved_model.load(written["saved_model"])
    x = tf.random.stateless_uniform([1, SIZE, SIZE, 3], seed=[5, 6], minval=-1, maxval=1)
    for direction, gen in (("a2b", nets.genA2B), ("b2a", nets.genB2A)):
        y = loaded.signatures[direction](images=x)["images"].numpy()
        assert np.max(np.abs(y - gen(x)[0].numpy())) <= 1e-5
    with pytest.raises(ExportError, match=r"tiny/3 already exists.*new --version"):
        ex.export_models(config, export_dir, version=3, readme_path=None)
    with pytest.raises(ExportError, match="already exists"):
        ex.export_models(config, export_dir, export_format="tflite", quantize="float16",
                         version=3)


@pytest.mark.slow
def test_export_models_takes_options_from_config(nets, tmp_path):
    if not all(hasattr(Config, f) for f in ("export_dir", "export_format", "version")):
        pytest.skip("Config has no export flags")
    config = tiny_config().replace(export_dir=str(tmp_path / "out"), export_format="saved_model",
                                   version=7)
    written = ex.export_models(config, nets=nets, readme_path=None, model_name="mine")
    assert written["saved_model"] == str(tmp_path / "out" / "mine" / "7")
    assert 'name: "mine"' in open(written["models_config"]).read()


def test_export_models_argument_errors(tmp_path):
    config = tiny_config(checkpoint_dir=str(tmp_path / "none"))
    with pytest.raises(ExportError, match="--export_format"):
        ex.export_models(config, str(tmp_path), export_format="onnx")
    for export_format in ("tflite", "saved_model"):  # checked even where it is not used
        with pytest.raises(ExportError, match="--quantize"):
            ex.export_models(config, str(tmp_path), export_format=export_format,
                             quantize="int4")
    with pytest.raises(ExportError, match="--version"):
        ex.export_models(config, str(tmp_path), version=0)
    with pytest.raises(ExportError, match="--max_pixels"):
        ex.export_models(config, str(tmp_path), max_pixels=0)
    from ugatit_tf.model.checkpoints import CheckpointError
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ex.export_models(config, str(tmp_path))
    bf16 = config.replace(mixed_precision="mixed_bfloat16")
    for export_format in ("tflite", "all"):
        with pytest.raises(ExportError) as e:
            ex.export_models(bf16, str(tmp_path / "out"), export_format=export_format)
        assert str(e.value) == ("--mixed_precision mixed_bfloat16 applies to the SavedModel "
                                "only; TFLite files take --quantize (float16, dynamic, int8) "
                                "instead: export them without --mixed_precision")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_models_in_bfloat16(tmp_path):
    """--mixed_precision mixed_bfloat16 reaches the SavedModel: its generators convolve in
    bfloat16 (about 4x faster with AMX), its signatures still take and give float32, and
    the outputs stay within bfloat16 rounding of the float32 model (8 bits of mantissa:
    relative steps of 2**-8, a few 1/100 on [-1, 1] pixels after ~20 layers)."""
    config, nets = _checkpointed(tmp_path, mixed_precision="mixed_bfloat16")
    written = ex.export_models(config, str(tmp_path / "export"), readme_path=None)
    loaded = tf.saved_model.load(written["saved_model"])
    function = loaded.signatures["a2b"]
    dtypes = {node.attr["T"].type for f in function.graph.as_graph_def().library.function
              for node in f.node_def if node.op in ("Conv2D", "_FusedConv2D")}
    assert tf.bfloat16.as_datatype_enum in dtypes, dtypes
    x = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[5, 6], minval=-1, maxval=1)
    out = function(images=x)
    assert out["images"].dtype == tf.float32
    error = np.max(np.abs(out["images"].numpy() - nets.genA2B(x)[0].numpy()))
    assert 1e-4 < error < 0.05, error


@pytest.mark.slow
def test_export_models_all_quantizations_with_dataset(tmp_path):
    config, nets = _checkpointed(tmp_path)
    for split, seed in (("trainA", 0), ("trainB", 50)):
        folder = tmp_path / "datasets" / "tiny" / split
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"{i}.png").write_bytes(encode(rgb(40, 40, seed=seed + i), "png"))
    written = ex.export_models(config, str(tmp_path / "export"), export_format="tflite",
                               quantize="all", readme_path=None)
    assert set(written) == {f"{d}_{q}" for d in ex.DIRECTIONS for q in QUANTIZATIONS}
    sizes = {k: os.path.getsize(v) for k, v in written.items()}
    assert sizes["a2b_float16"] < sizes["a2b_float32"]
    pixels = resize_uint8(tf.constant(rgb(40, 40, seed=3)), SIZE).numpy()
    for key, path in written.items():
        assert non_builtin_ops(tflite_ops(path)) == []
        out = run_tflite(path, pixels)
        assert out["image"].shape == (1, SIZE, SIZE, 3) and out["image"].dtype == np.uint8
    # no calibration images for int8 -> a clear error naming the flag, before anything is
    # written (not even the SavedModel or the other quantizations)
    empty = tiny_config(checkpoint_dir=config.checkpoint_dir, dataset_dir=str(tmp_path / "x"))
    with pytest.raises(ExportError, match="--representative_dir"):
        ex.export_models(empty, str(tmp_path / "export2"), export_format="all",
                         quantize="all")
    assert not (tmp_path / "export2").exists()


@pytest.mark.slow
def test_main_export_model_name_version_and_readme(tmp_path):
    """main.py --phase export: --model_name names the export (as the serve phase's), the
    README written next to it shows the exported --version, a later export rewrites the
    README it wrote, and a README.md of the user's own is kept as it was."""
    write_demo_checkpoint(str(tmp_path / "checkpoints"))
    export_dir = tmp_path / "export"
    readme = export_dir / "README.md"

    def export(version):
        res = subprocess.run(
            [sys.executable, MAIN, "--phase", "export", "--checkpoint",
             f"checkpoints/{MODEL_DIR}", "--model_name", "anime", "--export_dir", "export",
             "--version", str(version)], cwd=tmp_path, capture_output=True, text=True,
            timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        return res.stdout

    export(2)
    assert (export_dir / "anime" / "2" / "saved_model.pb").is_file()
    assert not (export_dir / "demo").exists()
    assert "saved_model_cli show --dir export/anime/2 --all" in readme.read_text()
    assert '"export/tflite/anime/2/a2b_float16.tflite"' in readme.read_text()
    export(3)
    assert "saved_model_cli show --dir export/anime/3 --all" in readme.read_text()
    assert 'name: "anime"' in (export_dir / "models.config").read_text()  # ours: rewritten
    readme.write_text("# my notes\n")
    mine = 'model_config_list {\n  config {\n    name: "mine"\n    base_path: "/models/mine"\n' \
           '    model_platform: "tensorflow"\n    model_version_policy { all {} }\n  }\n}\n'
    (export_dir / "models.config").write_text(mine)
    out = export(4)
    assert readme.read_text() == "# my notes\n"
    assert ("[export] kept export/README.md: it was not written by the export (the serving "
            "instructions are in docs/serving.md)") in out
    assert (export_dir / "models.config").read_text() == mine  # a user's config is kept
    assert ("[export] kept export/models.config: it was not written by the export; add anime "
            "(base_path /models/anime) to it yourself") in out
    assert (export_dir / "anime" / "4" / "saved_model.pb").is_file()
