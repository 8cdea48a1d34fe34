"""attacker.shadows.mode: central (unchanged), federated (FedAvg of shadow hospitals), as_target."""

import numpy as np
import pytest
import torch

from fl_mia.attacker.predictions.shadow_federation import fedavg, shadow_hospitals
from fl_mia.attacker.predictions.shadows import HardenedShadow
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.defences.output import RELEASED_PROBABILITY_FLOOR
from fl_mia.models import build_experiment_model
from fl_mia.seeding import int_seed
from fl_mia.training import predict_logits, train_local
from server.federation import make_shadow_store
from tests.conftest import tiny_raw


def cfg_with(defences=None, **shadows):
    return build_config(tiny_raw(attacker={"shadows": shadows}, defences=defences or {}))


@pytest.fixture(scope="module")
def data():
    cfg = cfg_with()
    return build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train  # 16 images of 8 patients


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if torch.is_floating_point(p)])


def test_central_mode_is_plain_training_of_one_model(data):
    cfg = cfg_with()
    shadow = make_shadow_store(cfg, None).train("reference", data)
    torch.manual_seed(int_seed(cfg.seed, "shadow-init", "reference"))
    by_hand = build_experiment_model(cfg.model, cfg.data)
    train_local(by_hand, data, cfg.training.model_copy(update={"local_epochs": cfg.federation.rounds * cfg.training.local_epochs}), seed=cfg.seed, tags=("shadow", "reference"))
    assert torch.equal(weights(shadow), weights(by_hand))


def test_shadow_hospitals_split_by_patient_and_cover_the_data(data):
    shards = shadow_hospitals(data, count=3, seed=0, name="x")
    assert len(shards) == 3 and sum(len(s) for s in shards) == len(data)
    patients = [set(s.patient_ids.tolist()) for s in shards]
    assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1 :])
    assert len(shadow_hospitals(data.subset(np.flatnonzero(data.patient_ids == data.patient_ids[0])), count=3, seed=0, name="x")) == 1


def test_fedavg_weights_by_images_and_keeps_integer_buffers():
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 0.0]), "n": torch.tensor(9)}
    mean = fedavg([a, b], [1, 3])
    assert torch.allclose(mean["w"], torch.tensor([3.0, 1.0])) and mean["n"].item() == 3


def test_federated_shadow_is_reproducible_and_differs_from_central(data):
    central = make_shadow_store(cfg_with(), None).train("lira-0-of-2", data)
    federated = make_shadow_store(cfg_with(mode="federated"), None).train("lira-0-of-2", data)
    again = make_shadow_store(cfg_with(mode="federated"), None).train("lira-0-of-2", data)
    assert torch.equal(weights(federated), weights(again))
    assert not torch.equal(weights(federated), weights(central))


def test_federated_shadows_are_cached_apart_from_central_ones(data, tmp_path):
    make_shadow_store(cfg_with(), tmp_path).train("reference", data)
    store = make_shadow_store(cfg_with(mode="federated"), tmp_path)
    assert store._saved("reference", store._fingerprint(data)) is None  # a central cache is not reused


def test_as_target_trains_with_the_targets_dp_sgd(data):
    dp = {"dp_sgd": {"enabled": True, "noise_multiplier": 5.0}}
    federated = make_shadow_store(cfg_with(mode="federated", defences=dp), None).train("reference", data)
    as_target = make_shadow_store(cfg_with(mode="as_target", defences=dp), None).train("reference", data)
    assert not torch.equal(weights(federated), weights(as_target))


def test_as_target_serves_argmax_outputs_when_the_target_does(data):
    cfg = cfg_with(mode="as_target", defences={"output": {"mode": "argmax"}})
    shadow = make_shadow_store(cfg, None).train("reference", data)
    assert isinstance(shadow, HardenedShadow)
    logits = predict_logits(shadow, data.images[:2])
    edge = float(np.log((1 - RELEASED_PROBABILITY_FLOOR) / RELEASED_PROBABILITY_FLOOR))
    assert torch.allclose(logits.abs(), torch.full_like(logits, edge), rtol=2e-3)  # float32 rounds 1 − 1e-6
    plain = make_shadow_store(cfg_with(mode="federated", defences={"output": {"mode": "argmax"}}), None).train("reference", data)
    assert not isinstance(plain, HardenedShadow)


def test_shadow_epochs_gives_way_to_the_targets_rounds_in_federated_mode(caplog):
    store = make_shadow_store(cfg_with(mode="federated", epochs=3), None)
    assert store.epochs == 2 * 1  # tiny: 2 rounds of 1 local epoch
    assert "attacker.shadows.epochs = 3 is not used" in caplog.text
