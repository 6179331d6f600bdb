"""npvae: autoencoders and variational autoencoders from scratch in NumPy.

Every backward pass is written by hand, the hot loops are compiled with numba
(``npvae._jit``), and every gradient is proven against finite differences
(``npvae.gradcheck``).  See ``README.md`` for a tour.
"""

__version__ = "0.1.0"
