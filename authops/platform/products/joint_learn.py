"""The arithmetic of joint modelling, in numpy only: a holdout split, logistic regression, metrics.

* `split(keys, y, salt)`: a deterministic stratified holdout. Within each class the subjects are
  ordered by a keyed hash (HMAC-SHA256 of the subject digest under `salt`) and the first
  HOLDOUT_SHARE of them form the holdout, so the same labels always split the same way and nobody
  without the salt can steer a subject into either side.
* `fit(X, y)`: L2-regularised logistic regression by Newton's method (IRLS) on standardised
  features; a constant feature gets weight 0. `predict(model, X)` gives P(label = 1).
* `evaluate(risk_train, y_train, risk_hold, y_hold)`: AUC, KS and the accuracy on the holdout at
  a cut chosen on the training side (flag as many subjects as the training set has positives),
  rounded to RESULT_DIGITS decimals. Higher risk = more likely label 1; a credit score (higher =
  better) enters as its negative.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np

HOLDOUT_SHARE = 0.3
RESULT_DIGITS = 3
RIDGE = 1e-2
MAX_ITER = 50


@dataclass(frozen=True)
class Model:
    """A fitted logistic regression: P(1) = sigmoid(intercept + sum(weights * (x - mean) / scale))."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float

    def to_json(self) -> dict:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "intercept": self.intercept}

    @classmethod
    def from_json(cls, d: dict) -> Model:
        return cls(features=tuple(d["features"]), mean=np.asarray(d["mean"], dtype=float),
                   scale=np.asarray(d["scale"], dtype=float), weights=np.asarray(d["weights"], dtype=float),
                   intercept=float(d["intercept"]))


def split(keys: list[bytes], y: np.ndarray, salt: bytes) -> np.ndarray:
    """A boolean mask of the holdout: HOLDOUT_SHARE of each class, by keyed hash order."""
    hashes = np.array([hmac.new(salt, k, hashlib.sha256).hexdigest() for k in keys])
    hold = np.zeros(len(keys), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        ordered = idx[np.argsort(hashes[idx], kind="stable")]
        hold[ordered[:int(round(len(idx) * HOLDOUT_SHARE))]] = True
    return hold


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit(X: np.ndarray, y: np.ndarray, features: tuple[str, ...], ridge: float = RIDGE) -> Model:
    """Newton-Raphson (IRLS) for the penalised log-likelihood; the intercept is not penalised."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = np.column_stack([np.ones(len(X)), (X - mean) / scale])
    beta = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], ridge * len(X))
    penalty[0] = 0.0
    for _ in range(MAX_ITER):
        p = _sigmoid(Z @ beta)
        grad = Z.T @ (y - p) - penalty * beta
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty) + 1e-9 * np.eye(Z.shape[1])
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return Model(features=features, mean=mean, scale=scale, weights=beta[1:], intercept=float(beta[0]))


def predict(model: Model, X: np.ndarray) -> np.ndarray:
    return _sigmoid(model.intercept + ((X - model.mean) / model.scale) @ model.weights)


def auc(risk: np.ndarray, y: np.ndarray) -> float:
    """The probability that a random positive outranks a random negative (ties count half)."""
    order = np.argsort(risk, kind="stable")
    ranks = np.empty(len(risk))
    sorted_risk = risk[order]
    i = 0
    while i < len(risk):  # average ranks over ties
        j = i
        while j + 1 < len(risk) and sorted_risk[j + 1] == sorted_risk[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ks(risk: np.ndarray, y: np.ndarray) -> float:
    """The largest gap between the cumulative shares of positives and negatives over risk cuts."""
    cuts = np.unique(risk)
    pos, neg = risk[y == 1], risk[y == 0]
    tpr = np.array([(pos >= c).mean() for c in cuts])
    fpr = np.array([(neg >= c).mean() for c in cuts])
    return float(np.max(np.abs(tpr - fpr)))


def cut(risk_train: np.ndarray, y_train: np.ndarray) -> float:
    """The risk at or above which as many training subjects are flagged as the training set has positives."""
    k = max(int(y_train.sum()), 1)
    return float(np.sort(risk_train)[::-1][k - 1])


def evaluate(risk_train: np.ndarray, y_train: np.ndarray, risk_hold: np.ndarray, y_hold: np.ndarray
             ) -> dict[str, float | int]:
    threshold = cut(risk_train, y_train)
    flagged = risk_hold >= threshold
    return {"auc": round(auc(risk_hold, y_hold), RESULT_DIGITS), "ks": round(ks(risk_hold, y_hold), RESULT_DIGITS),
            "accuracy": round(float((flagged == (y_hold == 1)).mean()), RESULT_DIGITS),
            "flagged_share": round(float(flagged.mean()), RESULT_DIGITS), "holdout": int(len(y_hold))}
