"""Training and test phases.

One training iteration is the original's: a discriminator update, then (every n_critic
iterations) a generator update, each in its own `tf.function` with a GradientTape. As in the
TF1 code, the two updates take separate batches (the pytorch variant reuses the D batch, as
the PyTorch code does). The discriminator loss never backpropagates into the generators.

Everything needed to continue exactly where a run stopped lives in one checkpoint: the four
networks, both Adam optimizers (slots, iteration counts, learning rates), the iteration
counter and the positions of both data iterators.
"""

from __future__ import annotations

import html
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.train import distribute as dist
from ugatit_tf.train import losses as L
from ugatit_tf.model.checkpoints import (CheckpointError, build_optimizers, check_config_matches,
                          load_networks, make_checkpoint, model_checkpoint_dir, write_config)
from ugatit_tf.config import Config, ConfigError
from ugatit_tf.model.networks import Networks, regularization_loss


def learning_rate(config: Config, iteration: int) -> float:
    """The learning rate of (0-based) iteration `iteration`.

    tf1: constant until decay_epoch, then linearly to 0 at the last epoch, set per epoch
    (lr * (epoch_total - epoch) / (epoch_total - decay_epoch)).
    pytorch: constant for the first half of all iterations, then lowered by lr / (total/2)
    every iteration."""
    if not config.decay_flag:
        return config.lr
    if config.variant == "pytorch":
        total = config.epoch * config.iteration
        half = total // 2
        step = iteration + 1
        if half == 0 or step <= half:
            return config.lr
        return config.lr - config.lr / half * (step - half)
    epoch = iteration // config.iteration
    if epoch < config.decay_epoch or config.epoch == config.decay_epoch:
        return config.lr
    return config.lr * (config.epoch - epoch) / (config.epoch - config.decay_epoch)


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


def _split(tensors, n):
    return [t[:n] for t in tensors], [t[n:] for t in tensors]


class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose per-variable update is ONE fused kernel
    (ResourceApplyAdam) instead of about ten element-wise ops, with the step's scalars
    (b1^t, b2^t, ...) computed once per update instead of once per variable: the same
    formula (Keras' and TF's Adam both use lr * sqrt(1 - b2^t) / (1 - b1^t) and epsilon
    outside the square root), the same slot variables and checkpoint layout, a fraction of
    the ops per step.

    `torch_epsilon=True` puts epsilon where torch.optim.Adam has it, after the bias correction
    of the second moment: m_hat / (sqrt(v_hat) + eps), i.e. epsilon * sqrt(1 - b2^t) in the
    formula above (the pytorch variant)."""

    _scalars = None

    def __init__(self, *args, torch_epsilon=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.torch_epsilon = torch_epsilon

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # once per apply (cross-replica context), shared by every variable's update
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.constant(self.beta_1, tf.float32), tf.constant(self.beta_2,
                                                                           tf.float32)
        beta2_power = tf.pow(beta_2, step)
        epsilon = tf.constant(self.epsilon, tf.float32)
        if self.torch_epsilon:
            epsilon *= tf.sqrt(1.0 - beta2_power)
        self._scalars = dict(beta1_power=tf.pow(beta_1, step), beta2_power=beta2_power,
                             lr=tf.cast(learning_rate, tf.float32), beta1=beta_1,
                             beta2=beta_2, epsilon=epsilon)
        try:
            return super()._distributed_tf_update_step(distribution, grads_and_vars,
                                                       learning_rate)
        finally:
            self._scalars = None

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or self._scalars is None or isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != tf.float32):
            if self.torch_epsilon:
                raise ValueError(f"{self.name}: torch_epsilon needs the fused update (dense "
                                 f"float32 gradients, no amsgrad)")
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(var=_handle(variable), m=_handle(m), v=_handle(v),
                                     grad=tf.cast(gradient, tf.float32), use_locking=False,
                                     **self._scalars)


def _handle(variable):
    if isinstance(variable, keras.Variable):  # a Keras variable wraps a tf.Variable
        variable = variable.value
    return variable.handle


def make_train_optimizer(config: Config, name: str):
    """The original's Adam (lr, beta1 0.5, beta2 0.999, epsilon 1e-8) as a FusedAdam; wrapped
    in a LossScaleOptimizer for --mixed_precision mixed_float16. Build it inside the
    strategy's scope."""
    optim = FusedAdam(learning_rate=config.lr, beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                      torch_epsilon=config.variant == "pytorch", name=name)
    if dist.uses_loss_scale(config.mixed_precision):
        return keras.optimizers.LossScaleOptimizer(optim, name=f"{name}_loss_scale")
    return optim


def _inner(optimizer):
    """The Adam inside a LossScaleOptimizer (checkpointed under the original's G_optim /
    D_optim names, so checkpoints do not depend on the precision)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


class _Draws:
    """Stands in for a tf.random.Generator inside a replica: hands out, in order, the numbers
    drawn beforehand for the whole global batch and cut to this replica's share."""

    def __init__(self, tensors):
        self._tensors = list(tensors)

    def uniform(self, shape, *args, **kwargs):
        return self._tensors.pop(0)


class Trainer:
    """Builds everything for `config` and runs the training loop.

    `datasets`: optional (dataset_A, dataset_B) of batched training images to use instead of
    the data set folders (the benchmark's synthetic data); their iterators are checkpointed
    like the folder pipelines'."""

    def __init__(self, config: Config, log=print, datasets=None):
        config.validate()
        dist.check_flags(config)
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
        with dist.precision_policy(config.mixed_precision), self.strategy.scope():
            self.nets = Networks(config)
            self.g_optim = make_train_optimizer(config, "G_optim")
            self.d_optim = make_train_optimizer(config, "D_optim")
            build_optimizers(self.nets, self.g_optim, self.d_optim)
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        if datasets is None:
            self.ds_A = data_lib.train_dataset(self.files["trainA"], config, config.seed)
            self.ds_B = data_lib.train_dataset(self.files["trainB"], config, config.seed + 1)
        else:
            self.ds_A, self.ds_B = datasets
        self.iter_A = iter(self.ds_A)
        self.iter_B = iter(self.ds_B)
        self.extra_state = dict(step=self.step, data_A=self.iter_A, data_B=self.iter_B,
                                rng=self.rng)
        if dist.uses_loss_scale(config.mixed_precision):
            self.extra_state.update(G_loss_scale=self.g_optim, D_loss_scale=self.d_optim)
        self.checkpoint = make_checkpoint(self.nets, _inner(self.g_optim), _inner(self.d_optim),
                                          **self.extra_state)
        self.ckpt_dir = model_checkpoint_dir(config)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.ckpt_dir,
                                                  max_to_keep=config.keep_checkpoints,
                                                  checkpoint_name="ckpt")
        self.g_vars = [v for m in self.nets.generators for v in m.trainable_variables]
        self.d_vars = [v for m in self.nets.discriminators for v in m.trainable_variables]
        self.d_step = self._compile(self._d_step)
        self.g_step = self._compile(self._g_step)
        self.writer = None
        self._summary_fn = None
        self.eval_cache = None
        if config.eval_freq and self.is_chief:  # builds InceptionV3 now: missing weights
            from ugatit_tf.evaluate.run import make_eval_cache  # fail before training starts
            self.eval_cache = make_eval_cache(config)

    def _compile(self, step):
        """The step as a tf.function; with --jit_compile the update inside it (`_d_update`,
        `_g_update`: losses, gradients, optimizer) is compiled by XLA, while the gradient
        penalties' random numbers are drawn outside XLA (XLA's random number generators
        give other numbers than TensorFlow's for the same state)."""
        if self.config.jit_compile:
            self._d_update = tf.function(self._d_update, jit_compile=True)
            self._g_update = tf.function(self._g_update, jit_compile=True)
        return tf.function(step)

    # ------------------------------------------------------------------ steps
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

    def _d_losses(self, real_A, real_B, fake_A, fake_B, noise):
        cfg = self.config
        n = tf.shape(real_A)[0]
        out = {}
        for domain, D, real, fake in (("A", self.nets.disA, real_A, fake_A),
                                      ("B", self.nets.disB, real_B, fake_B)):
            real_l, real_c, fake_l, fake_c = self._d_outputs(D, real, fake, n)
            loss = (L.discriminator_loss(cfg.gan_type, real_l, fake_l)
                    + L.discriminator_loss(cfg.gan_type, real_c, fake_c))
            if L.uses_gradient_penalty(cfg.gan_type):
                gp, gp_cam = L.gradient_penalty(D, real, fake, cfg.gan_type, cfg.GP_ld,
                                                 _Draws(noise[domain]))
                loss += gp + gp_cam
            out[f"D_{domain}_loss"] = cfg.adv_weight * loss
        return out

    def _d_outputs(self, D, real, fake, n):
        """(real logits, real CAM logits, fake logits, fake CAM logits) of one domain's
        discriminator. tf1: real and fake in one call, one spectral-norm power iteration per
        D step, as the TF1 graph. pytorch: the original calls D on the real batch, then on the
        fake one, and torch's spectral norm iterates once per call (u and v updated in
        between), so two calls, in that order."""
        if self.config.variant == "pytorch":
            real_l, real_c, _ = D(real, training=True)
            fake_l, fake_c, _ = D(fake, training=True)
            return real_l, real_c, fake_l, fake_c
        logits, cams, _ = D(tf.concat([real, fake], 0), training=True)
        (real_l, fake_l), (real_c, fake_c) = _split(logits, n), _split(cams, n)
        return real_l, real_c, fake_l, fake_c

    def _printed(self, losses, total):
        """The total loss as the original prints it: tf1 includes the L2 regularisation (it is
        part of the TF1 losses); pytorch prints the losses without the L2 term that stands
        in for Adam's weight_decay (same gradient), as the PyTorch code does."""
        return losses if self.config.variant == "pytorch" else total

    def _d_grads(self, real_A, real_B, noise):
        """This replica's D losses (scaled by 1/replicas) and gradients."""
        scale = self.sharding.scale
        fake_B = self.nets.genA2B(real_A)[0]
        fake_A = self.nets.genB2A(real_B)[0]
        with tf.GradientTape() as tape:
            out = {k: v * scale for k, v in
                   self._d_losses(real_A, real_B, fake_A, fake_B, noise).items()}
            reg = (regularization_loss(self.nets.disA, self.config.variant)
                   + regularization_loss(self.nets.disB, self.config.variant))
            total = out["D_A_loss"] + out["D_B_loss"] + reg * scale
            loss = self._scaled(self.d_optim, total)
        grads = tape.gradient(loss, self.d_vars)
        out["Discriminator_loss"] = self._printed(out["D_A_loss"] + out["D_B_loss"], total)
        return grads, out

    def _d_replica(self, real_A, real_B, noise):
        real_A, real_B, noise = self.sharding.share(real_A, real_B, noise)
        grads, out = self._d_grads(real_A, real_B, noise)
        self._apply(self.d_optim, grads, self.d_vars)
        return out

    def _d_step(self, real_A, real_B, lr):
        return self._d_update(real_A, real_B, lr, self._gp_noise(real_A))

    def _d_update(self, real_A, real_B, lr, noise):
        _inner(self.d_optim).learning_rate.assign(lr)
        out = self.strategy.run(self._d_replica, args=(real_A, real_B, noise))
        return self.sharding.reduce(out)

    def _g_losses(self, real_A, real_B):
        cfg, nets = self.config, self.nets
        n = tf.shape(real_A)[0]
        # genA2B on [A, B] gives x_ab and x_bb; genB2A on [B, A, x_ab] gives x_ba, x_aa and
        # the cycle x_aba in one call; genA2B on x_ba gives the other cycle x_bab
        ab, cam_ab_all, _ = nets.genA2B(tf.concat([real_A, real_B], 0))
        x_ab, x_bb = ab[:n], ab[n:]
        cam_ab, cam_bb = cam_ab_all[:n], cam_ab_all[n:]
        ba, cam_ba_all, _ = nets.genB2A(tf.concat([real_B, real_A, x_ab], 0))
        x_ba, x_aa, x_aba = ba[:n], ba[n:2 * n], ba[2 * n:]
        cam_ba, cam_aa = cam_ba_all[:n], cam_ba_all[n:2 * n]
        x_bab = nets.genA2B(x_ba)[0]
        fake_A_logit, fake_A_cam, _ = nets.disA(x_ba, training=True)
        fake_B_logit, fake_B_cam, _ = nets.disB(x_ab, training=True)
        out = {}
        terms = {
            "A": (fake_A_logit, fake_A_cam, L.l1_loss(x_bab, real_B), L.l1_loss(x_aa, real_A),
                  L.cam_loss(cam_ba, cam_aa)),
            "B": (fake_B_logit, fake_B_cam, L.l1_loss(x_aba, real_A), L.l1_loss(x_bb, real_B),
                  L.cam_loss(cam_ab, cam_bb)),
        }
        for d, (logit, cam, cycle, identity, cam_l) in terms.items():
            out[f"G_{d}_gan"] = cfg.adv_weight * (L.generator_loss(cfg.gan_type, logit)
                                                  + L.generator_loss(cfg.gan_type, cam))
            out[f"G_{d}_cycle"] = cfg.cycle_weight * cycle
            out[f"G_{d}_identity"] = cfg.identity_weight * identity
            out[f"G_{d}_cam"] = cfg.cam_weight * cam_l
            out[f"G_{d}_loss"] = (out[f"G_{d}_gan"] + out[f"G_{d}_cycle"]
                                  + out[f"G_{d}_identity"] + out[f"G_{d}_cam"])
        return out

    def _g_grads(self, real_A, real_B):
        """This replica's G losses (scaled by 1/replicas) and gradients."""
        scale = self.sharding.scale
        with tf.GradientTape() as tape:
            out = {k: v * scale for k, v in self._g_losses(real_A, real_B).items()}
            reg = (regularization_loss(self.nets.genA2B, self.config.variant)
                   + regularization_loss(self.nets.genB2A, self.config.variant))
            total = out["G_A_loss"] + out["G_B_loss"] + reg * scale
            loss = self._scaled(self.g_optim, total)
        grads = tape.gradient(loss, self.g_vars)
        out["Generator_loss"] = self._printed(out["G_A_loss"] + out["G_B_loss"], total)
        return grads, out

    def _g_replica(self, real_A, real_B):
        real_A, real_B = self.sharding.share(real_A, real_B)
        grads, out = self._g_grads(real_A, real_B)
        self._apply(self.g_optim, grads, self.g_vars)
        return out

    def _g_step(self, real_A, real_B, lr):
        return self._g_update(real_A, real_B, lr)

    def _g_update(self, real_A, real_B, lr):
        _inner(self.g_optim).learning_rate.assign(lr)
        out = self.strategy.run(self._g_replica, args=(real_A, real_B))
        return self.sharding.reduce(out)

    @staticmethod
    def _scaled(optimizer, loss):
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def _apply(self, optimizer, grads, variables):
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            grads = self.sharding.sync_finiteness(grads)
        optimizer.apply_gradients(zip(grads, variables))

    # ------------------------------------------------------------------ loop
    @property
    def total_iterations(self) -> int:
        return self.config.epoch * self.config.iteration

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
        optims = {k: _inner(v) for k, v in (("g_optim", self.g_optim), ("d_optim", self.d_optim))
                  if ("G_optim" if k == "g_optim" else "D_optim") in present}
        checkpoint = make_checkpoint(self.nets, optims.get("g_optim"), optims.get("d_optim"),
                                     **extra)
        with self.strategy.scope():
            status = checkpoint.restore(latest)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise CheckpointError(f"cannot resume from {latest}: {e}") from e
        status.expect_partial()
        step = int(self.step.numpy())
        if int(self.g_optim.iterations.numpy()) == 0 and step > 0:
            self.log(f" [*] Fine-tuning from {latest} (weights only; fresh optimizer state)")
        else:
            self.log(f" [*] Resumed from {latest} at iteration {step} "
                     f"(epoch {step // self.config.iteration}, lr {learning_rate(self.config, step):g})")
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

    def save(self) -> str:
        """Write a checkpoint. TensorFlow writes the files under temporary names and updates
        the `checkpoint` state file last (atomically), so a crash or a failed write leaves
        the previous checkpoint the latest loadable one. With several workers, only the
        chief writes into checkpoint_dir; the others write a temporary copy and delete it."""
        if not self.is_chief:
            dist.write_to_temporary(self.checkpoint)
            return ""
        try:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            write_config(self.ckpt_dir, self.config)
            return self.manager.save(checkpoint_number=int(self.step.numpy()))
        except (OSError, tf.errors.OpError) as e:
            previous = self.manager.latest_checkpoint
            raise CheckpointError(
                f"cannot write a checkpoint to {self.ckpt_dir} "
                f"({getattr(e, 'message', None) or e}); the previous checkpoint "
                f"{previous or '(none)'} is untouched. Free disk space or fix permissions, then "
                f"rerun the same command to resume.") from e

    def train(self, max_iterations: int | None = None, progress: bool = True) -> dict:
        """Train until epoch * iteration iterations are done (or `max_iterations` more).
        Returns the last losses (floats), a history of the G/D totals and the seconds each
        iteration took (D and G steps, losses and summaries; not samples or checkpoints)."""
        from ugatit_tf.common.progress import ProgressBar

        cfg = self.config
        start = self.restore_or_start()
        end = self.total_iterations if max_iterations is None else \
            min(self.total_iterations, start + max_iterations)
        sample_dir = os.path.join(cfg.sample_dir, cfg.model_dir)
        if self.is_chief:
            try:
                os.makedirs(self.ckpt_dir, exist_ok=True)
                write_config(self.ckpt_dir, cfg)
            except OSError as e:
                raise CheckpointError(f"cannot write to the checkpoint folder {self.ckpt_dir} "
                                      f"({e.strerror or e}): check --checkpoint_dir") from e
            # unwritable output folders fail now, with the flag to fix, not after hours
            log_dir = data_lib.ensure_output_folder(os.path.join(cfg.log_dir, cfg.model_dir),
                                                    "--log_dir")
            sample_dir = data_lib.ensure_output_folder(sample_dir, "--sample_dir")
            self.writer = tf.summary.create_file_writer(log_dir)
        else:
            self.writer = tf.summary.create_noop_writer()
        self._summary_fn = None
        bar = ProgressBar(end - start, label="train", enabled=progress and self.is_chief)
        history = {"Generator_loss": [], "Discriminator_loss": [], "step": [], "losses": []}
        self.iteration_seconds = []
        last = {}
        t0 = time.monotonic()
        stop = _StopRequest()
        with stop:
            done = self._loop(start, end, bar, history, last, t0, sample_dir, stop)
        if stop.signal is not None and done < end:
            self.log(f" [*] {stop.signal}: checkpoint saved at iteration {done}; rerun the same "
                     f"command to resume")
        if self.writer is not None:
            self.writer.flush()
        return {"last": last, "history": history, "start": start, "end": done,
                "interrupted": stop.signal, "seconds": list(self.iteration_seconds)}

    def run_iteration(self, it: int) -> tuple[dict, object, object]:
        """One training iteration (0-based `it`): a D update, then (every n_critic) a G
        update, each on its own batches as in the original. Returns (losses as floats, the
        last A batch, the last B batch)."""
        cfg = self.config
        lr = tf.constant(learning_rate(cfg, it), tf.float32)
        A, B = next(self.iter_A), next(self.iter_B)
        d_out = self.d_step(A, B, lr)
        g_out = None
        if it % cfg.n_critic == 0:
            if cfg.variant == "tf1":  # the TF1 graph pulls a new batch for the G update
                A, B = next(self.iter_A), next(self.iter_B)
            g_out = self.g_step(A, B, lr)
        self.step.assign(it + 1)
        values = {k: float(v) for k, v in d_out.items()}
        if g_out is not None:
            values.update({k: float(v) for k, v in g_out.items()})
        values["lr"] = float(lr)
        return values, A, B

    def _loop(self, start, end, bar, history, last, t0, sample_dir, stop) -> int:
        cfg = self.config
        done = start
        g_values = {}  # the last G update's losses (n_critic > 1: not every iteration)
        for it in range(start, end):
            tick = time.perf_counter()
            values, A, B = self.run_iteration(it)
            lr = values.pop("lr")
            g_values.update({k: v for k, v in values.items() if k.startswith("G")})
            last.clear()
            last.update({k: v for k, v in values.items() if not k.startswith("G")})
            last.update(g_values)
            last["lr"] = lr
            history["step"].append(it + 1)
            history["Discriminator_loss"].append(last["Discriminator_loss"])
            history["Generator_loss"].append(last.get("Generator_loss", float("nan")))
            history["losses"].append(dict(last))
            self._write_scalars(last, it + 1)
            self.iteration_seconds.append(time.perf_counter() - tick)
            done = it + 1
            if self.is_chief and (done % cfg.print_freq == 0 or done == end):
                try:  # a sample sheet is not worth the iterations since the last checkpoint
                    self.write_samples(A, B, sample_dir, done)
                except OSError as e:
                    self.log(f" [!] cannot write the samples of iteration {done} to "
                             f"{sample_dir} ({e}); training goes on")
            if done % cfg.save_freq == 0 or done % cfg.iteration == 0 or done == end:
                self.save()
            if self.is_chief and cfg.eval_freq and done % cfg.eval_freq == 0:
                from ugatit_tf.evaluate.run import evaluate_during_training
                evaluate_during_training(self.nets, cfg, done, self.writer, self.eval_cache,
                                         log=self.log)
            rate = (done - start) / max(time.monotonic() - t0, 1e-9)
            bar.update(1, note=f"it {done} d {last['Discriminator_loss']:.3f} "
                               f"g {last.get('Generator_loss', float('nan')):.3f} "
                               f"{rate:.2f} it/s")
            if stop.signal is not None:
                if self.manager.latest_checkpoint != os.path.join(self.ckpt_dir, f"ckpt-{done}"):
                    self.save()
                break
        return done

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

    def write_samples(self, A, B, folder: str, step: int) -> str:
        sheet = sample_sheet(self.nets, A.numpy(), B.numpy())
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"sample_{step:07d}.png")
        save_png(path, sheet)
        with self.writer.as_default(step=step):
            tf.summary.image("samples", sheet[None], step=step)
        return path


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------

def save_png(path: str, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image atomically (temp file + rename)."""
    import cv2
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    if not cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def overlay(rgb_uint8: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    from ugatit_tf.infer.faces import heatmap_overlay
    return heatmap_overlay(rgb_uint8, heatmap, alpha=0.5)


def sample_sheet(nets: Networks, real_A: np.ndarray, real_B: np.ndarray) -> np.ndarray:
    """Rows per sample: A | A->B | attention | A->B->A || B | B->A | attention | B->A->B."""
    x_ab, _, heat_ab = nets.genA2B(real_A)
    x_aba = nets.genB2A(x_ab)[0]
    x_ba, _, heat_ba = nets.genB2A(real_B)
    x_bab = nets.genA2B(x_ba)[0]
    rows = []
    for i in range(real_A.shape[0]):
        a = data_lib.to_uint8(real_A[i])
        b = data_lib.to_uint8(real_B[i])
        row = [a, data_lib.to_uint8(x_ab[i]), overlay(a, heat_ab[i].numpy()),
               data_lib.to_uint8(x_aba[i]),
               b, data_lib.to_uint8(x_ba[i]), overlay(b, heat_ba[i].numpy()),
               data_lib.to_uint8(x_bab[i])]
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


# ---------------------------------------------------------------------------
# Test phase
# ---------------------------------------------------------------------------

def run_test(config: Config, log=print, progress: bool = True) -> str:
    """Translate testA -> B and testB -> A with the latest checkpoint into
    result_dir/model_dir, with an index.html (name, input, output, attention). Returns the
    index path."""
    from ugatit_tf.common.progress import ProgressBar

    config.validate()
    files = data_lib.domain_files(config, ("testA", "testB"))
    out_dir = data_lib.ensure_output_folder(os.path.join(config.result_dir, config.model_dir),
                                            "--result_dir")
    nets, prefix = load_networks(config)
    log(f" [*] Loaded {prefix}")
    translate = {"A2B": tf.function(lambda x: nets.genA2B(x)),
                 "B2A": tf.function(lambda x: nets.genB2A(x))}
    size = config.img_size
    rows = []
    bar = ProgressBar(len(files["testA"]) + len(files["testB"]), label="test",
                      enabled=progress)
    for direction, domain in (("A2B", "testA"), ("B2A", "testB")):
        folder = os.path.join(out_dir, direction)
        os.makedirs(folder, exist_ok=True)
        for path in files[domain]:
            stem = os.path.splitext(os.path.basename(path))[0]
            try:
                rgb = data_lib.load_rgb(path)
            except data_lib.DataError as e:
                log(f" [!] skipped: {e}")
                bar.update(1)
                continue
            x = data_lib.to_model_input(rgb, size)[None]
            image, _, heatmap = translate[direction](tf.constant(x))
            output = data_lib.to_uint8(image[0].numpy())
            out_path = os.path.join(folder, stem + ".png")
            heat_path = os.path.join(folder, stem + "_attention.png")
            shown_input = data_lib.to_uint8(x[0])
            try:
                save_png(out_path, output)
                save_png(heat_path, overlay(shown_input, heatmap[0].numpy()))
            except OSError as e:
                raise data_lib.OutputError(f"cannot write results to {folder} ({e}): check "
                                           f"--result_dir and the free disk space") from e
            rows.append((direction, os.path.basename(path), path, out_path, heat_path))
            bar.update(1)
    index = os.path.join(out_dir, "index.html")
    write_index(index, rows, size)
    log(f" [*] Test finished: {len(rows)} images, {index}")
    return index


def write_index(index_path: str, rows, size: int) -> None:
    base = os.path.dirname(os.path.abspath(index_path))

    def src(p):
        return html.escape(os.path.relpath(os.path.abspath(p), base))

    lines = ["<html><head><meta charset='utf-8'><title>U-GAT-IT results</title></head><body>",
             "<table border='1'><tr><th>direction</th><th>name</th><th>input</th>"
             "<th>output</th><th>attention</th></tr>"]
    for direction, name, inp, out, heat in rows:
        lines.append(
            f"<tr><td>{direction}</td><td>{html.escape(name)}</td>"
            f"<td><img src='{src(inp)}' width='{size}' height='{size}'></td>"
            f"<td><img src='{src(out)}' width='{size}' height='{size}'></td>"
            f"<td><img src='{src(heat)}' width='{size}' height='{size}'></td></tr>")
    lines.append("</table></body></html>")
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, index_path)
