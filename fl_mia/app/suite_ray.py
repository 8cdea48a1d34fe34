"""One private Ray head shared by every cell of a suite (``fl-mia suite --shared-ray``).

Cells join it through ``RAY_ADDRESS``, exactly as a run joins any cluster, so their configs and
results are unchanged; the head's marker is derived from the suite folder, so a head left behind
by a killed suite is found and stopped before the next one starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fl_mia.app.simulation_resources import available_cpus

if TYPE_CHECKING:
    from fl_mia.app.suite import Suite


def ray_marker(out: Path) -> Path:
    """The private temp dir of the suite's Ray head: one per suite folder, short (Ray's socket paths have a length limit)."""
    return Path("/tmp") / f"flmia-suite-{hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:10]}"


@contextmanager
def shared_ray_cluster(suite: Suite, *, out: Path) -> Iterator[str | None]:
    """One private Ray head for every cell, joined through ``RAY_ADDRESS``; yields its address.

    Yields None (each cell starts its own Ray, or joins the cluster it names) when the
    user already points at a cluster, or when the cells ask for different local resources.
    The head's marker is derived from the suite folder: a head left behind by a killed
    suite is stopped before the next one starts.
    """
    from fl_mia.app.ray_head import ray_head

    simulations = [cell.cfg.simulation for cell in suite.cells]
    resources = {(s.total_cpus or available_cpus(), s.gpus_per_client > 0) for s in simulations}
    if os.environ.get("RAY_ADDRESS") or any(s.ray_address for s in simulations) or len(resources) != 1:
        yield None
        return
    ((cpus, wants_gpus),) = resources
    num_gpus = 0
    if wants_gpus:
        import torch

        num_gpus = torch.cuda.device_count()
    with ray_head(ray_marker(out), num_cpus=cpus, num_gpus=num_gpus) as address:
        os.environ["RAY_ADDRESS"] = address
        try:
            yield address
        finally:
            os.environ.pop("RAY_ADDRESS", None)
