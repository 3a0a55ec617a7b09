#!/usr/bin/env python
"""Load test of the web server (`main.py --phase serve`): N requests from K concurrent clients.

    python tools/load_test.py --requests 200 --clients 8 -- --dataset demo --light True \\
        --img_size 64 --ch 16 --n_dis 5            # serve the demo checkpoint
    python tools/load_test.py --random_weights 256  # a light 256 px model with random weights
    python tools/load_test.py --url http://127.0.0.1:8000 --model demo   # a running server

It starts the server itself (flags after `--` go to main.py; --port 0), waits until it says
where it listens, sends one warm-up request, then the load: POST /api/translate with the photo
(the page's path; face crop on) or POST /v1/models/NAME:predict (--endpoint predict, the
serving_default signature). Prints latency p50/p90/p99, throughput, errors, and the server's
resident memory (VmRSS) after start-up, after the warm-up and after the load, and its peak
(VmHWM); the last line is `JSON: {...}`.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ugatit_tf.cli import Parser  # noqa: E402  (one-line errors)


def memory_mb(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in MB (Linux /proc)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def photo_jpeg(path: str | None) -> bytes:
    if path:
        with open(path, "rb") as f:
            return f.read()
    import io
    import skimage.data
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def random_checkpoint(size: int, folder: str) -> list[str]:
    """Write a light model with random weights at `size` px (ch 64); the main.py flags."""
    import tensorflow as tf
    from ugatit_tf.config import Config
    from ugatit_tf.model.checkpoints import make_checkpoint, model_checkpoint_dir, write_config
    from ugatit_tf.model.networks import Networks
    name = f"random{size}"
    config = Config(light=True, img_size=size, dataset=name, checkpoint_dir=folder).validate()
    tf.random.set_seed(0)
    nets = Networks(config, discriminators=False)
    target = model_checkpoint_dir(config)
    os.makedirs(target, exist_ok=True)
    write_config(target, config)
    make_checkpoint(nets).save(os.path.join(target, "ckpt"))
    return ["--dataset", name, "--light", "True", "--img_size", str(size),
            "--checkpoint_dir", folder]


def start_server(flags: list[str], timeout: float = 600):
    """Start main.py --phase serve; returns (process, base URL, model name)."""
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--phase", "serve", "--port", "0"]
    process = subprocess.Popen(command + flags, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"error: the server ended with status {process.wait()}")
        found = re.search(r"Open (http://\S+)/ in a browser; TF Serving REST: \S+/v1/models/"
                          r"([^:]+):predict", line)
        if found:
            return process, found.group(1), found.group(2)
    process.kill()
    raise SystemExit("error: the server did not start in time")


def one_request(session, url: str, model: str, endpoint: str, data: bytes) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        if endpoint == "page":
            answer = session.post(url + "/api/translate", files={"image": ("photo.jpg", data)},
                                  timeout=300)
            ok = answer.status_code == 200 and answer.content[:4] == b"\x89PNG"
        else:
            body = {"instances": [{"b64": base64.b64encode(data).decode("ascii")}]}
            answer = session.post(f"{url}/v1/models/{model}:predict", json=body, timeout=300)
            ok = answer.status_code == 200 and "predictions" in answer.json()
        error = "" if ok else f"HTTP {answer.status_code}: {answer.text[:100]}"
    except Exception as e:  # noqa: BLE001 - counted as an error
        error = f"{type(e).__name__}: {e}"
    return time.perf_counter() - start, error


def run_load(url: str, model: str, endpoint: str, data: bytes, requests_n: int,
             clients: int) -> dict:
    import requests
    sessions = [requests.Session() for _ in range(clients)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one_request, sessions[i % clients], url, model, endpoint, data)
                   for i in range(requests_n)]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    errors = [e for _, e in results if e]

    def pct(p):
        return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))]
    return {"requests": requests_n, "clients": clients, "endpoint": endpoint,
            "p50_s": pct(50), "p90_s": pct(90), "p99_s": pct(99), "max_s": latencies[-1],
            "throughput_per_s": requests_n / wall, "wall_s": wall, "errors": len(errors),
            "first_error": errors[0] if errors else ""}


def _flag_problem(args) -> str | None:
    """What is wrong with --image or --random_weights (one line), before any work."""
    if args.image is not None and not os.path.isfile(args.image):
        what = "is not a file" if os.path.exists(args.image) else "does not exist"
        return f"--image {args.image}: {what}"
    if args.random_weights is not None:
        if args.url:
            return "--random_weights starts a server of its own; it cannot go with --url"
        from ugatit_tf.config import Config, ConfigError
        try:
            Config(light=True, img_size=args.random_weights).validate()
        except ConfigError as e:
            return f"--random_weights {args.random_weights}: {e}"
    return None


def main(argv=None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--endpoint", choices=("page", "predict"), default="page")
    parser.add_argument("--image", help="photo to send (default: skimage's astronaut, JPEG)")
    parser.add_argument("--url", help="a running server instead of starting one")
    parser.add_argument("--model", default="demo", help="with --url: the model NAME")
    parser.add_argument("--random_weights", type=int, metavar="SIZE",
                        help="serve a light model with random weights at SIZE px")
    parser.add_argument("server_flags", nargs="*", help="main.py flags (after --)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be >= 1")
    problem = _flag_problem(args)
    if problem:
        parser.error(problem)
    data = photo_jpeg(args.image)
    process, memory = None, {}
    with tempfile.TemporaryDirectory() as tmp:
        flags = list(args.server_flags)
        if args.random_weights:
            flags = random_checkpoint(args.random_weights, tmp) + flags
        if args.url:
            url, model = args.url.rstrip("/"), args.model
        else:
            process, url, model = start_server(flags)
            memory["after_start"] = memory_mb(process.pid)["VmRSS"]
        try:
            import requests
            warm, error = one_request(requests.Session(), url, model, args.endpoint, data)
            if error:
                print(f"error: the warm-up request failed: {error}", file=sys.stderr)
                return 1
            if process:
                memory["after_warmup"] = memory_mb(process.pid)["VmRSS"]
            result = run_load(url, model, args.endpoint, data, args.requests, args.clients)
            if process:
                after = memory_mb(process.pid)
                memory.update(after_load=after["VmRSS"], peak=after["VmHWM"])
        finally:
            if process:
                process.terminate()
                process.wait(60)
    result.update(model=model, warmup_s=warm, image_bytes=len(data),
                  **{f"rss_{k}_mb": round(v, 1) for k, v in memory.items()})
    print(f"{model} {args.endpoint}: {result['requests']} requests from {result['clients']} "
          f"clients: p50 {result['p50_s']:.3f} s, p90 {result['p90_s']:.3f} s, p99 "
          f"{result['p99_s']:.3f} s, {result['throughput_per_s']:.2f} requests/s, "
          f"{result['errors']} errors")
    if memory:
        print("server RSS (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    print("JSON: " + json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
