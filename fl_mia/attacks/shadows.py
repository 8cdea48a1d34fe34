"""Shadow models trained with the hospitals' recipe, cached in the run folder's ``shadows/``.

A shadow is named by the attack that asks for it (``reference``, ``lira-0-of-4``, ...). It is
saved with a fingerprint of its training data and recipe; a request with the same name and
fingerprint loads the saved weights, so attacks in one run share shadows.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fl_mia.config import ExperimentConfig
from fl_mia.data import Split
from fl_mia.devices import process_device
from fl_mia.models import build_experiment_model
from fl_mia.run_folder import atomic_write_bytes, write_json
from fl_mia.seeding import int_seed
from fl_mia.training import train_local


@contextmanager
def torch_threads(count: int):
    """Train with as many threads as a hospital does.

    The server process otherwise uses every core; on a small, shared machine its threads then
    wait on each other (we saw shadow training at 2 threads run several times slower than at 1).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ShadowStore:
    """Implements :class:`fl_mia.knowledge.ShadowTrainer` for a run: train once, then load."""

    def __init__(self, cfg: ExperimentConfig, folder: Path | None) -> None:
        self.cfg = cfg
        self.folder = Path(folder) if folder is not None else None
        self.epochs = cfg.shadow_epochs()
        self.training = cfg.training.model_copy(update={"local_epochs": self.epochs})
        self.train_seconds: dict[str, float] = {}
        self.train_images: dict[str, int] = {}
        self._loaded: dict[str, tuple[str, nn.Module]] = {}

    def _fingerprint(self, split: Split) -> str:
        recipe = json.dumps(
            {"seed": self.cfg.seed, "model": self.cfg.model.model_dump(mode="json"), "training": self.training.model_dump()}
        )
        digest = hashlib.sha256(recipe.encode())
        digest.update(np.ascontiguousarray(split.image_ids, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def _new_model(self, name: str) -> nn.Module:
        torch.manual_seed(int_seed(self.cfg.seed, "shadow-init", name))
        return build_experiment_model(self.cfg, device=process_device(self.cfg.simulation, role="server"))

    def train(self, name: str, split: Split) -> nn.Module:
        fingerprint = self._fingerprint(split)
        if name in self._loaded and self._loaded[name][0] == fingerprint:
            return self._loaded[name][1]
        model = self._new_model(name)
        saved = self._saved(name, fingerprint)
        if saved is not None:
            model.load_state_dict(saved)
        else:
            started = time.perf_counter()
            with torch_threads(self.cfg.simulation.threads_per_client):
                train_local(model, split, self.training, seed=self.cfg.seed, tags=("shadow", name))
            self.train_seconds[name] = time.perf_counter() - started
            self.train_images[name] = len(split)
            self._save(name, fingerprint, model, len(split))
        model.eval()
        self._loaded[name] = (fingerprint, model)
        return model

    def _saved(self, name: str, fingerprint: str) -> dict | None:
        if self.folder is None:
            return None
        info, weights = self.folder / f"{name}.json", self.folder / f"{name}.pt"
        if not (info.is_file() and weights.is_file()):
            return None
        if json.loads(info.read_text()).get("fingerprint") != fingerprint:
            return None
        return torch.load(weights, map_location="cpu", weights_only=True)

    def _save(self, name: str, fingerprint: str, model: nn.Module, images: int) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(self.folder / f"{name}.pt", buffer.getvalue())
        write_json(
            self.folder / f"{name}.json",
            {"fingerprint": fingerprint, "images": images, "epochs": self.epochs,
             "train_seconds": self.train_seconds.get(name)},
        )
