"""Distributed DP under SecAgg+: each hospital clips and adds σ·C/√n of noise; the sum carries σ·C."""

import numpy as np
import pytest

from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from fl_mia.defences.distributed_dp import clipped_noisy_update, noise_share_std
from server.defences import RunShape, privacy_section
from tests.conftest import tiny_raw
from tests.flower_doubles import known_update, run_rounds

SIZES = [16, 10, 6]


def distributed_cfg(noise_multiplier: float, clipping_norm: float, clipping_range: float = 1.0):
    raw = tiny_raw(defences={
        "secagg": {"enabled": True, "clipping_range": clipping_range},
        "central_dp": {"mode": "distributed", "noise_multiplier": noise_multiplier, "clipping_norm": clipping_norm},
    })  # fmt: skip
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    return build_config(raw)


def test_the_sum_of_the_hospitals_noise_shares_has_the_target_std():
    sigma, clip, sampled = 1.3, 0.7, 5
    share = noise_share_std(noise_multiplier=sigma, clipping_norm=clip, sampled=sampled)
    received = [np.zeros((200, 100)), np.zeros(300)]
    total = [np.zeros_like(r) for r in received]
    for hospital in range(sampled):
        rng = np.random.default_rng(hospital)
        noisy = clipped_noisy_update(received, received, clipping_norm=clip, share_std=share, rng=rng)  # no update: noise alone
        total = [t + n for t, n in zip(total, noisy)]
    values = np.concatenate([t.ravel() for t in total])
    # 20 300 draws: the sample std is within 2% of σ·C with overwhelming probability; one share alone is √5 too small.
    assert float(values.std()) == pytest.approx(sigma * clip, rel=0.02)
    assert share == pytest.approx(sigma * clip / np.sqrt(sampled))


def test_each_update_is_clipped_to_the_norm_before_its_noise():
    received = [np.ones((3, 4)), np.ones(5)]
    returned = [r + 3.0 for r in received]  # update norm 3·√17 ≫ 1
    out = clipped_noisy_update(returned, received, clipping_norm=1.0, share_std=0.0, rng=np.random.default_rng(0))
    delta = np.concatenate([(o - r).ravel() for o, r in zip(out, received)])
    assert float(np.linalg.norm(delta)) == pytest.approx(1.0, rel=1e-6)
    small = [r + 0.01 for r in received]
    kept = clipped_noisy_update(small, received, clipping_norm=1.0, share_std=0.0, rng=np.random.default_rng(0))
    assert all(np.allclose(k, s) for k, s in zip(kept, small))  # within the norm: unchanged


def test_secure_sum_through_secagg_is_the_uniform_mean_of_clipped_updates():
    """Without noise the protocol's result is the unweighted mean of each hospital's clipped update."""
    clip = 0.1
    cfg = distributed_cfg(noise_multiplier=0.0, clipping_norm=clip)
    zeros = [np.zeros_like(u) for u in known_update(0, 1)]
    final, _, _ = run_rounds(cfg, SIZES, initial=zeros)
    clipped = []
    for k in range(len(SIZES)):
        update = [u.astype(np.float64) for u in known_update(k, 1)]
        norm = np.sqrt(sum(float((u**2).sum()) for u in update))
        clipped.append([u * min(1.0, clip / norm) for u in update])
    expected = [sum(c[i] for c in clipped) / len(SIZES) for i in range(len(zeros))]
    assert max(float(np.abs(f - e).max()) for f, e in zip(final, expected)) < 1e-5  # SecAgg+'s quantisation only


def test_distributed_dp_needs_secagg_and_reports_epsilon_per_hospital():
    with pytest.raises(ConfigError, match="central_dp.mode"):
        build_config(tiny_raw(defences={"central_dp": {"mode": "distributed"}}))
    with pytest.raises(ConfigError, match=r"defences.secagg.clipping_range=1 is below .* set it to at least 4.46"):
        distributed_cfg(noise_multiplier=1.0, clipping_norm=1.0)  # 1 + 6 · 1/√3: SecAgg+ would have to clip the noise
    cfg = distributed_cfg(noise_multiplier=1.0, clipping_norm=1.0, clipping_range=4.5)
    shape = RunShape(num_hospitals=3, sampled_per_round=3, rounds=2, secagg_max_weight=1.0)
    block = privacy_section(cfg.defences, shape, {})["central_dp"]
    assert block["mode"] == "distributed" and block["epsilon"]["unit"] == "hospital"
    assert block["epsilon"]["value"] > 0 and "server included" in block["protects_against"]
