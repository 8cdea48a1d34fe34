"""Shadow models trained with the hospitals' recipe, cached in the run folder's ``shadows/``.

A shadow is named by the attack that asks for it (``reference``, ``lira-0-of-4``, ...). It is
saved with a fingerprint of its training data and recipe; a request with the same name and
fingerprint loads the saved weights, so attacks in one run share shadows.

How a shadow trains is ``privacy.shadow_mode`` (one trainer per mode in ``SHADOW_TRAINERS``):

* ``central`` (default): one model, ``privacy.shadow_epochs`` epochs over the shadow's data;
* ``federated``: a FedAvg federation of shadow hospitals over the shadow's data, with the
  target's rounds, sampling and local epochs (:mod:`fl_mia.attacker.predictions.shadow_federation`);
* ``as_target``: ``federated``, plus the target's DP-SGD on every shadow hospital when the
  target uses it, and the target's output hardening on the shadow's outputs (the attacker
  calibrates on what it is served: argmax masks or noisy probabilities).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fl_mia.attacker.predictions.shadow_federation import train_federated_shadow
from fl_mia.config import ExperimentConfig
from fl_mia.data import Split
from fl_mia.devices import process_device
from fl_mia.models import build_experiment_model
from fl_mia.run_folder import atomic_write_bytes, write_json
from fl_mia.seeding import int_seed, torch_generator
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


def _train_central(store: "ShadowStore", model: nn.Module, split: Split, name: str) -> None:
    train_local(model, split, store.training, seed=store.cfg.seed, tags=("shadow", name))


def _train_federated(store: "ShadowStore", model: nn.Module, split: Split, name: str) -> None:
    cfg = store.cfg

    def local(hospital_model: nn.Module, shard: Split, tags: tuple) -> None:
        train_local(hospital_model, shard, cfg.training, seed=cfg.seed, tags=("shadow", name, *tags))

    train_federated_shadow(model, split, cfg, name=name, local_train=local)


def _train_as_target(store: "ShadowStore", model: nn.Module, split: Split, name: str) -> None:
    cfg = store.cfg
    if not cfg.defences.dp_sgd.enabled:
        _train_federated(store, model, split, name)
        return
    from fl_mia.defences.dp_sgd import train_local_dp  # Opacus only when the target uses it

    def local(hospital_model: nn.Module, shard: Split, tags: tuple) -> None:
        # The attacker's own noise: seeded from its own stream, never the hospitals'.
        train_local_dp(hospital_model, shard, cfg, history=[], secret=int_seed(cfg.seed, "attacker-shadow-dp"), tags=("shadow", name, *tags))

    train_federated_shadow(model, split, cfg, name=name, local_train=local)


SHADOW_TRAINERS = {"central": _train_central, "federated": _train_federated, "as_target": _train_as_target}


class HardenedShadow(nn.Module):
    """A shadow whose outputs are hardened as the target's are (``as_target``): logits of the
    released probabilities, so every attack reads its shadows and its target alike."""

    def __init__(self, model: nn.Module, cfg: ExperimentConfig, name: str) -> None:
        super().__init__()
        self.model = model
        self.output = cfg.defences.output
        self._generator = torch_generator(cfg.seed, "shadow-output-hardening", name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from fl_mia.defences.output import harden_probabilities, released_logits

        return released_logits(harden_probabilities(self.model(images), self.output, generator=self._generator))


logger = logging.getLogger("fl_mia")


class ShadowStore:
    """Implements :class:`fl_mia.attacker.knowledge.ShadowTrainer` for a run: train once, then load."""

    def __init__(self, cfg: ExperimentConfig, folder: Path | None) -> None:
        self.cfg = cfg
        self.folder = Path(folder) if folder is not None else None
        self.mode = cfg.privacy.shadow_mode
        # Federated shadows train exactly as the target: its rounds × local epochs.
        self.epochs = cfg.shadow_epochs() if self.mode == "central" else cfg.federation.rounds * cfg.training.local_epochs
        if self.mode != "central" and cfg.privacy.shadow_epochs is not None:
            logger.warning(
                "privacy.shadow_epochs = %d is not used with shadow_mode = %r: shadows run the target's %d rounds of %d local epochs",
                cfg.privacy.shadow_epochs, self.mode, cfg.federation.rounds, cfg.training.local_epochs,
            )
        self.training = cfg.training.model_copy(update={"local_epochs": self.epochs})
        self.train_seconds: dict[str, float] = {}
        self.train_images: dict[str, int] = {}
        self._loaded: dict[str, tuple[str, nn.Module]] = {}

    def _fingerprint(self, split: Split) -> str:
        recipe = {"seed": self.cfg.seed, "model": self.cfg.model.model_dump(mode="json"), "training": self.training.model_dump()}
        if self.mode != "central":  # central keeps its historical fingerprint: earlier caches stay valid
            recipe["shadow_mode"] = self.mode
            recipe["federation"] = self.cfg.federation.model_dump(mode="json")
            if self.mode == "as_target":
                recipe["dp_sgd"] = self.cfg.defences.dp_sgd.model_dump(mode="json")
        recipe = json.dumps(recipe)
        digest = hashlib.sha256(recipe.encode())
        digest.update(np.ascontiguousarray(split.image_ids, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def _new_model(self, name: str) -> nn.Module:
        torch.manual_seed(int_seed(self.cfg.seed, "shadow-init", name))
        return build_experiment_model(self.cfg.model, self.cfg.data, device=process_device(self.cfg.simulation, role="server"))

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
                SHADOW_TRAINERS[self.mode](self, model, split, name)
            self.train_seconds[name] = time.perf_counter() - started
            self.train_images[name] = len(split)
            self._save(name, fingerprint, model, len(split))
        if self.mode == "as_target" and self.cfg.defences.output.mode != "probabilities":
            model = HardenedShadow(model, self.cfg, name)
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
