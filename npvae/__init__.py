"""npvae: autoencoders and variational autoencoders from scratch in NumPy.

Every backward pass is written by hand, the hot loops are compiled with numba
(``npvae._jit``), and every gradient is proven against finite differences
(``npvae.gradcheck``).  See ``README.md`` for a tour.
"""

from npvae._memory import keep_freed_memory

__version__ = "0.1.0"

# Once per process, on the first import of anything in npvae: keep a training step's
# freed memory for the next one instead of faulting it back in (npvae/_memory.py).
keep_freed_memory()
