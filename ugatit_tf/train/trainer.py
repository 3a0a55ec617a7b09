"""The training phase: the Trainer builds the networks, optimizers, data and checkpoint for a
Config and runs the original's loop. One iteration is a discriminator update, then (every
n_critic iterations) a generator update; as in the TF1 code the two take separate batches (the
pytorch variant reuses the D batch, as the PyTorch code does). Everything needed to continue
exactly where a run stopped lives in one checkpoint: the four networks, both Adam optimizers,
the iteration counter, the positions of both data iterators and the random generator.
docs/training.md has the details (distribution, mixed precision, XLA, resume).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import keras
import tensorflow as tf

from ugatit_tf.config import Config, ConfigError
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.model import deferred_gradients
from ugatit_tf.model.checkpoints import (CheckpointError, build_optimizers, check_config_matches,
                                         make_checkpoint, model_checkpoint_dir, write_config)
from ugatit_tf.model.deferred_gradients import DeferredKernelGradients
from ugatit_tf.model.networks import Networks, regularization_loss
from ugatit_tf.model.precision import precision_policy, resolve_precision
from ugatit_tf.train import distribute as dist
from ugatit_tf.train import losses as L
from ugatit_tf.train.loss_curve import LossCurve
from ugatit_tf.train.optimizer import inner, learning_rate, make_optimizer
from ugatit_tf.train.samples import write_samples


class _StopRequest:
    """While active, SIGINT and SIGTERM ask the loop to save a checkpoint and stop after the
    current iteration (a second signal stops at once)."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def _handler(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class _Draws:
    """Stands in for a tf.random.Generator inside a replica: hands out, in order, the numbers
    drawn beforehand for the whole global batch and cut to this replica's share."""

    def __init__(self, tensors):
        self._tensors = list(tensors)

    def uniform(self, shape, *args, **kwargs):
        return self._tensors.pop(0)


def _halves(tensors, n):
    """(first n, the rest) of each tensor of a list, along the batch axis."""
    return [t[:n] for t in tensors], [t[n:] for t in tensors]


def _apply_then_deferred(optimizer, deferred, variables, grads, source_grads):
    """Apply the tape's gradients, then in the same Adam step each deferred kernel's (the
    full model's 1 GiB MLP kernels at 256 px): formed after the backward pass and the
    previous kernel's update, so only one exists at a time (model/deferred_gradients.py)."""
    optimizer.apply_gradients(deferred.others(variables, grads))
    after = list(source_grads)
    for kernel, make in deferred.makers(source_grads):
        after = [optimizer.update_counted(make(after), kernel)]


def _check_data_state_matches(config, folder: str, latest: str, has_data: bool) -> None:
    """CheckpointError naming the flag when --img_size or --batch_size differ from the run
    that saved `latest`: its data iterators' positions hold batches of that shape."""
    from ugatit_tf.model.checkpoints import read_config
    saved = read_config(folder) or {}
    changed = [n for n in ("img_size", "batch_size")
               if has_data and n in saved and saved[n] != getattr(config, n)]
    if changed:
        details = ", ".join(f"--{n} {saved[n]} (you gave {getattr(config, n)})" for n in changed)
        raise CheckpointError(f"cannot resume from {latest}: it was trained with {details}, "
                              f"and its data pipeline's position holds batches of that shape; "
                              f"pass the same values, or a new --checkpoint_dir to start over")


class Trainer:
    """Builds everything for `config` and runs the training loop.

    `datasets`: optional (dataset_A, dataset_B) of batched training images to use instead of
    the data set folders (the benchmark's synthetic data); their iterators are checkpointed
    like the folder pipelines'."""

    def __init__(self, config: Config, log=print, datasets=None):
        config.validate()
        dist.check_flags(config)
        # --mixed_precision auto trains in float32 (the original's numbers)
        config = config.replace(mixed_precision=resolve_precision(config.mixed_precision,
                                                                  "train"))
        # the strategy first: MultiWorkerMirroredStrategy must exist before other TF work
        self.strategy = dist.make_strategy(config.strategy)
        self.sharding = dist.Sharding(self.strategy, config.batch_size)
        if config.jit_compile and self.sharding.distributed:
            raise ConfigError(
                f"--jit_compile True works with one replica only (here "
                f"{self.sharding.replicas}): XLA cannot compile the cross-replica "
                f"synchronisation inside a distributed step (gradient all-reduce, spectral "
                f"norm and rho updates). Drop --jit_compile or use --strategy default.")
        self.is_chief = dist.is_chief(self.strategy)
        self.config = config
        self.log = log if self.is_chief else (lambda *a, **k: None)
        # data first: a missing or empty folder fails before any model is built
        self.files = (data_lib.domain_files(config, ("trainA", "trainB"))
                      if datasets is None else None)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self._build_models()
        self._build_state(datasets)
        self.d_step = tf.function(self._d_step)
        self.g_step = tf.function(self._g_step)
        self.sample_dir = os.path.join(config.sample_dir, config.model_dir)
        self.writer = self.curve = self._summary_fn = self.eval_cache = None
        if config.eval_freq and self.is_chief:  # builds InceptionV3 now: missing weights
            from ugatit_tf.evaluate.run import make_eval_cache  # fail before training starts
            self.eval_cache = make_eval_cache(config)

    def _build_models(self) -> None:
        """The networks and both optimizers (with their slots), in the strategy's scope and
        under the --mixed_precision policy, and the D and G updates."""
        cfg = self.config
        with precision_policy(cfg.mixed_precision), self.strategy.scope():
            self.nets = Networks(cfg)
            self.g_optim = make_optimizer(cfg, "G_optim", cfg.mixed_precision)
            self.d_optim = make_optimizer(cfg, "D_optim", cfg.mixed_precision)
            build_optimizers(self.nets, self.g_optim, self.d_optim)
        self.g_vars = [v for m in self.nets.generators for v in m.trainable_variables]
        self.d_vars = [v for m in self.nets.discriminators for v in m.trainable_variables]
        self._d_update = self._replicated_update(self.d_optim, self.d_vars, self._d_losses)
        self._g_update = self._replicated_update(self.g_optim, self.g_vars, self._g_losses)

    def _build_state(self, datasets) -> None:
        """The data iterators, the random generator, the iteration counter and the checkpoint
        (manager) that holds them with the networks and optimizers."""
        cfg = self.config
        self.rng = tf.random.Generator.from_seed(cfg.seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        if datasets is None:
            datasets = (data_lib.train_dataset(self.files["trainA"], cfg, cfg.seed),
                        data_lib.train_dataset(self.files["trainB"], cfg, cfg.seed + 1))
        self.ds_A, self.ds_B = (data_lib.without_autotuning(ds) for ds in datasets)
        self.iter_A, self.iter_B = iter(self.ds_A), iter(self.ds_B)
        self.extra_state = dict(step=self.step, data_A=self.iter_A, data_B=self.iter_B,
                                rng=self.rng)
        if dist.uses_loss_scale(cfg.mixed_precision):
            self.extra_state.update(G_loss_scale=self.g_optim, D_loss_scale=self.d_optim)
        self.checkpoint = make_checkpoint(self.nets, inner(self.g_optim), inner(self.d_optim),
                                          **self.extra_state)
        self.ckpt_dir = model_checkpoint_dir(cfg)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.ckpt_dir,
                                                  max_to_keep=cfg.keep_checkpoints,
                                                  checkpoint_name="ckpt")

    # ------------------------------------------------------------------ one iteration
    def run_iteration(self, it: int) -> tuple[dict, object, object]:
        """One training iteration (0-based `it`): a D update, then (every n_critic) a G
        update, each on its own batches as in the original. Returns (losses as floats, the
        last A batch, the last B batch)."""
        cfg = self.config
        lr = tf.constant(learning_rate(cfg, it), tf.float32)
        A, B = next(self.iter_A), next(self.iter_B)
        values = self.d_step(A, B, lr)
        if it % cfg.n_critic == 0:
            if cfg.variant == "tf1":  # the TF1 graph pulls a new batch for the G update
                A, B = next(self.iter_A), next(self.iter_B)
            values.update(self.g_step(A, B, lr))
        self.step.assign(it + 1)
        values = {k: float(v) for k, v in values.items()}
        values["lr"] = float(lr)
        return values, A, B

    def _d_step(self, real_A, real_B, lr):
        """The D update (a tf.function). The gradient penalties' random numbers are drawn
        here, for the whole global batch and outside XLA (XLA's generators give other numbers
        than TensorFlow's for the same state)."""
        return self._d_update(lr, real_A, real_B, self._gp_noise(real_A))

    def _g_step(self, real_A, real_B, lr):
        """The G update (a tf.function)."""
        return self._g_update(lr, real_A, real_B)

    def _replicated_update(self, optimizer, variables, losses):
        """update(lr, *batch): set the learning rate; then each replica takes its share of the
        global batch, computes `losses(*share)` -> (total, named losses) and applies the
        gradient of the total to `variables` (only those: the D update never backpropagates
        into the generators). Returns the named losses summed over the replicas (each replica
        scales by 1/replicas, so the sums are the global means). The full model's MLP kernels
        get their gradients after the backward pass (model/deferred_gradients.py); with one
        replica and no loss scaling each is applied before the next is formed. XLA-compiled
        with --jit_compile."""
        loss_scale = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def replica(*batch):
            batch = self.sharding.share(*batch)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([v.value for v in variables])
                deferred = DeferredKernelGradients(variables, tape)
                with deferred_gradients.recording(deferred):
                    total, named = losses(*batch)
                loss = optimizer.scale_loss(total) if loss_scale else total
            grads = tape.gradient(loss, variables + deferred.sources())
            grads, source_grads = grads[:len(variables)], grads[len(variables):]
            if loss_scale or self.sharding.distributed:  # all through one apply_gradients
                grads = deferred.gradients(variables, grads, source_grads)
                if loss_scale:
                    grads = self.sharding.sync_finiteness(grads)
                optimizer.apply_gradients(zip(grads, variables))
            else:
                _apply_then_deferred(optimizer, deferred, variables, grads, source_grads)
            return named

        def update(lr, *batch):
            inner(optimizer).learning_rate.assign(lr)
            return self.sharding.reduce(self.strategy.run(replica, args=batch))
        return tf.function(update, jit_compile=True) if self.config.jit_compile else update

    def _gp_noise(self, real_A):
        """The gradient penalties' random numbers for the whole global batch, in the order
        the penalty draws them (dragan: noise then alpha; per domain A, B)."""
        cfg = self.config
        if not L.uses_gradient_penalty(cfg.gan_type):
            return {}
        shape = tf.shape(real_A)
        noise = {}
        for domain in ("A", "B"):
            draws = []
            if cfg.gan_type == "dragan":
                draws.append(self.rng.uniform(shape))
            draws.append(self.rng.uniform(tf.stack([shape[0], 1, 1, 1])))
            noise[domain] = draws
        return noise

    def _d_losses(self, real_A, real_B, noise):
        """This replica's discriminator losses, each scaled by 1/replicas: (total with the
        weight penalty, {D_A_loss, D_B_loss, Discriminator_loss})."""
        cfg, nets, scale = self.config, self.nets, self.sharding.scale
        kernels = cfg.train_kernels
        fake_B = nets.genA2B(real_A, kernels=kernels)[0]
        fake_A = nets.genB2A(real_B, kernels=kernels)[0]
        n = tf.shape(real_A)[0]
        out = {}
        for domain, D, real, fake in (("A", nets.disA, real_A, fake_A),
                                      ("B", nets.disB, real_B, fake_B)):
            real_l, real_c, fake_l, fake_c = self._d_outputs(D, real, fake, n)
            loss = (L.discriminator_loss(cfg.gan_type, real_l, fake_l)
                    + L.discriminator_loss(cfg.gan_type, real_c, fake_c))
            if L.uses_gradient_penalty(cfg.gan_type):
                gp, gp_cam = L.gradient_penalty(D, real, fake, cfg.gan_type, cfg.GP_ld,
                                                 _Draws(noise[domain]), kernels)
                loss += gp + gp_cam
            out[f"D_{domain}_loss"] = cfg.adv_weight * loss * scale
        reg = (regularization_loss(nets.disA, cfg.variant)
               + regularization_loss(nets.disB, cfg.variant))
        total = out["D_A_loss"] + out["D_B_loss"] + reg * scale
        out["Discriminator_loss"] = self._printed(out["D_A_loss"] + out["D_B_loss"], total)
        return total, out

    def _d_outputs(self, D, real, fake, n):
        """(real logits, real CAM logits, fake logits, fake CAM logits) of one domain's
        discriminator. tf1: real and fake in one call, one spectral-norm power iteration per
        D step, as the TF1 graph. pytorch: the original calls D on the real batch, then on the
        fake one, and torch's spectral norm iterates once per call (u and v updated in
        between), so two calls, in that order."""
        kernels = self.config.train_kernels
        if self.config.variant == "pytorch":
            real_l, real_c, _ = D(real, training=True, kernels=kernels)
            fake_l, fake_c, _ = D(fake, training=True, kernels=kernels)
            return real_l, real_c, fake_l, fake_c
        logits, cams, _ = D(tf.concat([real, fake], 0), training=True, kernels=kernels)
        (real_l, fake_l), (real_c, fake_c) = _halves(logits, n), _halves(cams, n)
        return real_l, real_c, fake_l, fake_c

    def _printed(self, losses, total):
        """The total loss as the original prints it: tf1 includes the L2 regularisation (it is
        part of the TF1 losses); pytorch prints the losses without the L2 term that stands
        in for Adam's weight_decay (same gradient), as the PyTorch code does."""
        return losses if self.config.variant == "pytorch" else total

    def _g_losses(self, real_A, real_B):
        """This replica's generator losses, each scaled by 1/replicas: (total with the weight
        penalty, {G_A_gan, G_A_cycle, G_A_identity, G_A_cam, G_A_loss, the same for B,
        Generator_loss}). G_A is B->A (generator_A), G_B is A->B."""
        cfg, nets, scale = self.config, self.nets, self.sharding.scale
        n, kernels = tf.shape(real_A)[0], cfg.train_kernels
        # genA2B on [A, B] gives x_ab and x_bb; genB2A on [B, A, x_ab] gives x_ba, x_aa and
        # the cycle x_aba in one call; genA2B on x_ba gives the other cycle x_bab
        ab, cam_ab_all, _ = nets.genA2B(tf.concat([real_A, real_B], 0), kernels=kernels)
        x_ab, x_bb = ab[:n], ab[n:]
        cam_ab, cam_bb = cam_ab_all[:n], cam_ab_all[n:]
        ba, cam_ba_all, _ = nets.genB2A(tf.concat([real_B, real_A, x_ab], 0), kernels=kernels)
        x_ba, x_aa, x_aba = ba[:n], ba[n:2 * n], ba[2 * n:]
        cam_ba, cam_aa = cam_ba_all[:n], cam_ba_all[n:2 * n]
        x_bab = nets.genA2B(x_ba, kernels=kernels)[0]
        fake_A_logit, fake_A_cam, _ = nets.disA(x_ba, training=True, kernels=kernels)
        fake_B_logit, fake_B_cam, _ = nets.disB(x_ab, training=True, kernels=kernels)
        terms = {
            "A": (fake_A_logit, fake_A_cam, L.l1_loss(x_bab, real_B), L.l1_loss(x_aa, real_A),
                  L.cam_loss(cam_ba, cam_aa)),
            "B": (fake_B_logit, fake_B_cam, L.l1_loss(x_aba, real_A), L.l1_loss(x_bb, real_B),
                  L.cam_loss(cam_ab, cam_bb)),
        }
        out = {}
        for d, (logit, cam, cycle, identity, cam_l) in terms.items():
            parts = {"gan": cfg.adv_weight * (L.generator_loss(cfg.gan_type, logit)
                                              + L.generator_loss(cfg.gan_type, cam)),
                     "cycle": cfg.cycle_weight * cycle,
                     "identity": cfg.identity_weight * identity,
                     "cam": cfg.cam_weight * cam_l}
            out.update({f"G_{d}_{k}": v * scale for k, v in parts.items()})
            out[f"G_{d}_loss"] = (parts["gan"] + parts["cycle"] + parts["identity"]
                                  + parts["cam"]) * scale
        reg = (regularization_loss(nets.genA2B, cfg.variant)
               + regularization_loss(nets.genB2A, cfg.variant))
        total = out["G_A_loss"] + out["G_B_loss"] + reg * scale
        out["Generator_loss"] = self._printed(out["G_A_loss"] + out["G_B_loss"], total)
        return total, out

    # ------------------------------------------------------------------ the loop
    @property
    def total_iterations(self) -> int:
        return self.config.epoch * self.config.iteration

    def train(self, max_iterations: int | None = None, progress: bool = True) -> dict:
        """Train until epoch * iteration iterations are done (or `max_iterations` more).
        Returns the last losses (floats), a history of the G/D totals and the seconds each
        iteration took (D and G steps, losses and summaries; not samples or checkpoints)."""
        from ugatit_tf.common.progress import ProgressBar

        start = self.restore_or_start()
        end = self.total_iterations if max_iterations is None else \
            min(self.total_iterations, start + max_iterations)
        self._open_outputs(start)
        bar = ProgressBar(end - start, label="train", enabled=progress and self.is_chief)
        history = {"Generator_loss": [], "Discriminator_loss": [], "step": [], "losses": []}
        self.iteration_seconds = []
        last, done, t0 = {}, start, time.monotonic()
        with _StopRequest() as stop:
            for it in range(start, end):
                tick = time.perf_counter()
                values, A, B = self.run_iteration(it)
                done = it + 1
                last = {**last, **values}  # G losses stay those of the last G update
                history["step"].append(done)
                history["Discriminator_loss"].append(last["Discriminator_loss"])
                history["Generator_loss"].append(last.get("Generator_loss", float("nan")))
                history["losses"].append(dict(last))
                self._write_scalars(last, done)
                self.iteration_seconds.append(time.perf_counter() - tick)
                self._after_iteration(done, end, A, B, last)
                rate = (done - start) / max(time.monotonic() - t0, 1e-9)
                bar.update(1, note=f"it {done} d {last['Discriminator_loss']:.3f} "
                                   f"g {last.get('Generator_loss', float('nan')):.3f} "
                                   f"{rate:.2f} it/s")
                if stop.signal is not None:
                    if self.manager.latest_checkpoint != os.path.join(self.ckpt_dir,
                                                                      f"ckpt-{done}"):
                        self.save()
                    break
        if stop.signal is not None and done < end:
            self.log(f" [*] {stop.signal}: checkpoint saved at iteration {done}; rerun the same "
                     f"command to resume")
        self.writer.flush()
        return {"last": last, "history": history, "start": start, "end": done,
                "interrupted": stop.signal, "seconds": list(self.iteration_seconds)}

    def _open_outputs(self, start: int) -> None:
        """config.json, the TensorBoard writer and the loss curve (chief only). Unwritable
        output folders fail now, with the flag to fix, not after hours of training."""
        if not self.is_chief:
            self.writer = tf.summary.create_noop_writer()
            return
        cfg = self.config
        try:  # config.json is written with the first checkpoint (save), not before: a run
            # that fails or has nothing to do leaves the folder's flags as they were
            data_lib.ensure_output_folder(self.ckpt_dir, "--checkpoint_dir")
        except data_lib.OutputError as e:
            raise CheckpointError(f"cannot write to the checkpoint folder {self.ckpt_dir} "
                                  f"({e.__cause__.strerror or e.__cause__}): check "
                                  f"--checkpoint_dir") from e
        log_dir = data_lib.ensure_output_folder(os.path.join(cfg.log_dir, cfg.model_dir),
                                                "--log_dir")
        self.sample_dir = data_lib.ensure_output_folder(self.sample_dir, "--sample_dir")
        self.writer = tf.summary.create_file_writer(log_dir)
        self._summary_fn = None
        self.curve = LossCurve(self.sample_dir, self.total_iterations, start)

    def _after_iteration(self, done: int, end: int, A, B, losses: dict) -> None:
        """What happens between iterations: the loss curve, samples every print_freq, a
        checkpoint every save_freq (and at each epoch's end and the last iteration), the
        evaluation every eval_freq."""
        cfg = self.config
        if self.curve is not None:
            self.curve.add(done, losses)
        if self.is_chief and (done % cfg.print_freq == 0 or done == end):
            try:  # a sample sheet is not worth the iterations since the last checkpoint
                write_samples(self.nets, A, B, self.sample_dir, done, self.writer)
            except OSError as e:
                self.log(f" [!] cannot write the samples of iteration {done} to "
                         f"{self.sample_dir} ({e}); training goes on")
        if done % cfg.save_freq == 0 or done % cfg.iteration == 0 or done == end:
            self.save()
        if self.is_chief and cfg.eval_freq and done % cfg.eval_freq == 0:
            from ugatit_tf.evaluate.run import evaluate_during_training
            evaluate_during_training(self.nets, cfg, done, self.writer, self.eval_cache,
                                     log=self.log)

    def save(self) -> str:
        """Write a checkpoint, then (chief) the loss curve. TensorFlow writes the files under
        temporary names and updates the `checkpoint` state file last (atomically), so a crash
        or a failed write leaves the previous checkpoint the latest loadable one. With several
        workers, only the chief writes into checkpoint_dir; the others write a temporary
        copy and delete it."""
        if not self.is_chief:
            dist.write_to_temporary(self.checkpoint)
            return ""
        try:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            write_config(self.ckpt_dir, self.config)
            path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        except (OSError, tf.errors.OpError) as e:
            previous = self.manager.latest_checkpoint
            raise CheckpointError(
                f"cannot write a checkpoint to {self.ckpt_dir} "
                f"({getattr(e, 'message', None) or e}); the previous checkpoint "
                f"{previous or '(none)'} is untouched. Free disk space or fix permissions, then "
                f"rerun the same command to resume.") from e
        if self.curve is not None:
            try:
                self.curve.write()
            except OSError as e:
                self.log(f" [!] cannot write the loss curve to {self.sample_dir} ({e}); "
                         f"training goes on")
        return path

    # ------------------------------------------------------------------ resume
    def restore_or_start(self) -> int:
        """Resume from the latest checkpoint of this config, if any; returns the iteration."""
        step = self._restore()
        if self.sharding.distributed:
            self._check_workers_agree(step)
        return step

    def _restore(self) -> int:
        check_config_matches(self.config, self.ckpt_dir)
        latest = self.manager.latest_checkpoint
        if latest is None:
            self.log(f" [*] No checkpoint in {self.ckpt_dir}: training from scratch")
            return 0
        # a converted checkpoint has weights (and maybe Adam state) but no data / RNG state:
        # restore what it has, and insist that all of that matches
        present = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
        extra = {k: v for k, v in self.extra_state.items() if k in present}
        g_optim = inner(self.g_optim) if "G_optim" in present else None
        d_optim = inner(self.d_optim) if "D_optim" in present else None
        _check_data_state_matches(self.config, self.ckpt_dir, latest, "data_A" in present)
        checkpoint = make_checkpoint(self.nets, g_optim, d_optim, **extra)
        try:
            with self.strategy.scope():
                status = checkpoint.restore(latest)
        except (tf.errors.OpError, ValueError, IndexError) as e:  # IndexError: a truncated file
            raise CheckpointError(f"cannot resume from {latest}: {type(e).__name__}: {e} (a "
                                  f"damaged or truncated checkpoint?)") from e
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise CheckpointError(f"cannot resume from {latest}: {e}") from e
        status.expect_partial()
        step = int(self.step.numpy())
        if int(self.g_optim.iterations.numpy()) == 0 and step > 0:
            self.log(f" [*] Fine-tuning from {latest} (weights only; fresh optimizer state)")
        else:
            self.log(f" [*] Resumed from {latest} at iteration {step} (epoch "
                     f"{step // self.config.iteration}, lr {learning_rate(self.config, step):g})")
        return step

    def _check_workers_agree(self, step: int) -> None:
        """Every worker must resume at the chief's iteration (a checkpoint_dir that is not
        shared would silently desynchronise the replicas' data and weights)."""
        value = tf.constant([float(step), float(step) ** 2], tf.float64)
        per_replica = self.strategy.run(lambda: tf.identity(value))
        mean, mean_square = (self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica,
                                                  axis=None).numpy())
        if mean != step or mean_square != mean ** 2:  # all equal <=> variance 0
            raise CheckpointError(
                f"the workers resumed at different iterations (this one at {step}, the mean "
                f"is {mean:g}): --checkpoint_dir must be a folder that every worker sees (a "
                f"shared file system), holding the chief's checkpoints")

    # ------------------------------------------------------------------ TensorBoard
    def _rho_variables(self):
        return [v for model in self.nets.generators for v in model.trainable_variables
                if v.path.endswith("rho")]

    def _write_scalars(self, values: dict, step: int) -> None:
        """The losses and the rho statistics (histogram, min, max, mean) of every AdaLIN/LIN
        layer, written in one graph call (not ~100 eager ops per iteration)."""
        if not self.is_chief:
            return
        keys = tuple(sorted(values))
        if self._summary_fn is None or self._summary_fn[0] != keys:
            rhos = self._rho_variables()
            writer = self.writer

            @tf.function
            def write(scalars, step):
                with writer.as_default(step=step):
                    for k in keys:
                        tf.summary.scalar(k, scalars[k])
                    for var in rhos:
                        name = var.path
                        value = tf.convert_to_tensor(var)
                        tf.summary.histogram(name, value)
                        tf.summary.scalar(name + "_min", tf.reduce_min(value))
                        tf.summary.scalar(name + "_max", tf.reduce_max(value))
                        tf.summary.scalar(name + "_mean", tf.reduce_mean(value))
            self._summary_fn = (keys, write)
        scalars = {k: tf.constant(values[k], tf.float32) for k in keys}
        self._summary_fn[1](scalars, tf.constant(step, tf.int64))
