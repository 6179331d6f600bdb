"""The models: the autoencoder family, the VAE, the IWAE and its two-stochastic-layer form.

Every model has the same shape of API: build it from keyword arguments, call
``loss(x, rng)`` to get a dict of per-example metrics with ``self.grads``
filled, and use ``encode``, ``decode``, ``reconstruct``, ``save``, ``load``
(``sample`` and ``interpolate`` on the generative ones).

>>> import numpy as np
>>> from npvae.models import VAE
>>> vae = VAE(input_dim=6, hidden=[5], latent_dim=2, seed=0)
>>> report = vae.loss(np.zeros((3, 6), np.float32), np.random.default_rng(0))
>>> sorted(vae.grads) == sorted(vae.params)
True
"""

from npvae.models.autoencoders import (
    Autoencoder,
    ContractiveAutoencoder,
    DenoisingAutoencoder,
    SparseAutoencoder,
)
from npvae.models.base import REGISTRY, Model, load, rebuild
from npvae.models.hierarchical import IWAE2
from npvae.models.iwae import IWAE
from npvae.models.vae import VAE

__all__ = [
    "REGISTRY",
    "Autoencoder",
    "ContractiveAutoencoder",
    "DenoisingAutoencoder",
    "IWAE",
    "IWAE2",
    "Model",
    "SparseAutoencoder",
    "VAE",
    "load",
    "rebuild",
]
