"""Shadow models trained with the hospitals' recipe, cached in the run folder's ``shadows/``.

A shadow is named by the attack that asks for it (``reference``, ``lira-0-of-4``, ...). It is
saved with a fingerprint of its training data and recipe; a request with the same name and
fingerprint loads the saved weights, so attacks in one run share shadows. Inside a suite the
cells also share them: a shadow is looked up in the suite's knowledge folder
(:mod:`fl_mia.attacker.knowledge_cache`) under a key of its recipe and its training images
before it is trained, and saved there once trained.

How a shadow trains is ``attacker.shadows.mode`` (one trainer per mode in ``SHADOW_TRAINERS``):

* ``central`` (default): one model, ``attacker.shadows.epochs`` epochs over the shadow's data;
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fl_mia.attacker.knowledge_cache import content_key, locked
from fl_mia.attacker.predictions.shadow_federation import train_federated_shadow
from fl_mia.config import DpSgdConfig, FederationConfig, ModelConfig, OutputConfig, ShadowSettings, TrainingConfig
from fl_mia.data import Split
from fl_mia.devices import torch_threads
from fl_mia.run_folder import atomic_write_bytes, write_json
from fl_mia.seeding import int_seed, torch_generator
from fl_mia.training import train_local


# One round of the target's DP-SGD in place on a model: (model, shard, secret=, tags=).
DpLocalTrainer = Callable[..., object]


@dataclass(frozen=True)
class TargetRecipe:
    """How the target federation trains, as the server (which configured it) knows it: what
    shadows copy, and what their cache fingerprint covers."""

    model: ModelConfig
    training: TrainingConfig
    federation: FederationConfig
    sampled_per_round: int
    dp_sgd: DpSgdConfig
    output: OutputConfig
    threads_per_client: int


def _train_central(store: "ShadowStore", model: nn.Module, split: Split, name: str) -> None:
    train_local(model, split, store.training, seed=store.seed, tags=("shadow", name))


def _federate(store: "ShadowStore", model: nn.Module, split: Split, name: str, local) -> None:
    recipe = store.recipe
    train_federated_shadow(
        model, split, num_hospitals=recipe.federation.num_hospitals, sampled_per_round=recipe.sampled_per_round,
        rounds=recipe.federation.rounds, seed=store.seed, name=name, local_train=local,
    )


def _train_federated(store: "ShadowStore", model: nn.Module, split: Split, name: str) -> None:
    def local(hospital_model: nn.Module, shard: Split, tags: tuple) -> None:
        train_local(hospital_model, shard, store.recipe.training, seed=store.seed, tags=("shadow", name, *tags))

    _federate(store, model, split, name, local)


def _train_as_target(store: "ShadowStore", model: nn.Module, split: Split, name: str) -> None:
    if not store.recipe.dp_sgd.enabled:
        _train_federated(store, model, split, name)
        return
    if store.train_dp is None:
        raise ValueError("attacker.shadows.mode = 'as_target' under DP-SGD needs the target's DP-SGD trainer")

    def local(hospital_model: nn.Module, shard: Split, tags: tuple) -> None:
        # The attacker's own noise: seeded from its own stream, never the hospitals'.
        secret = int_seed(store.seed, "attacker-shadow-dp")
        store.train_dp(hospital_model, shard, secret=secret, tags=("shadow", name, *tags))

    _federate(store, model, split, name, local)


SHADOW_TRAINERS = {"central": _train_central, "federated": _train_federated, "as_target": _train_as_target}


class HardenedShadow(nn.Module):
    """A shadow whose outputs are hardened as the target's are (``as_target``): logits of the
    released probabilities, so every attack reads its shadows and its target alike."""

    def __init__(self, model: nn.Module, output: OutputConfig, *, seed: int, name: str) -> None:
        super().__init__()
        self.model = model
        self.output = output
        self._generator = torch_generator(seed, "shadow-output-hardening", name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from fl_mia.defences.output import harden_probabilities, released_logits

        return released_logits(harden_probabilities(self.model(images), self.output, generator=self._generator))


logger = logging.getLogger("fl_mia")


class ShadowStore:
    """Implements :class:`fl_mia.attacker.knowledge.ShadowTrainer` for a run: train once, then load."""

    def __init__(
        self,
        settings: ShadowSettings,
        recipe: TargetRecipe,
        *,
        seed: int,
        folder: Path | None,
        make_model: Callable[[], nn.Module],
        train_dp: DpLocalTrainer | None = None,
        shared_folder: Path | None = None,
    ) -> None:
        """``make_model()`` builds an untrained model of the target's architecture on the server's
        device; ``train_dp`` runs one round of the target's DP-SGD (``as_target`` under DP-SGD);
        ``shared_folder``: the suite's shadows, content-addressed (None: this run's only)."""
        self.seed = seed
        self.shared_folder = Path(shared_folder) if shared_folder is not None else None
        self.recipe = recipe
        self.make_model = make_model
        self.train_dp = train_dp
        self.folder = Path(folder) if folder is not None else None
        self.mode = settings.mode
        # Federated shadows train exactly as the target: its rounds × local epochs.
        target_epochs = recipe.federation.rounds * recipe.training.local_epochs
        self.epochs = (settings.epochs or target_epochs) if self.mode == "central" else target_epochs
        if self.mode != "central" and settings.epochs is not None:
            logger.warning(
                "attacker.shadows.epochs = %d is not used with mode = %r: shadows run the target's %d rounds of %d local epochs",
                settings.epochs, self.mode, recipe.federation.rounds, recipe.training.local_epochs,
            )
        self.training = recipe.training.model_copy(update={"local_epochs": self.epochs})
        self.train_seconds: dict[str, float] = {}
        self.train_images: dict[str, int] = {}
        self._loaded: dict[str, tuple[str, nn.Module]] = {}

    def _fingerprint(self, split: Split) -> str:
        recipe = {"seed": self.seed, "model": self.recipe.model.model_dump(mode="json"), "training": self.training.model_dump()}
        if self.mode != "central":  # central keeps its historical fingerprint: earlier caches stay valid
            recipe["shadow_mode"] = self.mode
            recipe["federation"] = self.recipe.federation.model_dump(mode="json")
            if self.mode == "as_target":
                recipe["dp_sgd"] = self.recipe.dp_sgd.model_dump(mode="json")
        recipe = json.dumps(recipe)
        digest = hashlib.sha256(recipe.encode())
        digest.update(np.ascontiguousarray(split.image_ids, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def _new_model(self, name: str) -> nn.Module:
        torch.manual_seed(int_seed(self.seed, "shadow-init", name))
        return self.make_model()

    def train(self, name: str, split: Split) -> nn.Module:
        """The shadow ``name`` trained on ``split``: loaded when this run or the suite has it.

        Torch's global generator is left as it was: training a shadow seeds and draws from it,
        loading one does not, so without this a cell that trained its shadows and one that
        loaded them from the suite's folder would hand the rest of the run (a poisoner's draws,
        say) different random streams, and their scores would differ."""
        with torch.random.fork_rng():
            return self._train_or_load(name, split)

    def _train_or_load(self, name: str, split: Split) -> nn.Module:
        fingerprint = self._fingerprint(split)
        if name in self._loaded and self._loaded[name][0] == fingerprint:
            return self._loaded[name][1]
        model = self._new_model(name)
        saved = self._saved(name, fingerprint)
        if saved is not None:
            model.load_state_dict(saved)
        elif self.shared_folder is None:
            self._train(model, split, name)
        else:
            key = self._shared_key(name, fingerprint, split, model)
            with locked(self.shared_folder, key):  # a cell training this shadow now is waited for
                shared = self.shared_folder / f"{key}.pt"
                if shared.is_file():
                    model.load_state_dict(torch.load(shared, map_location="cpu", weights_only=True))
                else:
                    self._train(model, split, name)
                    atomic_write_bytes(shared, _state_bytes(model))
        if saved is None:
            self._save(name, fingerprint, model, len(split))
        if self.mode == "as_target" and self.recipe.output.mode != "probabilities":
            model = HardenedShadow(model, self.recipe.output, seed=self.seed, name=name)
        model.eval()
        self._loaded[name] = (fingerprint, model)
        return model

    def _train(self, model: nn.Module, split: Split, name: str) -> None:
        started = time.perf_counter()
        # As many threads as a hospital: the server process otherwise uses every core, and on a
        # small, shared machine its threads wait on each other (shadow training at 2 threads ran
        # several times slower than at 1).
        with torch_threads(self.recipe.threads_per_client):
            SHADOW_TRAINERS[self.mode](self, model, split, name)
        self.train_seconds[name] = time.perf_counter() - started
        self.train_images[name] = len(split)

    def _shared_key(self, name: str, fingerprint: str, split: Split, model: nn.Module) -> str:
        """What the shadow's weights depend on beyond the run's fingerprint: its training images'
        bytes (the fingerprint has their ids only), the threads and the device it trains with."""
        device = next(model.parameters()).device.type
        recipe = f"{name}|{fingerprint}|threads={self.recipe.threads_per_client}|{device}"
        return content_key(recipe, split.images, split.masks)

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
        atomic_write_bytes(self.folder / f"{name}.pt", _state_bytes(model))
        write_json(
            self.folder / f"{name}.json",
            {"fingerprint": fingerprint, "images": images, "epochs": self.epochs,
             "train_seconds": self.train_seconds.get(name)},
        )


def _state_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()
