"""`python main.py --phase serve`: flags refused in one line with status 2 before anything is
loaded, and a real server process that loads a checkpoint, says where it listens, answers, and
stops on Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow as tf

from ugatit_tf import cli
from ugatit_tf.model.checkpoints import make_checkpoint, model_checkpoint_dir, write_config
from ugatit_tf.model.networks import Networks
from ugatit_tf.model.precision import native_bfloat16

from .conftest import astronaut_jpeg, decode_png, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--dataset", "tiny", "--light", "True", "--img_size", "32", "--ch", "8", "--n_res", "2",
        "--n_dis", "4"]


@pytest.mark.parametrize("flags, message", [
    (["--port", "70000"], "error: --port must be a whole number from 0 to 65535, got 70000"),
    (["--max_upload_bytes", "0"], "error: --max_upload_bytes must be a whole number >= 1, got 0"),
    (["--model_name", "my model"], "error: --model_name must be letters, digits, '.', '_' or "
                                   "'-' (it is the NAME in /v1/models/NAME), got 'my model'"),
    (["--serving_url", "localhost:8501"], "error: --serving_url must look like "
                                          "http://host:8501/v1/models/NAME, got "
                                          "'localhost:8501'"),
])
def test_bad_flags_are_one_line(flags, message, capsys, tmp_path):
    status = cli.main(["--phase", "serve", "--checkpoint_dir", str(tmp_path)] + TINY + flags)
    assert status == 2
    assert capsys.readouterr().err.strip() == message


def test_missing_model_and_busy_port(capsys, tmp_path):
    status = cli.main(["--phase", "serve", "--port", "0", "--checkpoint_dir", str(tmp_path),
                       "--export_dir", str(tmp_path / "nothing")] + TINY)
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(f"error: --export_dir {tmp_path / 'nothing'}: no "
                                          f"SavedModel there")
    status = cli.main(["--phase", "serve", "--port", "0", "--checkpoint_dir", str(tmp_path)]
                      + TINY)
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: no checkpoint found in ") and "\n" not in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        status = cli.main(["--phase", "serve", "--port", str(port), "--checkpoint_dir",
                           str(tmp_path)] + TINY)
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(f"error: --host 127.0.0.1 --port {port}: cannot "
                                          f"listen there (")


@pytest.mark.slow
def test_serve_process(tmp_path):
    config = tiny_config(checkpoint_dir=str(tmp_path / "checkpoints"))
    tf.random.set_seed(5)
    nets = Networks(config, discriminators=False)
    folder = model_checkpoint_dir(config)
    os.makedirs(folder)
    write_config(folder, config)
    prefix = make_checkpoint(nets).save(os.path.join(folder, "ckpt"))
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "main.py"), "--phase", "serve", "--port", "0",
         "--model_name", "anime", "--checkpoint_dir", config.checkpoint_dir] + TINY,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        lines, deadline = [], time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"the server ended: {process.stderr.read()}"
            lines.append(line)
            if "Listening on" in line:
                break
        # --mixed_precision auto: bfloat16 where this CPU computes it natively, and said
        compute = ", mixed_bfloat16" if native_bfloat16() else ""
        assert f" [*] Model: checkpoint {prefix}{compute} (32x32)\n" in lines
        url = re.search(r"Open (http://127\.0\.0\.1:\d+)/ in a browser", lines[-1]).group(1)
        assert f"TF Serving REST: {url}/v1/models/anime:predict" in lines[-1]
        assert requests.get(url + "/v1/models/anime", timeout=30).status_code == 200
        answer = requests.post(url + "/api/translate", data={"face_crop": "false"},
                               files={"image": ("a.jpg", astronaut_jpeg())}, timeout=60)
        assert answer.status_code == 200
        output = decode_png(answer.content)
        x = tf.io.decode_jpeg(astronaut_jpeg())
        assert output.shape == x.shape and np.abs(output.astype(int) - 128).mean() > 1
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
