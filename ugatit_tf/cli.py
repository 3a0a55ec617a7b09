"""Command line of main.py: parse the original's flags, check what the user gave (one line and
exit status 2 for any mistake, before TensorFlow loads a model or anything is written), keep
TensorFlow's start-up chatter off the console, then run one function per phase."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
import tempfile

from ugatit_tf.common.files import PathError, check_path_kind, path_kind
from ugatit_tf.config import Config, ConfigError, add_config_flags, config_from_args, given_flags

USAGE = ("main.py --phase {train,test,export,eval,check,serve} --dataset NAME [--checkpoint PATH] "
         "[--input PATH] [...]  (main.py --help lists every flag)")
# phases that run a trained checkpoint (found by --checkpoint or by the flags)
CHECKPOINT_PHASES = ("test", "export", "eval", "serve")
# TensorFlow's C++ log lines (absl format) and absl's notice before its logging starts
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                      r"To enable the following instructions: |"
                      r"[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] )")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors; a mistyped flag gets the usage line and a suggestion."""

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if not unknown:
            self.exit(2, f"{self.prog}: error: {message}\n")
        flags = [a for a in self._option_string_actions if a.startswith("--")]
        words = unknown.group(1).split()
        for word in (w for w in words if w.startswith("-")):
            close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
            if close:
                message += f": did you mean {close[0]}?"
                break
        usage = self.usage or f"{self.prog} [...]  ({self.prog} --help lists every flag)"
        self.exit(2, f"usage: {usage}\n{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="main.py", usage=USAGE, formatter_class=lambda prog: (
                        argparse.HelpFormatter(prog, max_help_position=30, width=100)),
                    description="U-GAT-IT in TensorFlow 2 / Keras 3 (the original's flags: "
                                "--light True, --img_size 256, ...)")
    add_config_flags(parser)
    return parser


def parse_args(argv=None) -> tuple[Config, frozenset]:
    """The Config of the command line (not validated yet: a checkpoint may still bring flags)
    and the names of the flags given on it; an unknown flag or a bad value type exits with
    status 2 and one line naming it."""
    args = build_parser().parse_args(argv)
    return config_from_args(args), given_flags(args)


def parse_config(argv=None) -> Config:
    """The validated Config of a command line, without looking for its checkpoint."""
    config, _ = parse_args(argv)
    try:
        return config.validate()
    except ConfigError as e:
        build_parser().error(str(e))


# ---------------------------------------------------------------------------
# Before any work: every user mistake is one line, nothing written
# ---------------------------------------------------------------------------

def check_output_folder(path: str, flag: str) -> None:
    """PathError when `path` could not be created or written, without creating it."""
    check_path_kind(path, flag, ("folder", "missing"), "a folder")
    parent = os.path.normpath(path)
    while path_kind(parent) == "missing":
        parent = os.path.dirname(parent) or "."
    check_path_kind(parent, flag, ("folder",), "a folder")  # names the ancestor
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {path}: cannot write into {parent} (no permission or a "
                        f"read-only file system)")


def check_inputs(config: Config) -> None:
    """--input must name existing photos or videos: a file, a glob or a non-empty folder."""
    from ugatit_tf.infer.photos import expand_inputs
    unreadable = [p for p in expand_inputs(config.input) if not os.access(p, os.R_OK)]
    if unreadable:
        raise PathError(f"--input {config.input}: cannot read {unreadable[0]}")
    if config.output:
        check_output_folder(config.output, "--output")


def check_request(config: Config, given: frozenset) -> Config:
    """The checks of the flags that need the file system; returns the config to run (for the
    checkpoint phases: with the checkpoint's flags, see checkpoints.resolve_checkpoint)."""
    from ugatit_tf.model.checkpoints import resolve_checkpoint
    if config.checkpoint and config.phase not in CHECKPOINT_PHASES:
        raise ConfigError(f"--checkpoint is for --phase {', '.join(CHECKPOINT_PHASES)}; "
                          f"--phase {config.phase} uses checkpoint_dir/model_dir")
    if config.input and config.phase != "test":
        raise ConfigError(f"--input is for --phase test, not --phase {config.phase}")
    if config.phase == "serve":
        from ugatit_tf.serve.models import check_serve_flags, listen
        check_serve_flags(config)
        listen(config.host, config.port).close()  # a busy port is said before any loading
        if config.serving_url or "export_dir" in given:
            return config  # a TF Serving model or a SavedModel: no checkpoint needed
    if config.phase not in CHECKPOINT_PHASES:
        return config
    if config.input:
        check_inputs(config)
    if config.phase == "export":
        check_output_folder(config.export_dir, "--export_dir")
        if config.representative_dir and not os.path.isdir(config.representative_dir):
            raise ConfigError(f"--representative_dir {config.representative_dir} is not a "
                              f"folder")
    elif config.phase in ("test", "eval"):
        check_output_folder(config.result_dir, "--result_dir")
    weights = config.inception_weights  # a file, or a name (evaluate.run.inception_weights_arg)
    if config.phase == "eval" and weights.strip().lower() not in (
            "imagenet", "random", "none") and not os.path.isfile(weights):
        raise ConfigError(f"--inception_weights {weights} is not a file")
    return resolve_checkpoint(config, given)


def import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow with its C++ and Python log lines off unless `verbose`.

    TF_CPP_MIN_LOG_LEVEL=3 hides what TensorFlow logs once its logging has started (cuInit,
    Grappler's remapper); what its libraries print while loading (oneDNN, cudart) comes before
    that and ignores it, so file descriptor 2 is captured during the import and replayed
    without those lines."""
    if verbose:
        import tensorflow  # noqa: F401
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(True):
                if not TF_NOISE.match(line):
                    sys.stderr.write(line)
    tf.get_logger().setLevel("ERROR")  # deprecation warnings of tf.compat.v1 ops


# ---------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------

def print_info(config: Config) -> None:
    print("##### Information #####")
    for name in ("variant", "light", "gan_type", "dataset", "batch_size", "epoch", "iteration",
                 "smoothing", "n_res", "n_dis", "n_critic", "sn", "adv_weight", "cycle_weight",
                 "identity_weight", "cam_weight", "img_size", "ch"):
        print(f"# {name} : {getattr(config, name)}")
    print()


def phase_train(config: Config) -> int:
    from ugatit_tf.train.trainer import Trainer
    print_info(config)
    trainer = Trainer(config)
    result = trainer.train()
    if result.get("interrupted") and result["end"] < trainer.total_iterations:
        # the trainer said where the checkpoint is; a non-zero status tells schedulers the
        # run is not finished (130 for SIGINT, 143 for SIGTERM, as if killed by the signal)
        return 128 + int(signal.Signals[result["interrupted"]])
    last = result["last"]
    if last:
        print(f" [*] Training finished at iteration {result['end']}: "
              f"d_loss {last['Discriminator_loss']:.4f}, g_loss {last['Generator_loss']:.4f}")
    else:
        print(f" [*] Nothing to do: already trained for {result['end']} iterations")
    return 0


def phase_test(config: Config) -> int:
    if config.input:
        return phase_photos(config)
    from ugatit_tf.infer.test_phase import run_test
    run_test(config)
    return 0


def phase_photos(config: Config) -> int:
    import tensorflow as tf

    from ugatit_tf.infer.photos import translate_paths
    from ugatit_tf.model.checkpoints import load_networks
    from ugatit_tf.model.layers import choose_kernels
    from ugatit_tf.model.networks import translator
    from ugatit_tf.model.precision import resolve_precision

    nets, prefix = load_networks(config, mixed_precision=resolve_precision(
        config.mixed_precision, "test", print))
    print(f" [*] Loaded {prefix}")
    model = nets.genA2B if config.direction == "a2b" else nets.genB2A
    fn = translator(model, choose_kernels(config.kernels, batched=False))

    def translate(batch):
        image, _, heatmap = fn(tf.convert_to_tensor(batch, tf.float32))
        return image.numpy(), heatmap.numpy()

    output = config.output or os.path.join(config.result_dir, config.model_dir, "photos")
    try:
        summary = translate_paths(config.input, output, translate, img_size=config.img_size,
                                  face_crop=config.face_crop, paste_back=config.paste_back,
                                  fallback=config.fallback)
    except ValueError as e:  # bad --input / --output (nothing was written)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary.n_failed == 0 else 1


def phase_export(config: Config) -> int:
    from ugatit_tf.export.run import export_models
    paths = export_models(config, export_dir=config.export_dir,
                          export_format=config.export_format, quantize=config.quantize,
                          version=config.version, model_name=config.serve_model_name or None)
    for kind, path in sorted(paths.items()):
        print(f" [*] {kind}: {path}")
    return 0


def phase_eval(config: Config) -> int:
    from ugatit_tf.evaluate.run import run_eval
    run_eval(config)
    return 0


def phase_check(config: Config) -> int:
    """Scan trainA, trainB, testA, testB with PIL and print what training would do with each
    file; exit 0 if training can proceed, 1 if a training folder has no usable image."""
    from ugatit_tf.data.check import check_dataset
    report = check_dataset(config)
    print(report.text())
    return 0 if report.usable else 1


def phase_serve(config: Config) -> int:
    """The web page and TF Serving's REST API on --host:--port (ugatit_tf/serve)."""
    from ugatit_tf.serve.app import serve
    return serve(config)


PHASES = {"train": phase_train, "test": phase_test, "export": phase_export,
          "eval": phase_eval, "check": phase_check, "serve": phase_serve}


def user_errors() -> tuple:
    """Exceptions that mean "the input or the flags are wrong": one clear line, no traceback.
    (Imported here, not at the top: most of these modules import TensorFlow.)"""
    from ugatit_tf.common.files import PathError
    from ugatit_tf.common.images import ImageRejected
    from ugatit_tf.data.check import DataError
    from ugatit_tf.evaluate.inception import InceptionWeightsError
    from ugatit_tf.export.saved_model import ExportError
    from ugatit_tf.infer.photos import NoFaceError
    from ugatit_tf.infer.video import VideoError
    from ugatit_tf.model.checkpoints import CheckpointError
    return (ConfigError, PathError, ImageRejected, DataError, CheckpointError, ExportError,
            InceptionWeightsError, NoFaceError, VideoError)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    config, given = parse_args(argv)
    from ugatit_tf.common.files import PathError
    from ugatit_tf.model.checkpoints import CheckpointError
    try:
        config = check_request(config, given)
    except (ConfigError, CheckpointError, PathError) as e:
        return fail(str(e))
    try:  # after check_request: the checkpoint's flags (--n_dis, ...) count
        config.validate()
    except ConfigError as e:
        build_parser().error(str(e))
    if config.low_memory:
        from ugatit_tf.common.memory import use_low_memory_allocators
        print(f" [*] --low_memory: {', '.join(use_low_memory_allocators())}")
    import_tensorflow(config.verbose)
    errors = user_errors()
    try:
        return PHASES[config.phase](config)
    except errors as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
