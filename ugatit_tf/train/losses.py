"""The original's losses (ops.py): adversarial losses for every gan_type, L1, the CAM loss and
the gradient penalties of wgan-gp, wgan-lp and dragan.

Adversarial losses take the list of logits of both discriminator heads ([local, global]) and
sum the per-head means, as the original does.
"""

from __future__ import annotations

import tensorflow as tf


def _bce(labels_like, logits, label):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.constant(label, logits.dtype)), logits=logits))


def discriminator_loss(gan_type: str, real: list, fake: list):
    total = 0.0
    for r, f in zip(real, fake):
        r, f = tf.cast(r, tf.float32), tf.cast(f, tf.float32)
        if gan_type.startswith("wgan"):
            loss = -tf.reduce_mean(r) + tf.reduce_mean(f)
        elif gan_type == "lsgan":
            loss = tf.reduce_mean(tf.square(r - 1.0)) + tf.reduce_mean(tf.square(f))
        elif gan_type in ("gan", "dragan"):
            loss = _bce(r, r, 1.0) + _bce(f, f, 0.0)
        elif gan_type == "hinge":
            loss = tf.reduce_mean(tf.nn.relu(1.0 - r)) + tf.reduce_mean(tf.nn.relu(1.0 + f))
        else:
            raise ValueError(f"unknown gan_type {gan_type!r}")
        total += loss
    return total


def generator_loss(gan_type: str, fake: list):
    total = 0.0
    for f in fake:
        f = tf.cast(f, tf.float32)
        if gan_type.startswith("wgan") or gan_type == "hinge":
            loss = -tf.reduce_mean(f)
        elif gan_type == "lsgan":
            loss = tf.reduce_mean(tf.square(f - 1.0))
        elif gan_type in ("gan", "dragan"):
            loss = _bce(f, f, 1.0)
        else:
            raise ValueError(f"unknown gan_type {gan_type!r}")
        total += loss
    return total


def l1_loss(x, y):
    return tf.reduce_mean(tf.abs(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)))


def cam_loss(source, non_source):
    """Generator CAM loss: the CAM of source-domain inputs -> 1, of target-domain inputs -> 0."""
    source = tf.cast(source, tf.float32)
    non_source = tf.cast(non_source, tf.float32)
    return _bce(source, source, 1.0) + _bce(non_source, non_source, 0.0)


def gradient_penalty(discriminator, real, fake, gan_type: str, ld: float,
                     rng: tf.random.Generator, kernels: str = "reference"):
    """wgan-gp / wgan-lp / dragan penalty on both the patch logits and the CAM logits of both
    heads (the original's gradient_panalty). Returns (GP, GP_CAM). `rng` is the trainer's
    checkpointed generator, so a resumed run draws the same numbers; `kernels` the
    discriminator's (--train_kernels)."""
    real = tf.cast(real, tf.float32)
    fake = tf.cast(fake, tf.float32)
    batch = tf.shape(real)[0]
    if gan_type == "dragan":
        eps = rng.uniform(tf.shape(real))
        _, var = tf.nn.moments(real, axes=[0, 1, 2, 3])
        fake = real + 0.5 * tf.sqrt(var) * eps
    alpha = rng.uniform(tf.stack([batch, 1, 1, 1]))
    interpolated = real + alpha * (fake - real)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(interpolated)
        # training=False: the spectral-norm u was already advanced once this step (the TF1
        # graph runs one power iteration per session step, shared by all its D calls)
        logits, cam_logits, _ = discriminator(interpolated, training=False, kernels=kernels)
        outputs = [tf.reduce_sum(tf.cast(o, tf.float32)) for o in logits + cam_logits]
    penalties = []
    for out in outputs:
        grad = tape.gradient(out, interpolated)
        norm = tf.norm(tf.reshape(grad, [batch, -1]), axis=1)
        if gan_type == "wgan-lp":
            penalties.append(ld * tf.reduce_mean(tf.square(tf.maximum(0.0, norm - 1.0))))
        else:
            penalties.append(ld * tf.reduce_mean(tf.square(norm - 1.0)))
    del tape
    return penalties[0] + penalties[1], penalties[2] + penalties[3]


def uses_gradient_penalty(gan_type: str) -> bool:
    return gan_type.startswith("wgan") or gan_type == "dragan"
