"""--checkpoint: which checkpoint a path names and which flags come from its config.json; the
flags given on the command line; the grouped --help."""

import os
import re

import pytest
import tensorflow as tf

from tests.cli_checkpoint import write_demo_checkpoint
from ugatit_tf import cli
from ugatit_tf.config import HELP_GROUPS, Config
from ugatit_tf.model.checkpoints import (CheckpointError, latest_checkpoint, load_networks,
                                         resolve_checkpoint)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_demo_checkpoint(str(tmp_path_factory.mktemp("ck") / "checkpoints"))


def test_latest_checkpoint_reads_the_state_file_like_tensorflow(tmp_path):
    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=2)
    assert latest_checkpoint(str(tmp_path)) is None
    for n in (3, 7, 9):
        manager.save(checkpoint_number=n)
        assert latest_checkpoint(str(tmp_path)) == tf.train.latest_checkpoint(str(tmp_path))
    assert latest_checkpoint(str(tmp_path)).endswith("ckpt-9")
    os.remove(str(tmp_path / "ckpt-9.index"))  # listed but gone: no checkpoint
    assert latest_checkpoint(str(tmp_path)) is None


def test_checkpoint_alone_brings_its_flags(folder):
    config, given = cli.parse_args(["--phase", "test", "--checkpoint", folder])
    assert given == {"phase", "checkpoint"}
    resolved = resolve_checkpoint(config, given, log=lambda *a: None)
    assert resolved.checkpoint == os.path.join(folder, "ckpt-1")
    assert (resolved.dataset, resolved.light, resolved.img_size, resolved.ch,
            resolved.n_dis) == ("demo", True, 64, 16, 5)
    assert resolved.model_dir == os.path.basename(folder)
    nets, prefix = load_networks(resolved)  # restores the named checkpoint
    assert prefix == resolved.checkpoint and nets.genA2B.built


def test_a_ckpt_prefix_and_a_given_dataset(folder):
    prefix = os.path.join(folder, "ckpt-1")
    config, given = cli.parse_args(["--phase", "test", "--checkpoint", prefix,
                                    "--dataset", "other"])
    resolved = resolve_checkpoint(config, given, log=lambda *a: None)
    assert resolved.checkpoint == prefix
    assert resolved.dataset == "other" and resolved.ch == 16  # given flags stay


def test_flags_without_checkpoint_find_the_folder_and_fill_the_rest(folder):
    root = os.path.dirname(folder)
    config, given = cli.parse_args(["--phase", "test", "--dataset", "demo", "--light", "True",
                                    "--n_dis", "5", "--checkpoint_dir", root])
    resolved = resolve_checkpoint(config, given, log=lambda *a: None)
    assert (resolved.ch, resolved.img_size) == (16, 64)  # not given: from config.json


def test_a_contradicting_flag_is_named(folder):
    config, given = cli.parse_args(["--phase", "test", "--checkpoint", folder, "--sn", "False",
                                    "--ch", "8"])
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint(config, given)
    assert str(e.value) == (f"the checkpoint in {folder} was trained with --ch 16 (you gave 8), "
                            f"--sn True (you gave False); pass the same flag values to use it")


def test_full_model_only_at_its_trained_size(tmp_path):
    folder = write_demo_checkpoint(str(tmp_path), light=False, img_size=32, ch=4, n_res=1,
                                   n_dis=4)
    config, given = cli.parse_args(["--phase", "test", "--checkpoint", folder,
                                    "--img_size", "64"])
    with pytest.raises(CheckpointError, match=r"trained with --img_size 32 \(you gave 64\)"):
        resolve_checkpoint(config, given)


def test_light_model_at_another_size_gets_its_own_results_folder(folder):
    lines = []
    config, given = cli.parse_args(["--phase", "eval", "--checkpoint", folder,
                                    "--img_size", "128", "--result_dir", "out"])
    resolved = resolve_checkpoint(config, given, log=lines.append)
    assert resolved.img_size == 128 and resolved.result_dir == os.path.join("out", "128px")
    assert lines == [f" [*] The light model {folder} was trained at --img_size 64; running it "
                     f"at 128 px, results in {os.path.join('out', '128px')}"]
    same, given = cli.parse_args(["--phase", "eval", "--checkpoint", folder,
                                  "--img_size", "64", "--result_dir", "out"])
    assert resolve_checkpoint(same, given, log=lines.append).result_dir == "out"


def test_help_is_grouped_and_every_flag_is_in_it(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    used = {f.metadata["group"] for f in Config.__dataclass_fields__.values()}
    positions = [text.index(title + ":") for key, title in HELP_GROUPS if key in used]
    assert len(positions) >= 9
    assert positions == sorted(positions)
    for f in Config.__dataclass_fields__.values():  # one option line per flag
        name = f.metadata.get("flag", f.name)
        assert len(re.findall(rf"^  --{name} ", text, re.MULTILINE)) == 1, name
    assert "SUPPRESS" not in text and "(default: 256)" in text
