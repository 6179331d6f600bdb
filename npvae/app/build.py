"""The model, optimizer and learning-rate schedule a :class:`~npvae.app.config.Config` asks for.

The one place that turns the CLI's settings into objects, shared by a new run
and a resumed one (which also uses :func:`model_recipe` to check that a
checkpoint's model is the one its settings describe, without building it).
"""

from __future__ import annotations

from npvae.app.config import Config
from npvae.models import (
    IWAE,
    IWAE2,
    VAE,
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)
from npvae.optim import Optimizer, make_optimizer
from npvae.schedules import Schedule, make_schedule


def build_model(config: Config, input_dim: int):
    """The model ``config`` asks for, for ``input_dim`` pixels."""
    cls, settings = model_recipe(config, input_dim)
    return cls(**settings)


def model_recipe(config: Config, input_dim: int) -> tuple[type, dict]:
    """``(model class, keyword arguments)`` of the model ``config`` asks for; nothing allocated."""
    common = {
        "input_dim": input_dim,
        "hidden": config.resolved_hidden(),
        "activation": config.resolved_activation(),
        "init": config.init,
        "dtype": config.dtype,
        "seed": config.seed,
    }
    vae_common = {
        **common,
        "latent_dim": config.latent,
        "likelihood": config.likelihood,
        "learned_var": config.learn_var,
        "init_log_var": 0.0,  # the library's default; no flag sets it
    }
    ae_common = {
        **common,
        "code_dim": config.latent,
        "reconstruction": "bernoulli" if config.likelihood == "bernoulli" else "squared",
    }
    if config.model == "vae":
        objective = {
            "beta": config.beta,
            "warmup_steps": config.warmup,
            "free_bits": config.free_bits,
            "n_samples": config.samples,
        }
        return VAE, {**vae_common, **objective}
    if config.model == "iwae":
        return IWAE, {**vae_common, "k": config.k}
    if config.model == "iwae2":
        layers = {
            "hidden1": vae_common.pop("hidden"),
            "latent1": vae_common.pop("latent_dim"),
            "hidden2": config.resolved_hidden2(),
            "latent2": config.latent2,
        }
        return IWAE2, {**vae_common, **layers, "k": config.k}
    if config.model == "ae":
        return Autoencoder, ae_common
    if config.model == "sparse-ae":
        return SparseAutoencoder, {
            **ae_common,
            "sparsity": config.sparsity,
            "sparsity_weight": config.sparsity_weight,
            "target": config.sparsity_target,
            "code_activation": "sigmoid" if config.sparsity == "kl" else "relu",
        }
    if config.model == "denoising-ae":
        return DenoisingAutoencoder, {
            **ae_common,
            "noise": config.noise,
            "noise_level": config.noise_level,
        }
    # The contractive AE's one layer is its code: the activation is the code's.
    return ContractiveAutoencoder, {
        **ae_common,
        "code_activation": config.resolved_activation(),
        "contraction": config.contraction,
    }


def optimizer_for(config: Config, params: dict, flat=None) -> Optimizer:
    """The optimizer of ``config`` over ``params`` (the model's live arrays).

    ``flat=(model.flat_params, model.flat_grads)`` lets ``step()`` update them all at once.
    """
    options = {"eps": config.adam_eps} if config.optimizer == "adam" else {}
    return make_optimizer(config.optimizer, params, config.lr, flat=flat, **options)


def schedule_for(config: Config) -> Schedule:
    """``schedule(epoch) -> lr`` of ``config``; epochs count from the run's start."""
    if config.schedule == "step":
        options = {"step_size": config.lr_step, "gamma": config.lr_gamma}
    elif config.schedule == "exponential":
        options = {"gamma": config.lr_gamma}
    elif config.schedule == "iwae-fit":
        options = {"epochs": config.epochs}
    else:
        options = {}
    return make_schedule(config.schedule, config.lr, **options)
