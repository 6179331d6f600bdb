"""``python -m npvae.figures``: the figures of a saved run, and the three latent spaces compared.

* ``__main__.py``: the command line (one subcommand per figure), nothing else;
* :mod:`npvae.figures.saved`: a saved run and its test images, and one
  drawing function per subcommand (the figures themselves are
  :mod:`npvae.app.plots`', shared with ``python -m npvae.train``);
* :mod:`npvae.figures.stochastic`: one image encoded many times;
* :mod:`npvae.figures.compare`: three VAEs with a 2-d latent space, trained
  on reconstruction only, on KL only and on both, drawn side by side.
"""
