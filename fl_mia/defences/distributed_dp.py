"""Distributed DP under SecAgg+: each hospital clips its update and adds its share of the noise.

Hospital-level DP-FedAvg (McMahan et al. ICLR 2018) with the noise split among the hospitals
instead of added by the server (as in Kairouz, Liu and Steinke, ICML 2021, without their
discrete noise): each of the n sampled hospitals clips its update to C and adds Gaussian
noise of std σ·C/√n, so that the secure sum — the only thing the server sees — carries noise
of std σ·C, exactly what central DP-FedAvg adds on a sum of sensitivity C. The server never
sees an update without noise, but no single hospital's share protects it alone: the
guarantee needs SecAgg+ and at least the n sampled hospitals' shares in the sum (a dropout
leaves less noise in the sum; the accounting here assumes every sampled hospital replies).

Every hospital weighs 1 in the average (uniform DP-FedAvg): weighting by scans would scale
both the sensitivity and the noise shares by each hospital's size.
"""

from __future__ import annotations

import math

import numpy as np


def noise_share_std(*, noise_multiplier: float, clipping_norm: float, sampled: int) -> float:
    """Std of one hospital's noise share: σ·C/√n, so that n shares sum to std σ·C."""
    if sampled < 1:
        raise ValueError(f"sampled hospitals must be at least 1, got {sampled}")
    return noise_multiplier * clipping_norm / math.sqrt(sampled)


def clipped_noisy_update(
    returned: list[np.ndarray], received: list[np.ndarray], *, clipping_norm: float, share_std: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """``received`` + (returned − received clipped to ``clipping_norm``) + N(0, share_std²).

    Clipping is Flower's FlatClip (what its ``fixedclipping_mod`` does, one L2 norm over every
    array), written out because Flower's divides by zero on an unchanged model. The noise comes
    from ``rng``, which the hospital seeds with its own secret so that the server cannot
    regenerate and subtract it.
    """
    base = [np.asarray(s, dtype=np.float64) for s in received]
    deltas = [np.asarray(r, dtype=np.float64) - s for r, s in zip(returned, base)]
    norm = float(np.sqrt(sum(float((d**2).sum()) for d in deltas)))
    scale = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    out = []
    for start, delta, original in zip(base, deltas, returned):
        value = start + scale * delta
        if np.issubdtype(np.asarray(original).dtype, np.floating):
            value = value + rng.normal(0.0, share_std, size=value.shape)
        out.append(value.astype(np.asarray(original).dtype))
    return out

