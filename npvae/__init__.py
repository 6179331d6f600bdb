"""npvae: autoencoders and variational autoencoders from scratch in NumPy.

Every backward pass is written by hand, the hot loops are compiled with numba
(``npvae._jit``), and every gradient is proven against finite differences
(``npvae.gradcheck``).  See ``README.md`` for a tour.

Importing npvae changes no thread setting; :func:`threads` gives the matrix
products the number of threads the command lines' ``--threads`` would
(``npvae.threads("auto")``), for the process or, in a ``with`` block, for the block.
"""

from npvae.app._threads import threads

__version__ = "0.1.0"
__all__ = ["__version__", "threads"]
