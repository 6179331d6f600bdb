"""A linear probe: multinomial logistic regression on fixed features, written by hand.

How much of the label can a straight line read off a code?  Fit
``softmax(features @ W + b)`` to the labels of the training set's codes, then
read the accuracy on the test set's.  The features are standardised with the
training set's mean and standard deviation; the loss is the mean softmax
cross-entropy plus a small L2 penalty on ``W``, minimised by minibatch Adam
from zero weights.  The loss is convex, so zero is as good a start as any,
and the fit is deterministic given its seed.  The loss and its gradient are
derived in ``docs/backprop.md#softmax-cross-entropy``.

>>> import numpy as np
>>> x = np.array([[0.0], [1.0], [4.0], [5.0]])
>>> probe = LinearProbe(n_features=1, n_classes=2).fit(x, np.array([0, 0, 1, 1]), seed=0)
>>> probe.accuracy(x, np.array([0, 0, 1, 1]))
1.0
"""

from __future__ import annotations

import numpy as np

from npvae.errors import ConfigError
from npvae.optim import Adam


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``logits (N, C) -> log-probabilities (N, C)``; each row's ``exp`` sums to 1.

    The row's maximum is subtracted first, so ``exp`` never overflows.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, C), each row's max is 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class LinearProbe:
    """Softmax regression from ``n_features`` features to ``n_classes`` classes, in float64.

    ``params`` and ``grads`` are dicts with the same keys: ``"W" (D, C)`` and
    ``"b" (C,)``.  ``mean`` and ``std`` ``(D,)`` standardise every input;
    :meth:`fit` sets them from the training set (a constant feature keeps a
    std of 1: it is only centred).  ``l2`` weighs the penalty
    ``0.5 * l2 * sum(W**2)``; the bias is not penalised.
    """

    def __init__(self, n_features: int, n_classes: int, l2: float = 1e-4):
        if n_features < 1 or n_classes < 2:
            raise ConfigError(
                f"a probe needs 1 or more features and 2 or more classes, "
                f"got {n_features} and {n_classes}"
            )
        self.l2 = float(l2)
        self.params = {"W": np.zeros((n_features, n_classes)), "b": np.zeros(n_classes)}
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.mean = np.zeros(n_features)
        self.std = np.ones(n_features)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``x (N, D)`` of any numeric dtype -> ``(N, D)`` float64, centred and scaled."""
        return (x - self.mean) / self.std

    def loss(self, x: np.ndarray, labels: np.ndarray, grad: bool = True) -> float:
        """Mean cross-entropy of ``labels (N,)`` given ``x (N, D)``, plus the L2 penalty.

        With ``grad``, writes dloss/dW ``(D, C)`` and dloss/db ``(C,)`` into
        ``grads`` (``docs/backprop.md#softmax-cross-entropy``).
        """
        W, b = self.params["W"], self.params["b"]
        n = len(x)
        features = self.standardise(x)  # (N, D)
        log_probs = log_softmax(features @ W + b)  # (N, C)
        rows = np.arange(n)
        loss = -log_probs[rows, labels].mean() + 0.5 * self.l2 * np.sum(W * W)
        if grad:
            dlogits = np.exp(log_probs)  # (N, C): the softmax
            dlogits[rows, labels] -= 1.0  # minus the one-hot labels
            dlogits /= n
            self.grads["W"][...] = features.T @ dlogits + self.l2 * W  # (D, C)
            self.grads["b"][...] = dlogits.sum(axis=0)  # (C,)
        return float(loss)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``x (N, D) -> (N, C)``: each class's probability; each row sums to 1."""
        return np.exp(log_softmax(self.standardise(x) @ self.params["W"] + self.params["b"]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x (N, D) -> (N,)`` int64: the most probable class of each row."""
        return np.argmax(self.standardise(x) @ self.params["W"] + self.params["b"], axis=1)

    def cross_entropy(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Mean ``-log p(label | x)`` over the rows of ``x (N, D)``, in nats: no penalty."""
        log_probs = log_softmax(self.standardise(x) @ self.params["W"] + self.params["b"])
        return float(-log_probs[np.arange(len(x)), labels].mean())

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        """The fraction of rows of ``x (N, D)`` whose predicted class is ``labels (N,)``."""
        return float(np.mean(self.predict(x) == labels))

    def fit(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        *,
        steps: int = 2_000,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> LinearProbe:
        """Fit to ``x (N, D)`` and integer ``labels (N,)`` by minibatch Adam; returns self.

        Standardises with ``x``'s own mean and std, then takes ``steps`` steps
        on batches of ``batch_size`` rows, each pass over ``x`` in an order drawn
        from ``seed``.  A step count, not a pass count, so that 256 images are
        fitted as fully as 60,000.  ``x`` may be uint8 pixels: each batch is cast
        as it is standardised, so no float copy of ``x`` is made.
        """
        n_features, n_classes = self.params["W"].shape
        labels = np.asarray(labels)
        if x.ndim != 2 or x.shape[1] != n_features or labels.shape != (len(x),) or len(x) == 0:
            raise ConfigError(
                f"a probe of {n_features} features needs x (N, {n_features}) and labels (N,) "
                f"with N >= 1, got {x.shape} and {labels.shape}"
            )
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ConfigError(f"labels must be in 0..{n_classes - 1}, got {labels.max()}")
        self.mean, self.std = column_moments(x)
        self.std[self.std == 0] = 1.0
        adam = Adam(self.params, lr=lr)
        rng = np.random.default_rng(seed)
        while adam.step_count < steps:
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                if adam.step_count == steps:
                    break
                rows = order[start : start + batch_size]
                self.loss(x[rows], labels[rows])
                adam.step(self.grads)
        return self


def column_moments(x: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation, ``(D,)`` float64 each, of ``x (N, D)``.

    Two passes, ``rows`` rows at a time, so that 60,000 uint8 images need no
    float64 copy (``x.std(axis=0)`` would make one, 376 MB for MNIST).
    """
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), rows):
        total += x[start : start + rows].sum(axis=0, dtype=np.float64)
    mean = total / len(x)
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), rows):
        squares += np.sum((x[start : start + rows] - mean) ** 2, axis=0)
    return mean, np.sqrt(squares / len(x))
