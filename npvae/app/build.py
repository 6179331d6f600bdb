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
from npvae.validate import as_keyword, setting_of


def build_model(config: Config, input_dim: int):
    """The model ``config`` asks for, for ``input_dim`` pixels."""
    cls, settings = model_recipe(config, input_dim)
    return cls(**settings)


#: The keywords a run gives every model's constructor, in the model's words; the table
#: :data:`npvae.validate.MODEL_NAMES` names the setting each one takes its value from.
_SHARED = ("input_dim", "hidden", "activation", "init", "dtype", "seed")
_GENERATIVE = (*_SHARED, "latent_dim", "likelihood", "learned_var", "init_log_var")
_LAYERED = tuple(name for name in _GENERATIVE if name not in ("hidden", "latent_dim"))
_AUTOENCODER = (*_SHARED, "code_dim", "reconstruction")

#: Each model's class and the keywords a run gives its constructor.
RECIPES = {
    "vae": (VAE, (*_GENERATIVE, "beta", "warmup_steps", "free_bits", "n_samples")),
    "iwae": (IWAE, (*_GENERATIVE, "k")),
    "iwae2": (IWAE2, (*_LAYERED, "hidden1", "latent1", "hidden2", "latent2", "k", "objective")),
    "ae": (Autoencoder, _AUTOENCODER),
    "sparse-ae": (
        SparseAutoencoder,
        (*_AUTOENCODER, "sparsity", "sparsity_weight", "target", "code_activation"),
    ),
    "denoising-ae": (DenoisingAutoencoder, (*_AUTOENCODER, "noise", "noise_level")),
    "contractive-ae": (ContractiveAutoencoder, (*_AUTOENCODER, "code_activation", "contraction")),
}


def model_recipe(config: Config, input_dim: int) -> tuple[type, dict]:
    """``(model class, keyword arguments)`` of the model ``config`` asks for; nothing allocated."""
    cls, keywords = RECIPES[config.model]
    settings = {
        **vars(config),
        "input_dim": input_dim,
        "hidden": config.resolved_hidden(),
        "hidden2": config.resolved_hidden2(),
        "activation": config.resolved_activation(),
        "init_log_var": 0.0,  # the library's default; no flag sets it
        "code_activation": _code_activation(config),
    }
    return cls, {name: as_keyword(name, settings[setting_of(name)]) for name in keywords}


def _code_activation(config: Config) -> str:
    """The sparse AE's code follows its penalty; the contractive AE's one layer is its code."""
    if config.model == "sparse-ae":
        return "sigmoid" if config.sparsity == "kl" else "relu"
    return config.resolved_activation()


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
