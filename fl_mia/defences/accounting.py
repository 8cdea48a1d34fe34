"""ε over the whole training, from Opacus's accountants.

Both DP variants are accounted as a composition of subsampled Gaussian mechanisms:

* DP-SGD (sample level, per hospital): one mechanism per local optimiser step,
  sample rate = Poisson rate of the hospital's batches, noise = the noise multiplier;
  the history of every round is kept, so ε covers all rounds.
* client-level central DP: one mechanism per round, sample rate = share of hospitals
  sampled per round, noise multiplier = noise std on the sum / clipping norm, steps = rounds.
"""

from __future__ import annotations

from functools import lru_cache

History = list[tuple[float, float, int]]  # (noise_multiplier, sample_rate, steps), Opacus's own format

# ε is always also reported at this δ, so that runs with different δ (and the literature) compare.
REFERENCE_DELTA = 1e-5


def default_delta(num_records: int) -> float:
    """δ well below 1/n: min(1e-5, 1/(10·n)) for ``num_records`` protected records.

    δ = 1/n allows a mechanism that publishes one record whole ("name and shame"); the usual
    rule is δ ≪ 1/n. 1e-5 is the customary figure and stays below 1/(10·n) up to n = 10 000.
    """
    return min(REFERENCE_DELTA, 1.0 / (10 * max(num_records, 1)))


def epsilon_of(history: History, *, delta: float, accountant: str = "rdp") -> float:
    """ε of a composition of subsampled Gaussian mechanisms (0 for an empty history)."""
    if not history:
        return 0.0
    # Imported here, not at the top: Opacus's accountants pull in SciPy, ~0.8 s of import that a
    # hospital process without DP does not need.
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(noise), float(rate), int(steps)) for noise, rate, steps in history]
    return float(acc.get_epsilon(delta=delta))


# Opacus's bisection over σ takes seconds (about 8 s for q = 0.5, 20 steps, under load) and a
# hospital asks for its plan every round: solved once per process and set of arguments.
@lru_cache(maxsize=256)
def noise_for_epsilon(*, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The noise multiplier that spends exactly ``target_epsilon`` over ``steps`` steps."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant
        )
    )


def central_dp_epsilon(*, noise_multiplier: float, sample_rate: float, rounds: int, delta: float, accountant: str = "rdp") -> float:
    """Client-level ε of Flower's fixed-clipping DP after ``rounds`` rounds (∞ without noise)."""
    if noise_multiplier == 0:
        return float("inf")
    return epsilon_of([(noise_multiplier, sample_rate, rounds)], delta=delta, accountant=accountant)
