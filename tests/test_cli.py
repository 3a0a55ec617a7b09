"""main.py end to end: train then test on small configurations, and bad flags rejected at
argument parsing (exit status 2, the flag named on stderr, nothing run)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--img_size", "64", "--ch", "8", "--n_res", "2", "--n_dis", "5", "--low_memory", "True",
     "--train_kernels", "fast"],
])
def test_main_small_configs(tiny_dataset, tmp_path, flags):
    common = ["--dataset", "tiny", "--dataset_dir", tiny_dataset, "--light", "True",
              "--epoch", "1", "--iteration", "1", "--checkpoint_dir", str(tmp_path / "ck"),
              "--log_dir", str(tmp_path / "logs"), "--sample_dir", str(tmp_path / "s"),
              "--result_dir", str(tmp_path / "r")] + flags
    for phase in ("train", "test"):
        res = subprocess.run([sys.executable, "main.py", "--phase", phase] + common, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        low_memory = (" [*] --low_memory: TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1, "
                      "mallopt(M_MMAP_THRESHOLD, 1048576), mallopt(M_TRIM_THRESHOLD, 8388608)")
        assert (low_memory in res.stdout) == ("--low_memory" in flags), res.stdout[:2000]
    assert "Test finished: 6 images" in res.stdout


def test_main_bad_flags_exit_before_work(tmp_path):
    res = subprocess.run([sys.executable, "main.py", "--img_size", "64", "--n_dis", "6"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "--img_size 64 is too small for --n_dis 6" in res.stderr
    res = subprocess.run([sys.executable, "main.py", "--light", "maybe"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "argument --light: expected True or False" in res.stderr


BAD_FLAGS = [
    (["--epoch", "-1"], "--epoch must be a whole number >= 1, got -1"),
    (["--iteration", "0"], "--iteration must be a whole number >= 1, got 0"),
    (["--batch_size", "-2"], "--batch_size must be a whole number >= 1, got -2"),
    (["--save_freq", "0"], "--save_freq must be a whole number >= 1, got 0"),
    (["--n_res", "-1"], "--n_res must be a whole number >= 0, got -1"),
    (["--epoch", "ten"], "argument --epoch: invalid int value: 'ten'"),
    (["--lr", "nan"], "--lr must be a finite number >= 0, got nan"),
    (["--cycle_weight", "-1"], "--cycle_weight must be a finite number >= 0, got -1"),
    (["--lr", "-0.5"], "--lr must be a finite number >= 0, got -0.5"),
    (["--img_size", "30"], "--img_size must be a multiple of 4 and at least 8 (the generator "
                           "downsamples twice), got 30"),
    (["--img_size", "4"], "--img_size must be a multiple of 4 and at least 8"),
    (["--img_size", "32", "--n_dis", "6"], "--img_size 32 is too small for --n_dis 6"),
    (["--n_dis", "3"], "--n_dis must be >= 4"),
    (["--img_ch", "1"], "--img_ch must be 3"),
    (["--gan_type", "wgan"], "argument --gan_type: invalid choice: 'wgan'"),
    (["--variant", "keras"], "argument --variant: invalid choice: 'keras'"),
    (["--phase", "fit"], "argument --phase: invalid choice: 'fit'"),
    (["--light", "maybe"], "argument --light: expected True or False, got 'maybe'"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967294"),
    (["--dataset", "photos/selfies"], "--dataset must be a folder name under --dataset_dir"),
]


@pytest.mark.parametrize("argv,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_exits_2_naming_it(argv, message, tmp_path):
    res = subprocess.run([sys.executable, "main.py", "--phase", "train", "--dataset_dir",
                          str(tmp_path / "none")] + argv, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr, res.stderr
    assert "main.py: error:" in res.stderr and res.stdout == ""  # nothing ran
