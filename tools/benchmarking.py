"""Speed measurements: generator inference, training iterations and TFLite latency, on
synthetic data, with FLOP counts and this machine's measured convolution peak.

    python tools/benchmark.py infer --configs light:256:64:4 --json
    python tools/benchmark.py train --configs light:64:16:4,light:256:64:4 --json
    python tools/benchmark.py tflite --configs light:256:64:4 --json
    python tools/benchmark.py infer --peer torch --mixed_precision mixed_bfloat16 \
        --torch_python /work/torchenv/bin/python --original /path/to/UGATIT-pytorch

A config is variant:img_size:ch:n_res, variant light or full (n_dis 5 below 96 px, else 6;
4 where 5 does not fit, e.g. 32 px).
Every row reports seconds (min / median / max over --repeats timed runs, after --warmup
untimed ones; the first run of a tf.function traces and compiles it), the GFLOP the graph
executes (`graph_flops`: the registered FLOP statistics of the ops the step runs, i.e. the
convolutions, matmuls and element-wise ops, forward and backward; the original's math would
be more, see `nominal_generator_gflop`), GFLOP/s and the fraction of the measured peak of a
large conv2d in the same dtype (`conv_peak`), and the peak resident memory of the process
while the row ran (`peak_rss_mib`). With `--peer torch` the official PyTorch generator
(infer mode) or training loop (train mode) runs in the same run, its runs interleaved with
ours, and its rows carry `ratio` (its median over ours; see docs/speed.md). The last line
printed is `JSON: {"<mode>": {config: median_seconds}, "details": ..., "machine": ...}`.

Timings on a shared machine vary: the load average before and after each row is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

MODES = ("infer", "train", "tflite")
# ugatit_tf.model.layers.KERNELS, written out: TensorFlow is imported only once a benchmark runs
KERNEL_SETS = ("frozen", "inference", "reference")


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

def parse_spec(spec: str) -> dict:
    """'light:256:64:4' -> {light, img_size, ch, n_res, n_dis}."""
    parts = spec.strip().split(":")
    if len(parts) != 4 or parts[0] not in ("light", "full"):
        raise ValueError(f"config {spec!r}: expected variant:img_size:ch:n_res with variant "
                         f"light or full, e.g. light:256:64:4")
    try:
        size, ch, n_res = (int(p) for p in parts[1:])
    except ValueError:
        raise ValueError(f"config {spec!r}: img_size, ch and n_res must be whole numbers")
    from ugatit_tf.config import discriminator_size_problem
    n_dis = 5 if size < 96 else 6
    while n_dis > 4 and discriminator_size_problem(size, n_dis, "tf1"):
        n_dis -= 1  # tiny test sizes (32 px): the deepest discriminator that fits
    return dict(light=parts[0] == "light", img_size=size, ch=ch, n_res=n_res, n_dis=n_dis)


def _flag_problem(args) -> str | None:
    """What is wrong with the flags (one line naming the flag), before TensorFlow loads."""
    from ugatit_tf.config import ConfigError
    for name in ("repeats", "warmup", "inter_op_threads", "intra_op_threads"):
        value = getattr(args, name)
        if value is not None and value < 0:
            return f"--{name} must be >= 0, got {value}"
    if args.batch_size < 1:
        return f"--batch_size must be >= 1, got {args.batch_size}"
    specs = [s for s in args.configs.split(",") if s.strip()]
    if not specs:
        return "--configs names no configuration (e.g. light:256:64:4)"
    for spec in specs:
        try:
            make_config(spec)
        except (ValueError, ConfigError) as e:  # ConfigError names a main.py flag
            return f"--configs: {e}" if str(e).startswith("config ") else \
                f"--configs {spec}: {e}"
    return None


def make_config(spec: str, **overrides):
    from ugatit_tf.config import Config
    values = parse_spec(spec)
    values.update(overrides)
    return Config(**values).validate()


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------

def graph_flops(concrete_function) -> int:
    """FLOPs of one call of a concrete function: the sum of TensorFlow's registered 'flops'
    statistics (Conv2D and its gradients, MatMul, element-wise ops, ...) over the ops that
    feed its outputs or a stateful op (variable updates); ops TensorFlow prunes at run time
    (e.g. kernel gradients nobody asked for) are not counted. Nested function calls are
    followed."""
    from tensorflow.python.framework import ops as tf_ops

    def count(graph, seen_graphs):
        operations = graph.get_operations()
        sinks = [op for op in operations if op._is_stateful or op.type in ("NoOp",)]
        sinks += [t.op for t in getattr(graph, "outputs", []) if t is not None]
        live, stack = set(), list(sinks)
        while stack:
            op = stack.pop()
            if op in live:
                continue
            live.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
        total = 0
        for op in live:
            try:
                stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
                total += int(stats.value or 0)
            except (ValueError, TypeError, KeyError):
                pass
            for attr in ("f", "then_branch", "else_branch", "body", "cond"):
                try:
                    name = op.get_attr(attr).name
                except (ValueError, AttributeError):
                    continue
                fn = graph._get_function(name) if hasattr(graph, "_get_function") else None
                sub = getattr(fn, "graph", None)
                if sub is not None and id(sub) not in seen_graphs:
                    total += count(sub, seen_graphs | {id(sub)})
        return total

    return count(concrete_function.graph, {id(concrete_function.graph)})


def nominal_generator_gflop(config) -> float:
    """Multiply-add FLOPs (x2) of one generator forward as the ORIGINAL computes it (the
    convolutions and dense layers only): the CAM 1x1 conv over 2C channels and the
    up-sampling convolutions at full resolution. About 105 GFLOP for light 256 px ch 64."""
    s, c, r = config.img_size, config.ch, config.n_res

    def conv(size, k, cin, cout):
        return 2.0 * size * size * k * k * cin * cout

    q = s // 4
    total = conv(s, 7, 3, c) + conv(s // 2, 3, c, 2 * c) + conv(q, 3, 2 * c, 4 * c)
    total += 2 * r * conv(q, 3, 4 * c, 4 * c)            # encoder residual blocks
    total += conv(q, 1, 8 * c, 4 * c)                    # CAM conv_1x1 on [x*w, x*w]
    width = config.mlp_width
    first = 4 * c if config.light else q * q * 4 * c
    total += 2.0 * (first * width + 3 * width * width)   # MLP
    total += 2 * r * conv(q, 3, 4 * c, 4 * c)            # AdaLIN residual blocks
    total += conv(s // 2, 3, 4 * c, 2 * c) + conv(s, 3, 2 * c, c)  # up-sampling convs
    total += conv(s, 7, c, 3)
    return total / 1e9


# ---------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------

def machine_info() -> dict:
    import tensorflow as tf
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return {"cpu": model, "cores": os.cpu_count(), "gpus": gpus,
            "tensorflow": tf.__version__, "python": platform.python_version(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
            "allocator": {k: os.environ.get(k, "default") for k in
                          ("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "MALLOC_MMAP_THRESHOLD_")},
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def reset_peak_rss() -> bool:
    """Restart the kernel's resident-memory high-water mark (VmHWM) of this process at its
    current resident size (Linux /proc/self/clear_refs); False where that is not possible
    (then peaks are since the process started)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """The resident-memory high-water mark of this process (VmHWM) in MiB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """`with PeakMemory() as m: ...` then `m.mib`: the peak resident memory of the whole
    process while the block ran (baseline included: TensorFlow, other models built before),
    `m.since_start` when the high-water mark could not be reset."""

    mib = None

    def __enter__(self):
        self.since_start = not reset_peak_rss()
        return self

    def __exit__(self, *exc):
        self.mib = peak_rss_mib()
        return False


def conv_peak(dtype="float32", repeats=5, size=64, channels=256, batch=4) -> float:
    """GFLOP/s of a large 3x3 conv2d (batch x size x size x channels -> channels, SAME) in
    `dtype`: the best of `repeats` timed runs after a warm-up."""
    import tensorflow as tf
    x = tf.random.uniform([batch, size, size, channels], dtype=tf.float32)
    k = tf.random.uniform([3, 3, channels, channels], dtype=tf.float32) * 0.01
    x, k = tf.cast(x, dtype), tf.cast(k, dtype)
    fn = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
    flops = 2.0 * batch * size * size * 9 * channels * channels
    fn(x, k).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x, k).numpy()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def _row(spec, times, gflop, peak, extra=None) -> dict:
    med = statistics.median(times)
    row = {"config": spec, "min_s": min(times), "median_s": med, "max_s": max(times),
           "repeats": len(times), "gflop": gflop,
           "gflops": gflop / med if gflop else None,
           "peak_fraction": (gflop / med / peak) if gflop and peak else None}
    row.update(extra or {})
    return row


def _compute_dtype(mixed_precision: str) -> str:
    return {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(mixed_precision,
                                                                          "float32")


# ---------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------

def _infer_function(spec, mixed_precision="none", jit_compile=False, batch=1,
                    kernels="frozen"):
    """(fn, x, gflop, config): the generator's forward pass (A -> B) as a tf.function with
    the given `kernels` (model.layers.KERNELS), a random batch and the FLOPs the graph
    executes."""
    import tensorflow as tf

    from ugatit_tf.model.networks import build_generator
    from ugatit_tf.model.precision import precision_policy
    cfg = make_config(spec)
    with precision_policy(mixed_precision):
        gen = build_generator(cfg, "generator_B")
    fn = tf.function(lambda x: gen(x, training=False, kernels=kernels),
                     jit_compile=jit_compile or None)
    x = tf.random.stateless_uniform([batch, cfg.img_size, cfg.img_size, 3], [1, 2], -1, 1)
    gflop = graph_flops(fn.get_concrete_function(x)) / 1e9
    return fn, x, gflop, cfg


def _time_runs(fn, x, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)[0].numpy()
        times.append(time.perf_counter() - start)
    return times


def bench_infer(spec: str, repeats: int, warmup: int, mixed_precision: str = "none",
                jit_compile: bool = False, batch: int = 1, peak: float | None = None,
                log=print, kernels: str = "frozen") -> dict:
    """The generator's forward pass (A -> B) on a random batch, as a tf.function."""
    before = load()
    with PeakMemory() as memory:
        fn, x, gflop, cfg = _infer_function(spec, mixed_precision, jit_compile, batch, kernels)
        _time_runs(fn, x, warmup)
        times = _time_runs(fn, x, repeats)
    return _row(spec, times, gflop, peak, {
        "batch": batch, "kernels": kernels,
        "nominal_gflop": nominal_generator_gflop(cfg) * batch,
        "peak_rss_mib": memory.mib, "load_before": before, "load_after": load()})


def synthetic_datasets(config, seed=0):
    """Two endless datasets of fixed random global batches in [-1, 1] (no files)."""
    import tensorflow as tf
    out = []
    for i in range(2):
        batch = tf.random.stateless_uniform(
            [config.batch_size, config.img_size, config.img_size, 3], [seed, i], -1.0, 1.0)
        out.append(tf.data.Dataset.from_tensors(batch).repeat())
    return tuple(out)


def bench_train(spec: str, repeats: int, warmup: int, mixed_precision: str = "none",
                jit_compile: bool = False, strategy: str = "default", batch: int = 1,
                peak: float | None = None, log=print, train_kernels: str = "reference") -> dict:
    """Training iterations (`Trainer.run_iteration`: data, D update, G update, losses) on
    synthetic data; the peak memory covers building, tracing and every iteration."""
    cfg = _training_config(spec, batch, mixed_precision=mixed_precision,
                           jit_compile=jit_compile, strategy=strategy,
                           train_kernels=train_kernels)
    before = load()
    with PeakMemory() as memory:
        trainer, build_s = _build_trainer(cfg)
        gflop = _train_gflop(trainer, cfg, spec, log)
        start = time.perf_counter()
        for it in range(warmup):
            trainer.run_iteration(it)
        warmup_s = time.perf_counter() - start
        times = []
        for it in range(warmup, warmup + repeats):
            start = time.perf_counter()
            trainer.run_iteration(it)
            times.append(time.perf_counter() - start)
    return _row(spec, times, gflop, peak, {
        "batch": batch, "peak_rss_mib": memory.mib, "replicas": trainer.sharding.replicas,
        "build_s": build_s, "warmup_s": warmup_s, "load_before": before, "load_after": load()})


def _training_config(spec, batch, **flags):
    """The Config of a benchmark's trainer: synthetic data, outputs in a temporary folder."""
    tmp = tempfile.mkdtemp(prefix="ugatit-bench-")
    return make_config(spec, batch_size=batch, dataset="synthetic",
                       checkpoint_dir=os.path.join(tmp, "ck"), log_dir=os.path.join(tmp, "logs"),
                       sample_dir=os.path.join(tmp, "samples"),
                       result_dir=os.path.join(tmp, "results"), **flags)


def _build_trainer(cfg):
    from ugatit_tf.train.trainer import Trainer
    start = time.perf_counter()
    trainer = Trainer(cfg, log=lambda *a: None, datasets=synthetic_datasets(cfg))
    return trainer, time.perf_counter() - start


def _train_gflop(trainer, cfg, spec, log):
    """GFLOP of one D step plus one G step, or None where the count fails."""
    import tensorflow as tf
    batch = tf.TensorSpec([cfg.batch_size, cfg.img_size, cfg.img_size, 3], tf.float32)
    lr = tf.TensorSpec([], tf.float32)
    try:
        return (graph_flops(trainer.d_step.get_concrete_function(batch, batch, lr))
                + graph_flops(trainer.g_step.get_concrete_function(batch, batch, lr))) / 1e9
    except Exception as e:  # noqa: BLE001 -- a count we cannot make is reported as missing
        log(f"[benchmark] FLOP count failed for {spec}: {e}")
        return None


# ---------------------------------------------------------------------------
# TFLite: sizes, latency and PSNR against float32
# ---------------------------------------------------------------------------

def tflite_latency(path, runs=10, num_threads=2, warmup=2, seed=0) -> dict:
    """Latency of one TFLite model with the default delegates (XNNPACK on CPU): mean,
    median, min and max milliseconds over `runs` invocations after `warmup` ones."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if detail["dtype"] == np.uint8:
        x = rng.integers(0, 256, detail["shape"], dtype=np.uint8)
    else:
        x = rng.uniform(-1, 1, detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], x)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"path": path, "bytes": os.path.getsize(path), "threads": num_threads, "runs": runs,
            "mean_ms": float(np.mean(times)), "median_ms": float(np.median(times)),
            "min_ms": float(np.min(times)), "max_ms": float(np.max(times))}


def _sample_images(config, n, seed):
    """Domain-A test images: the data set's testA when present, else the procedural demo
    selfies."""
    import numpy as np

    from ugatit_tf.export.run import image_files, load_images
    from tools.demo_data import draw_photo, sample_latents
    files = image_files(os.path.join(config.dataset_dir, config.dataset, "testA"))
    if files:
        return load_images(files, n, seed)
    rng = np.random.default_rng(seed)
    return [draw_photo(sample_latents(rng), size=config.img_size) for _ in range(n)]


def measure_tflite(config, nets, out_dir: str, quantizations, runs=5, n_images=4,
                   calibration_images=16, num_threads=2) -> list[dict]:
    """Export the A -> B generator of `nets` in each quantization and report size, latency
    and PSNR of its uint8 output against float32's on a few images."""
    import numpy as np
    import tensorflow as tf

    from ugatit_tf.evaluate.metrics import psnr
    from ugatit_tf.export.pixels import resize_uint8
    from ugatit_tf.export.tflite import export_tflite, run_tflite
    images = _sample_images(config, n_images + calibration_images, config.seed)
    tests, calibration = images[:n_images], images[n_images:]
    inputs = [resize_uint8(tf.constant(a), config.img_size).numpy() for a in tests]
    results, reference = [], None
    for q in quantizations:
        path = os.path.join(out_dir, f"a2b_{q}.tflite")
        start = time.perf_counter()
        export_tflite(nets.genA2B, config, path, q, calibration if q == "int8" else None,
                      overwrite=True)
        convert_s = time.perf_counter() - start
        outputs = [run_tflite(path, x)["image"][0] for x in inputs]
        if q == "float32":
            reference = outputs
        row = tflite_latency(path, runs=runs, num_threads=num_threads)
        row.update(quantization=q, convert_s=convert_s, mib=row["bytes"] / 2**20,
                   psnr_vs_float32=(float(np.mean([psnr(a, b) for a, b in
                                                    zip(outputs, reference)]))
                                    if reference is not None else None))
        results.append(row)
        print(f"[measure] {q:8s} {row['mib']:7.2f} MiB  median {row['median_ms']:8.1f} ms  "
              f"min {row['min_ms']:8.1f} ms  PSNR vs float32 {row['psnr_vs_float32']}")
    return results


def _time_saved_model(nets, cfg, path, x, warmup, repeats) -> list[float]:
    """Export the generators as a SavedModel, load it and time its `a2b` signature."""
    import tensorflow as tf

    from ugatit_tf.export.saved_model import export_saved_model
    signature = tf.saved_model.load(export_saved_model(nets, cfg, path)).signatures["a2b"]
    times = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        signature(images=x)["images"].numpy()
        times.append(time.perf_counter() - start)
    return times[warmup:]


def bench_tflite(spec: str, repeats: int, warmup: int, threads: int = 2,
                 quantizations=("float32", "float16", "dynamic", "int8"),
                 peak: float | None = None, log=print,
                 kernels: str = "frozen", mixed_precision: str = "none",
                 half_peak: float | None = None) -> list[dict]:
    """The A -> B generator exported as a SavedModel (its float `a2b` signature, batch 1,
    with `kernels`), with `mixed_precision` also as a SavedModel built in that precision
    (what `--phase export --mixed_precision` writes; the same weights, `half_peak` its
    conv peak), and as TFLite files in each quantization (`measure_tflite`, random weights),
    latency per invocation."""
    import tensorflow as tf

    from ugatit_tf.model.networks import Networks
    cfg = make_config(spec, kernels=kernels)
    tmp = tempfile.mkdtemp(prefix="ugatit-bench-tflite-")
    tf.random.set_seed(cfg.seed)
    nets = Networks(cfg, discriminators=False)
    fn = tf.function(lambda x: nets.genA2B(x, training=False))
    x = tf.random.stateless_uniform([1, cfg.img_size, cfg.img_size, 3], [1, 2], -1, 1)
    gflop = graph_flops(fn.get_concrete_function(x)) / 1e9
    before = load()
    with PeakMemory() as memory:
        times = _time_saved_model(nets, cfg, os.path.join(tmp, "saved_model", "1"), x,
                                  warmup, repeats)
    rows = [_row(f"{spec} saved_model", times, gflop, peak,
                 {"format": "saved_model", "quantization": "float32",
                  "peak_rss_mib": memory.mib, "load_before": before, "load_after": load()})]
    if mixed_precision != "none":
        from ugatit_tf.model.precision import precision_policy
        with precision_policy(mixed_precision):
            half = Networks(cfg, discriminators=False)
        half.genA2B.set_weights(nets.genA2B.get_weights())
        half.genB2A.set_weights(nets.genB2A.get_weights())
        before = load()
        with PeakMemory() as memory:
            times = _time_saved_model(half, cfg, os.path.join(tmp, mixed_precision, "1"), x,
                                      warmup, repeats)
        rows.append(_row(f"{spec} saved_model {_compute_dtype(mixed_precision)}", times, gflop,
                         half_peak, {"format": "saved_model", "quantization": mixed_precision,
                                     "peak_rss_mib": memory.mib, "load_before": before,
                                     "load_after": load()}))
    before = load()
    with PeakMemory() as memory:  # one peak over every quantization's export and runs
        results = measure_tflite(cfg, nets, os.path.join(tmp, "tflite"), quantizations,
                                 runs=repeats, num_threads=threads)
    for r in results:
        times = [r["min_ms"] / 1e3, r["median_ms"] / 1e3, r["max_ms"] / 1e3]
        row = _row(f"{spec} tflite {r['quantization']}", times, gflop,
                   peak if r["quantization"] in ("float32", "float16") else None,
                   {"format": "tflite", "quantization": r["quantization"], "mib": r["mib"],
                    "psnr_vs_float32": r["psnr_vs_float32"], "threads": threads,
                    "peak_rss_mib": memory.mib, "load_before": before,
                    "load_after": load()})
        row.update(min_s=r["min_ms"] / 1e3, median_s=r["median_ms"] / 1e3,
                   max_s=r["max_ms"] / 1e3, repeats=r["runs"])
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# The PyTorch peer (--peer torch): the official generator or training loop, same run,
# interleaved
# ---------------------------------------------------------------------------

PEER_MODES = ("eager", "compiled", "compiled_bf16")
PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer")
PEER_SCRIPTS = {"infer": os.path.join(PEER_DIR, "torch_generator.py"),
                "train": os.path.join(PEER_DIR, "torch_train.py")}
# what each peer needs: the original's file it imports, the modules of the torch Python
PEER_NEEDS = {"infer": ("networks.py", ("torch",)),
              "train": ("UGATIT.py", ("torch", "torchvision", "scipy", "cv2"))}


class PeerError(Exception):
    """The PyTorch peer cannot run (torch or the original's code missing): one line."""


def check_peer(torch_python: str, original: str, mode: str = "infer") -> None:
    """Raise PeerError unless `torch_python` imports what the `mode`'s peer needs and
    `original` holds the official PyTorch code (PEER_NEEDS)."""
    import subprocess
    needed_file, modules = PEER_NEEDS[mode]
    if not original or not os.path.isfile(os.path.join(original, needed_file)):
        raise PeerError(f"--original {original or '(not set)'}: no {needed_file}; --peer torch "
                        f"needs a checkout of github znxlwm/UGATIT-pytorch (see docs/speed.md)")
    probe = ("import importlib, sys\nfor m in sys.argv[1:]:\n    try:\n        "
             "importlib.import_module(m)\n    except Exception:\n        print(m)\n"
             "        sys.exit(1)")
    try:
        res = subprocess.run([torch_python, "-c", probe, *modules], capture_output=True,
                             text=True, timeout=300)
    except OSError as e:
        raise PeerError(f"--torch_python {torch_python}: cannot run it ({e.strerror})")
    if res.returncode != 0:
        missing = (res.stdout.split() or [modules[0]])[0]
        raise PeerError(f"--torch_python {torch_python}: cannot import {missing}; --peer torch "
                        f"in the {mode} mode needs a Python with {', '.join(modules)} (see "
                        f"docs/speed.md)")


class TorchPeer:
    """The official generator (mode "infer", tools/peer/torch_generator.py) or training
    loop (mode "train", tools/peer/torch_train.py) in a torch Python, answering one timing
    request at a time so that its runs interleave with ours."""

    def __init__(self, torch_python, original, cfg, batch, threads, warmup, mode="infer"):
        import subprocess
        args = [torch_python, PEER_SCRIPTS[mode], "--original", original, "--img_size",
                str(cfg.img_size), "--ch", str(cfg.ch), "--n_res", str(cfg.n_res),
                "--batch", str(batch), "--threads", str(threads), "--warmup", str(warmup)]
        if cfg.light:
            args.append("--light")
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        hello = self._answer()
        self.torch_version, self.threads = hello["torch"], hello["threads"]

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        answer = json.loads(line) if line.strip() else {"error": "the peer stopped"}
        if "error" in answer:
            self.close()
            raise PeerError(f"PyTorch peer: {answer['error']}")
        return answer

    def run(self, mode: str, runs: int) -> dict:
        self.process.stdin.write(f"{mode} {runs}\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def _interleaved_rounds(ours: dict, peer: TorchPeer, modes, repeats: int):
    """`repeats` rounds, each timing every entry of `ours` once (entry["run"]() returns its
    seconds; entry["times"] and entry["mib"] grow) and then the peer once in each of `modes`.
    Closes the peer. Returns ({mode: {"times", "mib"}}, load before, load after)."""
    try:
        peer_rows = {m: dict(times=[], mib=peer.run(m, 0)["peak_rss_mib"]) for m in modes}
        before = load()
        for _ in range(repeats):
            for entry in ours.values():
                with PeakMemory() as memory:
                    entry["times"].append(entry["run"]())
                entry["mib"] = max(entry["mib"] or 0, memory.mib or 0) or None
            for mode, entry in peer_rows.items():
                answer = peer.run(mode, 1)
                entry["times"] += answer["times"]
                entry["mib"] = max(entry["mib"] or 0, answer["peak_rss_mib"] or 0) or None
        return peer_rows, before, load()
    finally:
        peer.close()


def bench_side_by_side(spec: str, repeats: int, warmup: int, precisions, peer_args: dict,
                       batch: int = 1, peaks: dict | None = None,
                       kernels: str = "frozen") -> list[dict]:
    """Our generator in each of `precisions` (and, with kernels "all", with each of
    KERNEL_SETS) and the official PyTorch generator in each of PEER_MODES,
    interleaved run by run (round r times every variant once), so that every variant sees
    the same load. One row per variant; the peer's rows carry `ratio`: its median over ours
    (the first of the kernel sets timed) in the matching precision (above 1: we
    are faster)."""
    peaks = peaks or {}
    kernel_list = list(KERNEL_SETS) if kernels == "all" else [kernels]
    ours = {}
    for mp in precisions:
        for k in kernel_list:
            with PeakMemory() as memory:
                fn, x, gflop, cfg = _infer_function(spec, mp, batch=batch, kernels=k)
                _time_runs(fn, x, warmup)
            ours[(mp, k)] = dict(fn=fn, x=x, gflop=gflop, times=[], mib=memory.mib)
    peer = TorchPeer(cfg=cfg, batch=batch, warmup=warmup, **peer_args)
    for entry in ours.values():
        entry["run"] = lambda e=entry: _time_runs(e["fn"], e["x"], 1)[0]
    peer_rows, before, after = _interleaved_rounds(ours, peer, PEER_MODES, repeats)
    rows = []
    for (mp, k), entry in ours.items():
        dtype = _compute_dtype(mp)
        label = f"{spec} ours {dtype}" + ("" if k == kernel_list[0] else f" {k} kernels")
        rows.append(_row(label, entry["times"], entry["gflop"],
                         peaks.get(dtype), {"side": "ours", "precision": dtype, "batch": batch,
                                            "kernels": k,
                                            "peak_rss_mib": entry["mib"],
                                            "load_before": before, "load_after": after}))
    medians = {r["precision"]: r["median_s"] for r in rows if r["kernels"] == kernel_list[0]}
    for mode, entry in peer_rows.items():
        dtype = "bfloat16" if mode.endswith("bf16") else "float32"
        row = _row(f"{spec} torch {mode}", entry["times"], None, None, {
            "side": "torch", "precision": dtype, "batch": batch, "torch": peer.torch_version,
            "threads": peer.threads, "peak_rss_mib": entry["mib"], "load_before": before,
            "load_after": after})
        ref = medians.get(dtype, medians.get("float32"))
        row["ratio"] = row["median_s"] / ref if ref else None
        rows.append(row)
    return rows


def bench_train_side_by_side(spec: str, repeats: int, warmup: int, precisions, peer_args: dict,
                             batch: int = 1, peaks: dict | None = None,
                             train_kernels: str = "reference", log=print) -> list[dict]:
    """Our training iteration (`Trainer.run_iteration`, synthetic data) in each of
    `precisions` and the official PyTorch training loop (tools/peer/torch_train.py: its
    `UGATIT.train()`, float32, the only precision it has), interleaved iteration by
    iteration. One row per side; the peer's row carries `ratio`, its median over ours in
    float32 (above 1: we are faster), and `ratio_<dtype>` over each other precision of
    ours."""
    peaks = peaks or {}
    ours = {}
    for mp in precisions:
        cfg = _training_config(spec, batch, mixed_precision=mp, train_kernels=train_kernels)
        with PeakMemory() as memory:
            trainer, _ = _build_trainer(cfg)
            gflop = _train_gflop(trainer, cfg, spec, log)
            for it in range(warmup):
                trainer.run_iteration(it)
        ours[mp] = dict(gflop=gflop, times=[], mib=memory.mib,
                        run=_iteration_timer(trainer, warmup))
    for entry in ours.values():  # untimed: the first iteration after another trainer was
        entry["run"]()           # built ran 5x slower (float32 after bfloat16, 128 px)
    peer = TorchPeer(cfg=cfg, batch=batch, warmup=warmup, mode="train", **peer_args)
    peer_rows, before, after = _interleaved_rounds(ours, peer, ["train"], repeats)
    rows = []
    for mp, entry in ours.items():
        dtype = _compute_dtype(mp)
        rows.append(_row(f"{spec} ours {dtype}", entry["times"], entry["gflop"],
                         peaks.get(dtype), {"side": "ours", "precision": dtype, "batch": batch,
                                            "train_kernels": train_kernels,
                                            "peak_rss_mib": entry["mib"],
                                            "load_before": before, "load_after": after}))
    entry = peer_rows["train"]
    row = _row(f"{spec} torch train", entry["times"], None, None, {
        "side": "torch", "precision": "float32", "batch": batch, "torch": peer.torch_version,
        "threads": peer.threads, "peak_rss_mib": entry["mib"], "load_before": before,
        "load_after": after})
    for ours_row in rows:
        key = "ratio" if ours_row["precision"] == "float32" else f"ratio_{ours_row['precision']}"
        row[key] = row["median_s"] / ours_row["median_s"]
    return rows + [row]


def _iteration_timer(trainer, first: int):
    """A function that runs the trainer's next iteration (from `first`) and returns its
    seconds."""
    iteration = [first]

    def run():
        start = time.perf_counter()
        trainer.run_iteration(iteration[0])
        iteration[0] += 1
        return time.perf_counter() - start
    return run


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from ugatit_tf.cli import Parser  # one-line errors
    from ugatit_tf.config import str2bool
    p = Parser(
        description="U-GAT-IT speed benchmark on synthetic data (see ugatit_tf/benchmarking.py)")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--configs", default="light:256:64:4",
                   help="comma-separated variant:img_size:ch:n_res (variant light or full)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per config (default: infer 10, train 5, tflite 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (tracing)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--mixed_precision", default="none",
                   choices=("none", "mixed_float16", "mixed_bfloat16"),
                   help="infer and train modes: the precision; tflite mode: one more "
                        "SavedModel row built in it (what --phase export writes with it)")
    p.add_argument("--jit_compile", type=str2bool, default=False)
    p.add_argument("--kernels", choices=KERNEL_SETS + ("all",), default="frozen",
                   help="infer mode, SavedModel of tflite mode: the generator's kernels (see "
                        "--kernels of main.py; all: --peer torch only, ours with each, "
                        "interleaved)")
    p.add_argument("--train_kernels", choices=("reference", "fast"), default="reference",
                   help="train mode: --train_kernels of main.py")
    p.add_argument("--strategy", default="default", choices=("default", "mirrored",
                                                             "multiworker"))
    p.add_argument("--threads", type=int, default=2,
                   help="TFLite interpreter threads; torch threads of the --peer")
    p.add_argument("--peer", default="none", choices=("none", "torch"),
                   help="infer mode: also time the official PyTorch generator (eager, "
                        "torch.compile, torch.compile + bfloat16 autocast); train mode: the "
                        "official training loop (UGATIT.train()); in the same run, "
                        "interleaved, and print the ratios; ours runs in float32 and, with "
                        "--mixed_precision, in that precision too")
    p.add_argument("--torch_python", default=os.environ.get("UGATIT_TORCH_PYTHON",
                                                            sys.executable),
                   help="the Python with torch for --peer torch (default: $UGATIT_TORCH_PYTHON "
                        "or this Python)")
    p.add_argument("--original", default=os.environ.get("UGATIT_PYTORCH_ORIGINAL", ""),
                   help="checkout of github znxlwm/UGATIT-pytorch for --peer torch (default: "
                        "$UGATIT_PYTORCH_ORIGINAL)")
    p.add_argument("--inter_op_threads", type=int, default=0,
                   help="TensorFlow inter-op threads (0: TensorFlow's default)")
    p.add_argument("--intra_op_threads", type=int, default=0,
                   help="TensorFlow intra-op threads (0: TensorFlow's default)")
    p.add_argument("--no_peak", action="store_true", help="skip the conv2d peak measurement")
    p.add_argument("--json", action="store_true", help="print the JSON: line (always printed "
                   "last; with --json also the details)")
    return p


def format_table(rows: list[dict]) -> str:
    width = max([40] + [len(r["config"]) for r in rows])
    head = (f"{'config':{width}s} {'min s':>9s} {'median s':>9s} {'max s':>9s} {'GFLOP':>9s} "
            f"{'GFLOP/s':>8s} {'peak':>6s} {'RSS MiB':>8s} {'ratio':>6s} {'load':>10s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def f(v, fmt):
            if isinstance(v, (int, float)):
                return format(v, fmt)
            return format("-", ">" + fmt.split(".")[0])
        peak = f"{100 * r['peak_fraction']:.0f}%" if r.get("peak_fraction") else "-"
        loadtxt = f"{r.get('load_before', '-')}/{r.get('load_after', '-')}"
        lines.append(f"{r['config']:{width}s} {f(r['min_s'], '9.4f')} {f(r['median_s'], '9.4f')} "
                     f"{f(r['max_s'], '9.4f')} {f(r.get('gflop'), '9.2f')} "
                     f"{f(r.get('gflops'), '8.1f')} {peak:>6s} "
                     f"{f(r.get('peak_rss_mib'), '8.0f')} {f(r.get('ratio'), '6.2f')} "
                     f"{loadtxt:>10s}")
    return "\n".join(lines)


def _peer_problem(args) -> str | None:
    """The one-line reason why --peer (or --kernels all) cannot run, checked before any work,
    or None."""
    if args.kernels == "all" and args.peer == "none":
        return "--kernels all works with --peer torch only (ours is timed with each kernel set"\
               " in the same rounds as the peer)"
    if args.peer == "none":
        return None
    if args.mode not in PEER_SCRIPTS:
        return f"--peer {args.peer} works with the infer and train modes only (not {args.mode})"
    try:
        check_peer(args.torch_python, args.original, args.mode)
    except PeerError as e:
        return str(e)
    return None


def _run_mode(args, spec, repeats, peaks, dtype) -> list[dict]:
    peak = peaks.get(dtype)
    if args.peer == "torch":
        precisions = ["none"] + ([args.mixed_precision] if args.mixed_precision != "none"
                                 else [])
        peer_args = dict(torch_python=args.torch_python, original=args.original,
                         threads=args.threads)
        if args.mode == "train":
            return bench_train_side_by_side(spec, repeats, args.warmup, precisions, peer_args,
                                            args.batch_size, peaks, args.train_kernels)
        return bench_side_by_side(spec, repeats, args.warmup, precisions, peer_args,
                                  args.batch_size, peaks, args.kernels)
    if args.mode == "infer":
        return [bench_infer(spec, repeats, args.warmup, args.mixed_precision,
                            args.jit_compile, args.batch_size, peak, kernels=args.kernels)]
    if args.mode == "train":
        return [bench_train(spec, repeats, args.warmup, args.mixed_precision,
                            args.jit_compile, args.strategy, args.batch_size, peak,
                            train_kernels=args.train_kernels)]
    return bench_tflite(spec, repeats, args.warmup, args.threads, peak=peaks.get("float32"),
                        kernels=args.kernels, mixed_precision=args.mixed_precision,
                        half_peak=peak)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _flag_problem(args) or _peer_problem(args)
    if problem:
        parser.error(problem)  # one line, exit status 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.strategy != "default":  # MultiWorkerMirroredStrategy: before any other TF work
        from ugatit_tf.train.distribute import make_strategy
        make_strategy(args.strategy)
    specs = [s for s in args.configs.split(",") if s.strip()]
    repeats = args.repeats or {"infer": 10, "train": 5, "tflite": 10}[args.mode]
    dtype = _compute_dtype(args.mixed_precision)  # tflite mode: its extra SavedModel row
    peaks = {}
    if not args.no_peak:
        peaks["float32"] = conv_peak("float32")
        if dtype != "float32":
            peaks[dtype] = conv_peak(dtype)
    rows = []
    for spec in specs:
        try:
            rows.extend(_run_mode(args, spec, repeats, peaks, dtype))
        except PeerError as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            return 2
    print(format_table(rows))
    for r in rows:
        for key in sorted(k for k in r if k.startswith("ratio_")):
            print(f"{r['config']} / ours {key[len('ratio_'):]}: {r[key]:.2f}")
    if peaks:
        print("conv2d peak (3x3, 4x64x64x256 -> 256): " +
              ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    result = {args.mode: {r["config"]: r["median_s"] for r in rows},
              "gflops": {r["config"]: r["gflops"] for r in rows},
              "peak_rss_mib": {r["config"]: r.get("peak_rss_mib") for r in rows},
              "flags": {"mixed_precision": args.mixed_precision,
                        "jit_compile": args.jit_compile, "strategy": args.strategy,
                        "kernels": args.kernels, "train_kernels": args.train_kernels,
                        "batch_size": args.batch_size, "repeats": repeats,
                        "warmup": args.warmup},
              "peak_gflops": peaks}
    if args.peer != "none":
        result["ratios"] = {r["config"]: r["ratio"] for r in rows if "ratio" in r}
    if args.json:
        result["details"] = rows
        result["machine"] = machine_info()
    print("JSON: " + json.dumps(result, sort_keys=True))
    return 0
