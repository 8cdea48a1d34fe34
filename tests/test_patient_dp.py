"""Patient-level DP-SGD: one clipped gradient per patient, ε per patient from Opacus's accountant."""

import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants import RDPAccountant
from torch import nn

from clients.dp_state import train_dp_sgd
from fl_mia.config import TrainingConfig
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.defences.dp_sgd import group_privacy, plan_for, plan_for_split, train_local_dp
from fl_mia.defences.patient_dp_sgd import make_patient_optimizer, patient_gradient_rows, wrap_for_patient_gradients
from fl_mia.losses import segmentation_loss
from fl_mia.models import build_model
from tests.conftest import tiny_raw

TRAINING = TrainingConfig()


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def tiny_batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(7, 1, 6, 6, generator=generator)
    masks = (torch.rand(7, 6, 6, generator=generator) > 0.6).long()
    patients = np.array([5, 5, 5, 9, 2, 2, 7])  # 3, 1, 2 and 1 slices: uneven on purpose
    return images, masks, patients


def flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def brute_force_patient_gradients(model: nn.Module, images, masks, patients) -> dict[int, torch.Tensor]:
    """One backward pass per patient on the mean loss over its slices."""
    found = {}
    for patient in np.unique(patients):
        model.zero_grad()
        rows = np.flatnonzero(patients == patient)
        segmentation_loss(model(images[rows]), masks[rows], dice_weight=TRAINING.dice_weight, ce_weight=TRAINING.ce_weight).backward()
        found[int(patient)] = flat_grad(model).clone()
    return found


def test_patient_rows_clip_and_sum_like_a_per_patient_loop():
    images, masks, patients = tiny_batch()
    model = tiny_net()
    per_patient = brute_force_patient_gradients(model, images, masks, patients)
    norms = sorted(float(g.norm()) for g in per_patient.values())
    clip = (norms[1] + norms[2]) / 2  # two patients clipped, two not
    expected_patients = 2.5
    reference = sum(g * min(1.0, clip / (float(g.norm()) + 1e-6)) for g in per_patient.values()) / expected_patients

    private = wrap_for_patient_gradients(model)
    optimizer = make_patient_optimizer(
        model, TRAINING, noise_multiplier=0.0, max_grad_norm=clip, expected_patients=expected_patients,
        noise_generator=torch.Generator().manual_seed(0),
    )
    optimizer.zero_grad(set_to_none=True)
    patient_gradient_rows(private, images, masks, patients, TRAINING)
    rows = torch.cat([p.grad_sample.flatten(1) for p in model.parameters()], dim=1)
    assert rows.shape[0] == 4  # one row per patient, not per slice
    for row, patient in zip(rows, np.unique(patients)):
        torch.testing.assert_close(row, per_patient[int(patient)], rtol=1e-4, atol=1e-6)
    optimizer.pre_step()  # clip, sum, noise (σ = 0), divide by the expected patients
    torch.testing.assert_close(flat_grad(model), reference, rtol=1e-4, atol=1e-7)
    private._close()


def test_noise_on_the_patient_sum_has_std_sigma_times_clip():
    images, masks, patients = tiny_batch()
    model = tiny_net()
    private = wrap_for_patient_gradients(model)
    optimizer = make_patient_optimizer(
        model, TRAINING, noise_multiplier=3.0, max_grad_norm=0.5, expected_patients=1.0,
        noise_generator=torch.Generator().manual_seed(0),
    )
    draws = []
    for _ in range(200):
        optimizer.zero_grad(set_to_none=True)
        for param in model.parameters():
            param.grad_sample = torch.zeros((0, *param.shape))  # no patient: the step is noise alone
        optimizer.pre_step()
        draws.append(flat_grad(model).clone())
    assert float(torch.stack(draws).std()) == pytest.approx(1.5, rel=0.05)
    private._close()


def patient_cfg(**dp):
    return build_config(tiny_raw(defences={"dp_sgd": {"enabled": True, "unit": "patient", **dp}}))


@pytest.fixture(scope="module")
def hospital():
    cfg = patient_cfg()
    return build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)


def test_patient_plan_samples_patients_and_defaults_delta_to_them(hospital):
    cfg = patient_cfg(patients_per_step=2)
    patients = len(np.unique(hospital.train.patient_ids))
    plan = plan_for_split(cfg.defences.dp_sgd, cfg.training, rounds=3, split=hospital.train)
    assert plan.unit == "patient" and plan.units == patients
    assert plan.sample_rate == pytest.approx(2 / patients) and plan.expected_batch == pytest.approx(2)
    assert plan.steps_per_round == math.ceil(patients / 2) * cfg.training.local_epochs
    assert plan.delta == min(1e-5, 1 / (10 * patients))
    with pytest.raises(ValueError, match="patient ids"):
        plan_for(cfg.defences.dp_sgd, cfg.training, rounds=3, num_train=len(hospital.train))


def test_patient_epsilon_over_rounds_equals_opacus_for_the_same_sigma_rate_and_steps(hospital):
    cfg = patient_cfg(noise_multiplier=1.3, patients_per_step=2)
    state = RecordDict()
    torch.manual_seed(0)
    model = build_model(cfg.model, in_channels=1, classes=1)
    for server_round in (1, 2):
        _, privacy = train_dp_sgd(model, hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=2, node_state=state, tags=(server_round, 0))
    patients = len(np.unique(hospital.train.patient_ids))
    steps = 2 * math.ceil(patients / 2) * cfg.training.local_epochs
    reference = RDPAccountant()
    reference.history = [(1.3, 2 / patients, steps)]
    delta = min(1e-5, 1 / (10 * patients))
    assert privacy["dp_unit"] == "patient" and privacy["dp_steps_total"] == steps
    assert privacy["dp_epsilon"] == pytest.approx(reference.get_epsilon(delta=delta), rel=1e-9)


def test_target_epsilon_is_solved_per_patient(hospital):
    cfg = patient_cfg(target_epsilon=8.0, noise_multiplier=None)
    torch.manual_seed(0)
    outcome = train_local_dp(
        build_model(cfg.model, in_channels=1, classes=1), hospital.train, cfg.defences.dp_sgd, cfg.training,
        rounds=1, history=[], secret=0, tags=(1, 0),
    )
    assert outcome.plan.unit == "patient"
    assert outcome.epsilon == pytest.approx(8.0, rel=0.02)


def test_slice_unit_reports_the_patient_epsilon_group_privacy_implies():
    epsilon, delta = group_privacy(2.0, 1e-6, group_size=3)
    assert epsilon == 6.0 and delta == pytest.approx(3 * math.exp(4.0) * 1e-6)
    assert group_privacy(8.0, 1e-5, group_size=4) == (32.0, 1.0)  # δ beyond 1: no guarantee at all


def summary_metrics(defence_report: dict) -> dict:
    zeros = {key: 0.0 for key in ("dice", "iou", "dice_pooled", "dice_lesion_images", "loss")}
    return {
        "experiment": "tiny", "seed": 0, "rounds_completed": 1, "wall_time_s": 1.0, "cost": {"model_parameters": 1},
        "utility": {**zeros, "initial": None, "per_hospital": {}}, "defence_report": defence_report,
    }


def test_show_and_report_name_each_epsilons_unit():
    from fl_mia.console_summary import render_summary
    from fl_mia.report.collect import RunRecord, epsilon_of
    from server.defences import RunShape, privacy_section

    cfg = build_config(tiny_raw(defences={
        "dp_sgd": {"enabled": True, "unit": "slice"}, "secagg": {"enabled": True, "clipping_range": 8.0}, "central_dp": {"mode": "distributed"},
    }))  # fmt: skip
    fits = {(2, 0): {
        "dp_unit": "slice", "dp_epsilon": 3.0, "dp_delta": 1e-6, "dp_epsilon_at_reference_delta": 2.5,
        "dp_max_slices_per_patient": 2, "dp_patient_epsilon_by_group_privacy": 5.0, "dp_patient_delta_by_group_privacy": 0.3,
    }}  # fmt: skip
    shape = RunShape(num_hospitals=2, sampled_per_round=2, rounds=2, secagg_max_weight=1.0)
    report = privacy_section(cfg.defences, shape, fits)
    assert report["dp_sgd"]["epsilon"]["unit"] == "slice" and report["central_dp"]["epsilon"]["unit"] == "hospital"
    text = render_summary(summary_metrics(report))
    assert "DP-SGD: ε = 3.00 per slice at δ = 1e-06 (2.50 at δ = 1e-05)" in text
    assert "a patient (2 slices) by group privacy: ε ≤ 5.00 at δ = 0.3" in text
    assert "hospital-level DP (distributed): ε = " in text and "per hospital" in text
    audited = summary_metrics(report)
    audited["privacy"] = {"dp_audit": {
        "unit": "patient", "largest_empirical_epsilon": 0.5, "attack": "trap", "accountant_epsilon": 8.0, "empirical_below_accountant": True,
    }}  # fmt: skip
    assert "DP audit (patient as trial): largest empirical ε 0.50 (trap, 95% lower bound) vs accountant's 8.00" in render_summary(audited)
    run = RunRecord(name="r", axes={}, seed=0, run_dir=None, metrics={"defence_report": report}, config={})
    labels = set(epsilon_of(run))
    assert labels == {"DP-SGD (ε per slice)", "DP-SGD (ε per patient by group privacy over slices)", "distributed DP (ε per hospital)"}


def test_audit_compares_the_patient_level_empirical_epsilon_with_the_accountants():
    from fl_mia.referee.dp_audit import audit_against_accountant

    privacy = {
        # A trap run sends hospitals different models: its figures are targeted, there is no overall.
        "trap": {"headline": "targeted", "targeted": {"auc": 0.9}, "empirical_epsilon_slices": {"epsilon_lower_bound": 9.0}, "empirical_epsilon": {"epsilon_lower_bound": 2.5}},
        "loss": {"overall": {"auc": 0.6}, "empirical_epsilon_slices": {"epsilon_lower_bound": 0.4}, "empirical_epsilon": {"epsilon_lower_bound": 0.1}},
        "candidate_set": {"members": 4},
    }
    patient = audit_against_accountant(privacy, accountant_epsilon=8.0, unit="patient")
    assert (patient["largest_empirical_epsilon"], patient["attack"], patient["empirical_below_accountant"]) == (2.5, "trap", True)
    slice_level = audit_against_accountant(privacy, accountant_epsilon=8.0, unit="slice")
    assert slice_level["largest_empirical_epsilon"] == 9.0 and slice_level["empirical_below_accountant"] is False


def test_the_report_states_each_dp_cells_audit_and_flags_a_seed_above_the_accountant():
    from fl_mia.report.collect import Group, RunRecord, _dp_audit
    from fl_mia.report.findings import _audit

    def run(seed: int, largest: float) -> RunRecord:
        audit = {"unit": "patient", "trial": "one candidate patient", "largest_empirical_epsilon": largest, "attack": "update.trap_trace",
                 "accountant_epsilon": 8.0, "empirical_below_accountant": largest <= 8.0}  # fmt: skip
        return RunRecord(name=f"r{seed}", axes={}, seed=seed, run_dir=None, metrics={"privacy": {"dp_audit": audit}}, config={})

    passing = _dp_audit(Group(label="dp", axes={}, runs=[run(0, 0.2), run(1, 1.4)]))
    assert passing["closest"]["seed"] == 1 and passing["all_below"]
    text = _audit({"dp_audit": passing})
    assert "largest empirical ε per patient" in text and "1.400 (update.trap_trace, seed 1)" in text and "all 2 seeds" in text
    failing = _dp_audit(Group(label="dp", axes={}, runs=[run(0, 0.2), run(1, 9.5)]))
    assert failing["seeds_above"] == [1] and "FAILED" in _audit({"dp_audit": failing}) and "seed 1" in _audit({"dp_audit": failing})
    assert _dp_audit(Group(label="none", axes={}, runs=[RunRecord(name="n", axes={}, seed=0, run_dir=None, metrics={}, config={})])) is None
