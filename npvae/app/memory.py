"""Will it fit?  The peak memory of a training step and of an evaluation, refused if too large.

The arrays of one step grow with the rows it pushes through the decoder: batch x k for
the IWAEs, batch x L for a VAE with L samples.  ``--k 100000`` asks for hundreds of GiB,
which the OOM killer would end with no word; :func:`check_training` and
:func:`check_evaluation` refuse such a run first, naming the figure and the flag to change.

What is counted, in the model's dtype (the shapes are in each model's ``loss``):

* per example row (``N``): the batch buffers, the encoder's cached outputs,
  ``mu``, ``log_var``, the KL terms and their gradients;
* per draw row (``N x k``): the noise, ``z`` and the rows of ``log_var``, every activation the
  decoder (and the two-layer model's q(z2|z1) and p(z1|z2) networks) caches for backward, its
  output and ``dout``, the gradients of the latents, the per-row terms of the bound; plus the
  widest temporaries of the backward pass (two hidden layers' worth, three for activations
  whose backward makes more) or of a Gaussian likelihood (three ``(rows, D)`` arrays);
* parameters, their gradients, the optimizer's buffers and a checkpoint's copies.

The per-epoch test loss (``evaluate_loss``: 1000 images at a time, each with the model's own
k or L draws, no gradients) is often larger than the step itself; the importance sampler
streams at most :data:`npvae.app.report.CHUNK_ROWS` decoder rows whatever its k, so
``--ll-samples`` and ``evaluate --k`` cost time, not memory.

Against the peak of numpy's allocations (tracemalloc) over the model's making and its first
``loss`` + Adam step, each in a fresh process, float32, 784 pixels, MiB (the estimate also
counts the batch's buffers, 2 x 784 floats an image, made before the measurement)::

    config                                                  estimate  measured
    vae 784-400-20 relu, batch 128 (the default)                17.4      11.6
    iwae k=50, batch 100, 784-200-200-50 tanh                   64.6      54.8
    the same in float64                                        129.1     109.7
    iwae2 k=5, batch 20, 200,200-100 / 100,100-50 tanh          14.2       9.7
    iwae2 k=5, batch 1000, the same net                        126.2      93.9
    vae 784-400-20, batch 20000                                404.3     270.3
    vae L=5, batch 2000, Gaussian, learned variance, softplus  221.6     199.0
    iwae k=200, batch 100, 784-500-20 elu                      344.4     299.4
    ae 784-400-32, batch 5000                                  107.8      71.1
    denoising ae (salt-pepper), batch 5000                     137.4      86.0
    the test loss, 1000 images, the iwae k=50 net              305.7     257.3
    the test loss, 1000 images, iwae2 k=50                     650.0     563.1

The estimate is 1.1 to 1.6 times the measured peak, never below it (``tests/test_memory.py``
checks four of these).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npvae.app.build import model_recipe
from npvae.app.report import CHUNK_ROWS
from npvae.errors import ConfigError
from npvae.estimators import EVAL_ROWS
from npvae.validate import model_setting

#: A run may take this share of the memory available when it starts: the estimate is
#: of the arrays only, and the interpreter, BLAS's buffers, matplotlib's figures and
#: whatever else starts on the machine meanwhile need the rest.
SAFETY = 0.8

#: Images per batch of the test loss, at most (``npvae.estimators.evaluate_loss``,
#: which takes fewer when each image draws many samples: :data:`EVAL_ROWS` rows at most).
EVAL_BATCH = 1000
#: Images per batch of the importance sampler (``importance_sampled``'s default).
SAMPLER_BATCH = 100

GIB = 2**30
#: A cgroup limit at or above this is "no limit" (v1 writes 2**63 rounded to a page).
_NO_LIMIT = 2**60
#: Activations whose layer caches two arrays (softplus its input, leaky ReLU and ELU a mask).
_TWO_CACHES = ("softplus", "leaky-relu", "elu")
#: Activations whose backward makes three temporaries rather than one.
_WIDE_BACKWARD = ("sigmoid", "softplus", "leaky-relu", "elu")


# ----- the memory the machine has --------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _mem_available() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes; None where there is none."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's cgroup still allows, in bytes: its limit minus its use, by v2's
    ``memory.max`` and ``memory.current`` or v1's ``memory.limit_in_bytes`` and
    ``memory.usage_in_bytes``, at the root and at its own group; None if no limit is read."""
    groups = {"": "", "memory": ""}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            if controllers == "":
                groups[""] = group.strip("/")
            elif "memory" in controllers.split(","):
                groups["memory"] = group.strip("/")
    except (OSError, ValueError):
        pass
    candidates = []
    for v2 in {root / groups[""], root}:
        candidates.append((v2 / "memory.max", v2 / "memory.current"))
    for v1 in {root / "memory" / groups["memory"], root / "memory"}:
        candidates.append((v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes"))
    rooms = []
    for limit_path, usage_path in candidates:
        limit = _read_int(limit_path)  # "max" (v2's no limit) reads as None
        if limit is None or limit >= _NO_LIMIT:
            continue
        rooms.append(max(limit - (_read_int(usage_path) or 0), 0))
    return min(rooms) if rooms else None


def available_bytes() -> int | None:
    """The memory a new allocation can have, in bytes: the smaller of ``MemAvailable``
    and the cgroup's room; None when neither is known (then nothing is refused)."""
    known = [size for size in (_mem_available(), _cgroup_room()) if size is not None]
    return min(known) if known else None


# ----- the arrays of one pass ------------------------------------------------------------


def _mlp(sizes, activation: str, out_activation: str | None) -> tuple[int, int]:
    """``(held, temporaries)`` per row of an MLP of widths ``sizes``, in floats: what its
    forward caches (each layer's output, and a second array for the activations that keep
    one), and the widest moment of its backward (the gradient in and out, some a product)."""
    held, widest = 0, 0
    for index, width in enumerate(sizes[1:]):
        last = index == len(sizes) - 2
        act = out_activation if last else activation
        held += width * (2 if act in _TWO_CACHES else 1)
        if not last or out_activation is not None:
            widest = max(widest, width)
    return held, widest * (3 if activation in _WIDE_BACKWARD else 2)


@dataclass(frozen=True)
class Rows:
    """The floats one pass holds: ``per_example`` for each image, ``per_draw`` for each
    decoder row (image x sample), and ``temporary`` per draw at the backward's widest."""

    per_example: int
    per_draw: int
    temporary: int

    def nbytes(self, examples: int, draws: int, itemsize: int) -> int:
        rows = examples * draws
        return itemsize * (examples * self.per_example + rows * (self.per_draw + self.temporary))


def pass_rows(kind: str, settings: dict, grad: bool) -> Rows:
    """The arrays of one ``model.loss(x, grad=grad)`` of a model ``kind`` built from
    ``settings`` (its constructor's keywords), counted per row as :class:`Rows`."""
    dim = settings["input_dim"]
    act = settings["activation"]
    gaussian = model_setting(settings, "likelihood") != "bernoulli"
    likelihood_temps = 3 * dim if gaussian else 0  # residuals, their squares, a product
    if kind in ("vae", "iwae"):
        hidden, latent = settings["hidden"], settings["latent_dim"]
        encoder, _ = _mlp([dim, *hidden], act, act)
        decoder, decoder_temps = _mlp([latent, *hidden[::-1], dim], act, None)
        # mu, log_var, the KL per unit; eps, the rows of mu and log_var, z; the bound's terms
        per_example = encoder + 3 * latent
        per_draw = decoder + 4 * latent + 8
        if grad:
            # the batch's buffers (Batches: the floats, a dynamic draw's uniforms); the KL's
            # gradients, dmu, dlog_var; dout, dz, -z and its product, dmu and dlog_var's rows
            per_example += 2 * dim + 6 * latent
            per_draw += dim + 5 * latent
        # The encoder's backward comes after the decoder's: its temporaries (and dh) take
        # the room the decoder's have left, so only the larger counts.
        temporary = max(decoder_temps, likelihood_temps) if grad else max(hidden)
        return Rows(per_example, per_draw, temporary)
    if kind == "iwae2":
        hidden1, hidden2 = settings["hidden1"], settings["hidden2"]
        d1, d2 = settings["latent1"], settings["latent2"]
        encoder1, _ = _mlp([dim, *hidden1], act, act)  # its backward: after the rest's
        encoder2, encoder2_temps = _mlp([d1, *hidden2], act, act)
        prior, prior_temps = _mlp([d2, *hidden2[::-1]], act, None)
        decoder, decoder_temps = _mlp([d1, *hidden1[::-1], dim], act, None)
        per_example = encoder1 + 2 * d1
        # eps (both parts, and copies), log_var1's rows, z1, mu2, log_var2, z2, p(z1|z2)'s
        # two heads, the KL per unit and its temporaries, the per-row terms
        per_draw = encoder2 + prior + decoder + 12 * d1 + 8 * d2 + 12
        if grad:
            per_example += 2 * dim + 4 * d1  # the batch's buffers; dmu1, dlog_var1
            # dout; p(z1|z2)'s gradients, dz1, dmu1, dlog_var1; dz2, dmu2, dlog_var2 and a
            # product; dg and dh2 (two)
            per_draw += dim + 6 * d1 + 4 * d2 + hidden2[0] + 2 * hidden2[-1]
            temporary = max(decoder_temps, encoder2_temps, prior_temps, likelihood_temps)
        else:
            temporary = max(*hidden1, *hidden2)
        return Rows(per_example, per_draw, temporary)
    # the autoencoders: one row per image, no draws
    hidden, code = settings["hidden"], settings["code_dim"]
    encoder, encoder_temps = _mlp([dim, *hidden, code], act, settings.get("code_activation"))
    decoder, decoder_temps = _mlp([code, *hidden[::-1], dim], act, None)
    denoising = "noise" in settings
    squared = settings.get("reconstruction") == "squared"
    # a denoising AE's corrupted copy; the code's and the output's terms
    per_row = encoder + decoder + (dim if denoising else 0) + 4 * code + 4
    temporary = max(dim, code)
    if grad:
        # the batch's buffers; dout (and the residual); the penalty's gradients
        per_row += 2 * dim + dim + (dim if squared else 0) + 2 * code
        # the corruption's draws and masks come and go before the backward's temporaries
        temporary = max(encoder_temps, decoder_temps, 2 * dim if denoising else 0)
    return Rows(0, per_row, temporary)


def draws_per_image(kind: str, settings: dict) -> int:
    """Decoder rows per image in ``loss``: k for the IWAEs, L for a VAE, 1 for an AE."""
    if kind in ("iwae", "iwae2"):
        return int(settings["k"])
    return int(settings.get("n_samples", 1))


def parameter_bytes(cls, settings: dict, optimizer_buffers: int) -> int:
    """Parameters and gradients, ``optimizer_buffers`` arrays like them (Adam: 2), and a
    checkpoint's copies of those buffers, in bytes."""
    count = cls.parameter_count(settings)
    return count * np.dtype(settings["dtype"]).itemsize * (2 + 2 * optimizer_buffers)


# ----- the estimates, and the refusal ----------------------------------------------------


@dataclass(frozen=True)
class Need:
    """One phase's peak: ``nbytes``, and the words of the line that refuses it."""

    nbytes: int
    what: str  # "one training step needs"
    rows: str  # "batch 128 x k 100000 rows through the decoder"
    flags: str  # "lower --k or --batch-size"


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def _draw_words(kind: str, settings: dict) -> tuple[str, str]:
    """``("x k 100000", "--k")``: the draws per image, and the flag that sets them."""
    if kind in ("iwae", "iwae2"):
        return f" x k {settings['k']}", "--k"
    if settings.get("n_samples", 1) > 1:
        return f" x samples {settings['n_samples']}", "--samples"
    return "", ""


def training_needs(config, n_train: int, n_eval: int, input_dim: int) -> list[Need]:
    """The peaks of a training run of ``config``: its step, its test loss after each epoch
    and its final log-likelihood, each a :class:`Need` in bytes.  ``n_train`` training
    images, ``n_eval`` in the larger of the validation and test sets, ``input_dim`` = D."""
    cls, settings = model_recipe(config, input_dim)
    kind, itemsize = cls.kind, np.dtype(config.dtype).itemsize
    buffers = {"adam": 2, "sgd": 0}.get(config.optimizer, 1)
    fixed = parameter_bytes(cls, settings, buffers)
    # the validation and test images as floats of the model's dtype, and a static
    # binarisation's copy of the training images (uint8)
    fixed += n_eval * 2 * input_dim * itemsize + n_train * input_dim
    draws = draws_per_image(kind, settings)
    draw_words, draw_flag = _draw_words(kind, settings)
    batch = min(config.batch_size, n_train)
    step = pass_rows(kind, settings, grad=True).nbytes(batch, draws, itemsize)
    params_flag = "--hidden or --latent"
    if fixed > step:
        step_flags = f"reduce {params_flag}"
        step_rows = f"{cls.parameter_count(settings):,} parameters and their optimizer state"
    else:
        step_flags = f"lower {draw_flag + ' or ' if draw_flag else ''}--batch-size"
        step_rows = f"batch {batch}{draw_words} rows through the decoder"
    needs = [Need(fixed + step, "one training step needs", step_rows, step_flags)]
    if fixed > SAFETY * (available_bytes() or fixed):  # the parameters alone: name them
        count = f"{cls.parameter_count(settings):,} parameters and their optimizer state"
        needs = [Need(fixed, "the model needs", count, f"reduce {params_flag}")]
    images = _loss_images(draws, n_eval)
    if images:
        loss = pass_rows(kind, settings, grad=False).nbytes(images, draws, itemsize)
        needs.append(
            Need(
                fixed + loss,
                "the test loss after each epoch needs",
                f"{images} images{draw_words} rows through the decoder at once",
                f"lower {draw_flag or '--hidden'}",
            )
        )
        if kind in ("vae", "iwae", "iwae2") and config.ll_samples:
            rows = _sampler_rows(config.ll_samples, images)
            sampled = pass_rows(kind, settings, grad=False).nbytes(rows, 1, itemsize)
            needs.append(
                Need(
                    fixed + sampled,
                    "the log-likelihood at the end needs",
                    f"{rows} rows through the decoder at once",
                    "lower --ll-samples",
                )
            )
    return needs


def _loss_images(draws: int, n: int) -> int:
    """Images in one batch of the test loss, as ``evaluate_loss`` takes them (of ``n``)."""
    return min(n, max(1, min(EVAL_BATCH, EVAL_ROWS // draws)))


def _sampler_rows(k: int, images: int) -> int:
    """Decoder rows in one chunk of the importance sampler (``importance_sampled``)."""
    batch = min(SAMPLER_BATCH, images)
    return max(1, min(k, CHUNK_ROWS // batch)) * batch


def evaluation_needs(model, n_test: int, k: int, workers: int = 1) -> list[Need]:
    """The peaks of ``python -m npvae.evaluate`` of ``model`` on ``n_test`` images with ``k``
    importance samples: its test loss (the model's own k or L draws, 1000 images at a time)
    and a chunk of the importance sampler in each of ``workers`` threads; the images and the
    model are in memory already."""
    kind, settings = model.kind, model.config
    itemsize = model.dtype.itemsize
    draws = draws_per_image(kind, settings)
    draw_words, _ = _draw_words(kind, settings)
    images = _loss_images(draws, n_test)
    loss_rows = pass_rows(kind, settings, grad=False)
    needs = []
    if images:
        flags = "evaluate fewer images with --n-test"
        if loss_rows.nbytes(1, draws, itemsize) > loss_rows.nbytes(images, draws, itemsize) / 2:
            # one image at a time is too much: the model's own k is the cause
            flags = f"this model's {draw_words.split()[1]} is too large to evaluate here"
        needs.append(
            Need(
                loss_rows.nbytes(images, draws, itemsize),
                "evaluating needs",
                f"{images} test image{'s' if images != 1 else ''}{draw_words} rows through "
                "the decoder at once",
                flags,
            )
        )
        if k and hasattr(model, "log_importance_weights"):
            rows = _sampler_rows(k, images)
            at_once = f"{rows} rows through the decoder at once"
            if workers > 1:
                at_once = f"{workers} threads with {rows} rows each through the decoder at once"
            needs.append(
                Need(
                    workers * loss_rows.nbytes(rows, 1, itemsize),
                    "the importance sampler needs",
                    at_once,
                    "lower --k" if workers == 1 else "lower --k or --threads",
                )
            )
    return needs


def refuse(needs: list[Need], available: int | None = None) -> None:
    """Raise a ConfigError naming the first of ``needs`` (in the order a run meets them, so
    the setting to change first) above ``SAFETY`` x ``available`` bytes (default:
    :func:`available_bytes`, read now; unknown, nothing is refused)."""
    if available is None:
        available = available_bytes()
    if available is None or not needs:
        return
    over = [need for need in needs if need.nbytes > SAFETY * available]
    if not over:
        return
    largest = over[0]
    raise ConfigError(
        f"{largest.what} about {_gib(largest.nbytes)} ({largest.rows}) and {_gib(available)} "
        f"is available, of which a run may take {SAFETY:.0%}; {largest.flags}"
    )


def check_training(config, data) -> None:
    """Refuse (ConfigError) a training run of ``config`` on ``data`` that would not fit."""
    n_eval = max(len(data.x_val), len(data.x_test))
    needs = training_needs(config, len(data.x_train), n_eval, data.x_train.shape[1])
    refuse(needs)


def check_evaluation(model, n_test: int, k: int, workers: int = 1) -> None:
    """Refuse (ConfigError) an evaluation of ``model`` in ``workers`` threads that would not fit."""
    refuse(evaluation_needs(model, n_test, k, workers))
