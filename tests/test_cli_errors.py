"""User mistakes through main.py and tools/*.py: exit status 2, one line on stderr that names
the flag or file, no traceback, nothing written (not even an empty folder)."""

import os
import subprocess
import sys

import pytest

from tests.cli_checkpoint import write_demo_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = "UGATIT_light_demo_lsgan_4resblock_5dis_1_1_10_10_1000_sn_smoothing"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A working folder: a demo checkpoint, an old-style release, a photo, a text file."""
    root = tmp_path_factory.mktemp("cli")
    write_demo_checkpoint(str(root / "checkpoints"))
    release = root / "release"  # what the original's training writes: no config.json
    release.mkdir()
    (release / "checkpoint").write_text('model_checkpoint_path: "UGATIT.model-1000001"\n')
    (release / "UGATIT.model-1000001.index").write_bytes(b"")
    (root / "photos").mkdir()
    (root / "photos" / "me.png").write_bytes(open(os.path.join(ROOT, "docs",
                                                               "demo_data.png"), "rb").read())
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "bad_config").mkdir()
    (root / "bad_config" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (root / "bad_config" / "ckpt-1.index").write_bytes(b"")
    (root / "bad_config" / "config.json").write_text("{not json")
    return root


CKPT = f"checkpoints/{MODEL_DIR}"
DATA = ["--dataset_dir", os.path.join(ROOT, "datasets")]
MAIN = [os.path.join(ROOT, "main.py")]

# (command, fragments of the one stderr line)
MISTAKES = [
    (MAIN + ["--phase", "test", "--dataset", "demo"] + DATA,
     ["error: no checkpoint found in checkpoints/UGATIT_demo_lsgan_4resblock_6dis_1_1_10_10_"
      "1000_sn_smoothing (the flags name that folder); to use a checkpoint of --dataset demo: "
      f"python main.py --phase test --dataset_dir {DATA[1]} --checkpoint {CKPT}"]),
    (MAIN + ["--phase", "export", "--dataset", "demo", "--light", "True", "--n_dis", "6"],
     [f"to use a checkpoint of --dataset demo: python main.py --phase export --checkpoint "
      f"{CKPT}"]),
    (MAIN + ["--phase", "test", "--checkpoint", "nothere"],
     ["error: --checkpoint nothere does not exist"]),
    (MAIN + ["--phase", "test", "--checkpoint", "notes.txt"],
     ["error: --checkpoint notes.txt is not a checkpoint: give a checkpoint folder"]),
    (MAIN + ["--phase", "test", "--checkpoint", "release"],
     ["error: --checkpoint release has no config.json beside it", "python tools/convert_"
      "checkpoint.py --source tf1 --checkpoint release/UGATIT.model-1000001 --dataset NAME"]),
    (MAIN + ["--phase", "test", "--checkpoint", "bad_config"],
     ["error: cannot read bad_config/config.json: "]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--variant", "pytorch"],
     [f"error: the checkpoint in {CKPT} was trained with --variant tf1 (you gave pytorch)"]),
    (MAIN + ["--phase", "eval", "--checkpoint", CKPT, "--light", "False"],
     ["was trained with --light True (you gave False)"]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--ch", "32"],
     ["was trained with --ch 16 (you gave 32)"]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--input", "nothere.jpg"],
     ["error: --input nothere.jpg: does not exist"]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--input", "photos/*.jpg"],
     ["error: --input photos/*.jpg: no images or videos found there (jpg, "]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--input", "empty"],
     ["error: --input empty: no images or videos found there"]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--input", "photos",
             "--output", "notes.txt/out"],
     ["error: --output notes.txt: is an existing file, not a folder"]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--result_dir", "notes.txt"],
     ["error: --result_dir notes.txt: is an existing file, not a folder"]),
    (MAIN + ["--phase", "export", "--checkpoint", CKPT, "--export_dir", "notes.txt/x"],
     ["error: --export_dir notes.txt: is an existing file, not a folder"]),
    (MAIN + ["--phase", "eval", "--checkpoint", CKPT, "--inception_weights", "none.h5"],
     ["error: --inception_weights none.h5 is not a file"]),
    (MAIN + ["--phase", "train", "--checkpoint", CKPT],
     ["error: --checkpoint is for --phase test, export, eval, serve; --phase train uses"]),
    (MAIN + ["--phase", "export", "--checkpoint", CKPT, "--input", "photos"],
     ["error: --input is for --phase test, not --phase export"]),
    (MAIN + ["--phase", "export", "--checkpoint", CKPT, "--export_format", "all",
             "--quantize", "all"],
     [f"error: int8 quantization of a2b needs representative images of its input domain and "
      f"{os.path.join('datasets', 'demo', 'trainA')} has none; pass --representative_dir"]),
    (MAIN + ["--phase", "train", "--epoch", "-1"],
     ["main.py: error: --epoch must be a whole number >= 1, got -1"]),
    (MAIN + ["--phase", "train", "--img_size", "30"],
     ["main.py: error: --img_size must be a multiple of 4"]),
    (MAIN + ["--phase", "test", "--checkpoint", CKPT, "--dataset", "nodata"] + DATA,
     ["error: data set folder ", "nodata does not exist"]),
    ([os.path.join(ROOT, "tools", "make_demo_dataset.py"), "--out", "demo", "--size", "3"],
     ["make_demo_dataset.py: error: --size must be >= 16"]),
    ([os.path.join(ROOT, "tools", "convert_checkpoint.py"), "--source", "pytorch",
      "--checkpoint", "notes.txt", "--dataset", "t"],  # after TensorFlow's import: no log lines
     ["error: cannot read the PyTorch checkpoint notes.txt: notes.txt: not a torch checkpoint"]),
    ([os.path.join(ROOT, "tools", "benchmark.py"), "infer", "--configs", "light:30:4:1"],
     ["benchmark.py: error: --configs light:30:4:1: --img_size must be a multiple of 4"]),
    ([os.path.join(ROOT, "tools", "benchmark.py"), "infer", "--repeats", "-1"],
     ["benchmark.py: error: --repeats must be >= 0, got -1"]),
    ([os.path.join(ROOT, "tools", "load_test.py"), "--image", "nothere.jpg"],
     ["load_test.py: error: --image nothere.jpg: does not exist"]),
    ([os.path.join(ROOT, "tools", "load_test.py"), "--random_weights", "30"],
     ["load_test.py: error: --random_weights 30: --img_size must be a multiple of 4"]),
    ([os.path.join(ROOT, "tools", "benchmark.py"), "fast"],
     ["benchmark.py: error: argument mode: invalid choice: 'fast'"]),
]


def listing(root):
    return sorted((os.path.relpath(d, root), tuple(sorted(f))) for d, _, f in os.walk(root))


@pytest.mark.parametrize("argv,fragments", MISTAKES,
                         ids=[" ".join(os.path.basename(a) for a in m[0][:1]) + " " +
                              " ".join(m[0][1:5]) for m in MISTAKES])
def test_mistake_is_one_line_exit_2_nothing_written(work, argv, fragments):
    before = listing(work)
    res = subprocess.run([sys.executable] + argv, cwd=work, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in res.stdout + res.stderr
    assert listing(work) == before  # no results/, no MODEL_DIR, no export/ folder


def test_mistyped_flag_one_usage_line_and_suggestion(work):
    res = subprocess.run([sys.executable] + MAIN + ["--phase", "test", "--img_szie", "64"],
                         cwd=work, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    usage, error = res.stderr.splitlines()
    assert usage.startswith("usage: main.py --phase {train,test,export,eval,check,serve} ")
    assert error == ("main.py: error: unrecognized arguments: --img_szie 64: did you mean "
                     "--img_size?")


@pytest.mark.slow
def test_quiet_console_and_flags_from_the_checkpoint(work):
    """--checkpoint alone runs the test phase at the trained size: no TensorFlow start-up
    lines, no Information block; --verbose brings TensorFlow's lines back."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable] + MAIN + ["--phase", "test", "--checkpoint", CKPT,
                                                    "--input", "photos", "--output", "out"],
                         cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    for noise in ("absl", "oneDNN", "cuda", "cuInit", "remapper", "deprecated", "I0000",
                  "E0000", "W0000"):
        assert noise not in res.stderr and noise not in res.stdout, res.stderr
    assert "##### Information" not in res.stdout
    assert f" [*] Loaded {CKPT}/ckpt-1" in res.stdout
    assert sorted(os.listdir(work / "out")) == ["me_sheet.png", "me_translated.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (work / "out" / "me_translated.png").stat().st_mode & 0o777 == 0o666 & ~umask
    res = subprocess.run([sys.executable] + MAIN + ["--phase", "test", "--checkpoint", CKPT,
                                                    "--input", "photos", "--output", "out2",
                                                    "--verbose", "True"],
                         cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and "oneDNN" in res.stderr, res.stderr


@pytest.mark.slow
def test_light_model_at_another_size_writes_beside(work):
    res = subprocess.run([sys.executable] + MAIN + ["--phase", "test", "--checkpoint", CKPT,
                                                    "--img_size", "96", "--input", "photos"],
                         cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (f" [*] The light model {CKPT} was trained at --img_size 64; running it at 96 px, "
            f"results in results/96px") in res.stdout
    assert sorted(os.listdir(work / "results" / "96px" / MODEL_DIR / "photos")) == [
        "me_sheet.png", "me_translated.png"]
    assert os.listdir(work / "results") == ["96px"]
