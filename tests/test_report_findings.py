"""A threats suite's report answers in words: each threat against its own baseline, on its targeted hospitals.

Synthetic run folders (no training): scores built so that the threat changes hospital 0 alone,
privacy sections written by the referee's own scoping (:func:`fl_mia.referee.scopes.scoped_metrics`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fl_mia.referee.scopes import ScoringScope, scoped_metrics
from fl_mia.report.collect import build_report_data, to_json
from fl_mia.report.findings import findings
from fl_mia.report.render import render_html, render_markdown
from fl_mia.run_folder import write_csv, write_json, write_npz, write_toml

SIGNAL = "update.returned_loss"
THREATS = {  # cell: (baseline cell, lift of hospital 0's members, poisoning)
    "honest": (None, 0.0, None),
    "secagg": (None, 0.0, None),
    "isolation": ("honest", 1.2, "isolation"),
    "secagg_model_inconsistency": ("secagg", 0.8, "model_inconsistency"),
}


def _fake_threat_run(folder: Path, *, seed: int, lift: float, poisoning: str | None, per_side: int = 60) -> None:
    hospital = np.repeat([0, 1], 2 * per_side)
    patient = np.arange(len(hospital)) // 2
    is_member = (patient % 2 == 0)
    noise = np.random.default_rng(seed).normal(size=len(hospital))
    scores = {SIGNAL: noise + 0.3 * is_member + lift * (is_member & (hospital == 0)), "loss": noise + 0.1 * is_member}
    keep = np.zeros((len(hospital), 2), bool)
    keep[np.arange(len(hospital)), hospital] = is_member
    folder.mkdir(parents=True)
    np.save(folder / "keep.npy", keep)
    write_csv(folder / "candidates.csv", [{"candidate": i, "hospital": int(h), "patient": int(p), "image": i}
                                          for i, (h, p) in enumerate(zip(hospital, patient))], ["candidate", "hospital", "patient", "image"])  # fmt: skip
    write_npz(folder / "scores.npz", scores)
    scope = ScoringScope(targets=(0,), models_differed=f"{poisoning} sent hospital 0 another model" if poisoning else None)
    privacy = {
        name: scoped_metrics(s, is_member, hospital, scope=scope, groups=patient, seed=np.random.SeedSequence(seed), threshold=None)
        for name, s in scores.items()
    }
    privacy["candidate_set"] = {"lesion_area_auc": 0.52, "lesion_area_auc_ci": [0.45, 0.6], "matched_lesion_area": True,
                                "targets": [0], "uniform_models": poisoning is None}  # fmt: skip
    threat = {"poisoning": poisoning or "none", "target_hospitals": [0], "detection": {  # as detector.detection_summary writes it
        "detection": {"flagged": 5 if poisoning else 0, "rounds": 6 if poisoning else 0},
        "false_alarms": {"flagged": seed, "rounds": 30 if poisoning else 36},
        "checks_fired_in_attack_rounds": {"loss_jump": 5} if poisoning else {},
    }}
    if poisoning:
        threat["declaration"] = {"targets": [0], "attack_rounds": "all", "matched_signals": [SIGNAL], "needs_secagg": False}
    write_toml(folder / "config.toml", {"name": "fake", "seed": seed, "threat": {"poisoning": poisoning or "none"}})
    write_json(folder / "metrics.json", {
        "experiment": "fake", "seed": seed, "threat_model": poisoning or "honest", "wall_time_s": 1.0,
        "utility": {"dice": 0.6 - 0.05 * bool(poisoning) + 0.01 * seed, "dice_pooled": 0.5}, "privacy": privacy, "threat": threat,
    })  # fmt: skip


@pytest.fixture(scope="module")
def threats_suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("threats")
    cells = []
    for value, (baseline, lift, poisoning) in THREATS.items():
        for seed in (0, 1):
            name = f"threat={value}__seed={seed}"
            _fake_threat_run(out / "cells" / name, seed=seed, lift=lift, poisoning=poisoning)
            cells.append({"name": name, "axes": {"threat": value}, "seed": seed, "state": "complete", "run_dir": str(out / "cells" / name),
                          "baseline": f"threat={baseline or value}__seed={seed}"})  # fmt: skip
    write_json(out / "suite.json", {"suite": "threats", "axes": {"threat": [*THREATS, "trap_weights"]}, "seeds": [0, 1], "cells": cells})
    return out


def test_each_threat_is_paired_with_its_own_baseline_on_its_targeted_hospital(threats_suite):
    data = build_report_data([threats_suite])
    groups = {g["label"]: g for g in data["groups"]}
    assert groups["threat=isolation"]["baseline"] == "threat=honest"
    assert groups["threat=secagg_model_inconsistency"]["baseline"] == "threat=secagg"
    paired = groups["threat=isolation"]["paired_vs_baseline"][SIGNAL]
    assert paired["scope"] == "targeted" and paired["hospitals"] == [0]
    assert paired["members"] == 2 * 60 and paired["auc"]["significant"] and paired["auc"]["difference"] > 0.1
    # The threat's pooled headline is its targeted hospital alone, not all four quarters of the candidates.
    assert groups["threat=isolation"]["attacks"][SIGNAL]["pooled"]["members"] == 2 * 60
    assert groups["threat=isolation"]["matched_signal"] == SIGNAL
    assert groups["threat=honest"]["baseline"] is None and groups["threat=honest"]["paired_vs_baseline"] == {}
    # Against the best the honest server had on the same targeted candidates, chosen there.
    strongest = groups["threat=isolation"]["matched_vs_baseline_strongest"]
    from sklearn.metrics import roc_auc_score

    honest_auc = {}
    for attack in (SIGNAL, "loss"):
        scores, members = [], []
        for seed in (0, 1):
            folder = threats_suite / "cells" / f"threat=honest__seed={seed}"
            on_0 = np.repeat([0, 1], 120) == 0
            scores.append(np.load(folder / "scores.npz")[attack][on_0])
            members.append((np.arange(240) // 2 % 2 == 0)[on_0])
        honest_auc[attack] = roc_auc_score(np.concatenate(members), np.concatenate(scores))
    assert strongest["baseline_attack"] == max(honest_auc, key=honest_auc.get) == SIGNAL
    assert strongest["baseline_auc"] == pytest.approx(honest_auc[SIGNAL])
    assert strongest["auc"]["difference"] == pytest.approx(paired["auc"]["difference"])
    assert groups["threat=honest"]["matched_vs_baseline_strongest"] is None


def test_findings_come_first_name_the_missing_cells_and_trace_to_the_json(threats_suite):
    data = build_report_data([threats_suite])
    sentences = findings(data)
    assert any(s.startswith("threat=isolation (isolation, targets hospital 0): its matched signal update.returned_loss") for s in sentences)
    assert any("Δ AUC against threat=secagg" in s and "excludes 0" in s for s in sentences)
    page = render_markdown(data)
    assert page.index("## Findings") < page.index("|")
    assert "threat=trap_weights__seed=0 (missing)" in page.split("## Findings")[0]
    # Every number in Findings is one of the suite's JSON figures (the findings themselves are not in it).
    public = json.loads(to_json(data))
    numbers: list[float] = []

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            numbers.append(float(node))

    walk(public)
    names = sorted({*data["attacks"], *(g["label"] for g in data["groups"]), "TPR@1%FPR"}, key=len, reverse=True)
    for sentence in sentences:
        for name in names:
            sentence = sentence.replace(name, "")
        for token in re.findall(r"[+-]?\d+(?:\.\d+)?", sentence):
            digits = len(token.split(".")[1]) if "." in token else 0
            assert any(abs(round(n, digits) - float(token)) < 1e-9 for n in numbers), f"{token} in {sentence!r} is not in the JSON"


def test_the_detectors_flags_are_pooled_over_seeds_in_findings_and_their_table(threats_suite):
    data = build_report_data([threats_suite])
    groups = {g["label"]: g for g in data["groups"]}
    isolation = groups["threat=isolation"]["detection"]
    assert isolation["detection"]["flagged"] == 10 and isolation["detection"]["rounds"] == 12
    assert isolation["false_alarms"]["flagged"] == 0 + 1 and isolation["false_alarms"]["rounds"] == 60
    low, high = isolation["detection"]["ci"]
    assert low < 10 / 12 < high <= 1 and isolation["checks_fired_in_attack_rounds"] == {"loss_jump": 10}
    sentences = findings(data)
    assert any("flagged 10 of 12 attacked rounds (0.833 [" in s and "false alarms on 1 of 60 honest rounds" in s for s in sentences)
    honest = next(s for s in sentences if s.startswith("threat=honest (a baseline)"))
    assert "attacked rounds" not in honest and "false alarms on 1 of 72 honest rounds" in honest
    page = render_markdown(data)
    assert "| threat=isolation | 2 | 10 of 12 | 0.833 [" in page.split("## Would the hospitals notice?")[1]


def test_html_opens_with_findings_and_repeats_no_dash(threats_suite):
    page = render_html(build_report_data([threats_suite]))
    assert page.index('id="findings"') < page.index("<table")
    assert "—" not in page.split("<h2>Machine")[0]


def test_a_trap_that_tested_few_candidates_says_so(threats_suite):
    from fl_mia.report.findings import threat_finding

    data = build_report_data([threats_suite])
    summary = next(g for g in data["groups"] if g["label"] == "threat=isolation")
    assert "tested a share" not in threat_finding(summary)
    summary["threat"] = {**summary["threat"], "candidates_covered": 0.159}
    assert "its detectors tested a share 0.159 of the candidates" in threat_finding(summary)


ACTIVE = "update.ascent_calibrated.accumulated"


def _fake_round_run(folder: Path, *, seed: int, active: bool, attack_rounds: list[int], per_side: int = 60) -> None:
    """Three observed rounds; the honest signal separates members in round 3 alone, the active one in its attack rounds."""
    is_member = np.arange(2 * per_side) % 2 == 0
    rng = np.random.default_rng([seed, active])
    rounds = {r: rng.normal(size=len(is_member)) + (0.8 if r == 3 else 0.0) * is_member for r in (1, 2, 3)}
    scores = {f"{SIGNAL}.round{r}": s for r, s in rounds.items()}
    scores[f"{SIGNAL}.accumulated"] = sum(rounds.values())
    if active:
        attacked = {r: rng.normal(size=len(is_member)) + 1.2 * is_member for r in attack_rounds}
        scores.update({f"update.ascent_calibrated.round{r}": s for r, s in attacked.items()})
        scores[ACTIVE] = sum(attacked.values())
    folder.mkdir(parents=True)
    np.save(folder / "keep.npy", is_member[:, None])
    write_csv(folder / "candidates.csv", [{"candidate": i, "hospital": 0, "patient": i, "image": i} for i in range(len(is_member))],
              ["candidate", "hospital", "patient", "image"])  # fmt: skip
    write_npz(folder / "scores.npz", scores)
    scope = ScoringScope(targets=(0,), models_differed="active ascent sent hospital 0 another model" if active else None)
    hospital = np.zeros(len(is_member), int)
    privacy = {
        name: scoped_metrics(s, is_member, hospital, scope=scope, groups=np.arange(len(is_member)), seed=np.random.SeedSequence(seed), threshold=None)
        for name, s in scores.items() if ".round" not in name
    }
    privacy["candidate_set"] = {"targets": [0], "uniform_models": not active}
    threat = {"poisoning": "active_ascent" if active else "none", "target_hospitals": [0]}
    if active:
        threat["declaration"] = {"targets": [0], "attack_rounds": attack_rounds, "matched_signals": [ACTIVE], "needs_secagg": False}
    write_toml(folder / "config.toml", {"name": "fake", "seed": seed})
    write_json(folder / "metrics.json", {"experiment": "fake", "seed": seed, "threat_model": threat["poisoning"], "wall_time_s": 1.0,
                                         "utility": {"dice": 0.6, "dice_pooled": 0.5}, "privacy": privacy, "threat": threat})  # fmt: skip


def _round_suite(out: Path, attack_rounds: list[int]) -> Path:
    cells = []
    for value in ("honest", "active_ascent"):
        for seed in (0, 1):
            name = f"threat={value}__seed={seed}"
            _fake_round_run(out / "cells" / name, seed=seed, active=value != "honest", attack_rounds=attack_rounds)
            cells.append({"name": name, "axes": {"threat": value}, "seed": seed, "state": "complete",
                          "run_dir": str(out / "cells" / name), "baseline": f"threat=honest__seed={seed}"})  # fmt: skip
    write_json(out / "suite.json", {"suite": "rounds", "axes": {"threat": ["honest", "active_ascent"]}, "seeds": [0, 1], "cells": cells})
    return out


def test_an_active_threat_is_also_paired_with_the_honest_signal_over_its_own_attack_rounds(tmp_path):
    from sklearn.metrics import roc_auc_score

    data = build_report_data([_round_suite(tmp_path / "late", attack_rounds=[2, 3])])
    active = next(g for g in data["groups"] if g["label"] == "threat=active_ascent")
    same_rounds = active["matched_in_attack_rounds"]
    assert same_rounds["baseline_attack"] == f"{SIGNAL} (rounds 2, 3)" and same_rounds["rounds"] == [2, 3]
    summed, members = [], []
    for seed in (0, 1):
        with np.load(tmp_path / "late" / "cells" / f"threat=honest__seed={seed}" / "scores.npz") as archive:
            summed.append(archive[f"{SIGNAL}.round2"] + archive[f"{SIGNAL}.round3"])
        members.append(np.arange(120) % 2 == 0)
    assert same_rounds["baseline_auc"] == pytest.approx(roc_auc_score(np.concatenate(members), np.concatenate(summed)))
    # Round 1 carries no signal, so the honest sum over rounds 2-3 beats its sum over every round.
    assert same_rounds["baseline_auc"] > active["matched_vs_baseline_strongest"]["baseline_auc"]
    assert "over its attack rounds 2–3 alone, against threat=honest's strongest update signal" in "\n".join(findings(data))
    # Attack rounds that are every round the honest server observed add nothing to the comparison above.
    everything = build_report_data([_round_suite(tmp_path / "all", attack_rounds=[1, 2, 3])])
    assert next(g for g in everything["groups"] if g["label"] == "threat=active_ascent")["matched_in_attack_rounds"] is None


def test_an_integrity_threat_reports_its_triggers_success_rate_beside_the_clean_dice(tmp_path):
    cells = []
    for value, poisoning in (("honest", None), ("backdoor", "backdoor")):
        for seed, sent_rate in ((0, 1.0), (1, 0.5)):
            name = f"threat={value}__seed={seed}"
            folder = tmp_path / "cells" / name
            _fake_threat_run(folder, seed=seed, lift=0.0, poisoning=poisoning)
            if poisoning:  # as the backdoor poisoner writes it: no membership signal, its own success rate
                metrics = json.loads((folder / "metrics.json").read_text())
                metrics["threat"]["declaration"] = {"targets": [0], "attack_rounds": "all", "matched_signals": [], "goal": "integrity"}
                metrics["threat"]["integrity"] = {"attack_success_rate_sent_model": sent_rate, "attack_success_rate_final_global": 0.0,
                                                  "obeys_at_dice": 0.5}  # fmt: skip
                write_json(folder / "metrics.json", metrics)
            cells.append({"name": name, "axes": {"threat": value}, "seed": seed, "state": "complete", "run_dir": str(folder),
                          "baseline": f"threat=honest__seed={seed}"})  # fmt: skip
    write_json(tmp_path / "suite.json", {"suite": "integrity", "axes": {"threat": ["honest", "backdoor"]}, "seeds": [0, 1], "cells": cells})
    data = build_report_data([tmp_path])
    groups = {g["label"]: g for g in data["groups"]}
    assert groups["threat=backdoor"]["integrity"]["success_sent_model"]["mean"] == pytest.approx(0.75)
    assert groups["threat=honest"]["integrity"] is None
    backdoor = next(s for s in findings(data) if s.startswith("threat=backdoor"))
    assert "it declares no matched signal" in backdoor
    assert "attack success rate (triggered test scans whose output matches its mask at Dice ≥ 0.5) is 0.750 [" in backdoor
    assert "0.000 [0.00, 0.00] on the final global model" in backdoor
    assert not any("attack success rate" in s for s in findings(data) if s.startswith("threat=honest"))


def test_a_dp_cell_names_its_epsilon_by_unit_and_its_pooled_dice_as_a_share_of_the_baseline(tmp_path):
    """The DP frontier's Findings say what DP costs (pooled Dice / the no-DP cell's, seed by seed) and at which unit."""
    cells = []
    for value, pooled_dice in (("none", 0.5), ("patient_eps8", 0.4)):
        for seed in (0, 1):
            name = f"arm={value}__seed={seed}"
            folder = tmp_path / "cells" / name
            _fake_threat_run(folder, seed=seed, lift=0.0, poisoning=None)
            metrics = json.loads((folder / "metrics.json").read_text())
            metrics["utility"]["dice_pooled"] = pooled_dice + 0.01 * seed
            if value != "none":
                metrics["defence_report"] = {"dp_sgd": {"epsilon_max": 7.99, "epsilon": {"unit": "patient", "value": 7.99}}}
            write_json(folder / "metrics.json", metrics)
            cells.append({"name": name, "axes": {"arm": value}, "seed": seed, "state": "complete", "run_dir": str(folder),
                          "baseline": f"arm=none__seed={seed}"})  # fmt: skip
    write_json(tmp_path / "suite.json", {"suite": "dp", "axes": {"arm": ["none", "patient_eps8"]}, "seeds": [0, 1], "cells": cells})
    data = build_report_data([tmp_path])
    (sentence,) = [s for s in findings(data) if s.startswith("arm=patient_eps8 against arm=none")]
    assert "Privacy spent: DP-SGD (ε per patient) 7.990" in sentence
    ratio = data["groups"][1]["dice_pooled_ratio"]["mean"]
    assert ratio == pytest.approx(np.mean([0.4 / 0.5, 0.41 / 0.51]))
    assert f"pooled Dice {ratio:.3f}" in sentence and "× the baseline's" in sentence
    (baseline,) = [s for s in findings(data) if s.startswith("arm=none")]
    assert "Privacy spent" not in baseline and "× the baseline's" not in baseline
    # The curve on one page: a row per cell in the suite's order, ε by unit, pooled Dice and its share, strongest attack.
    page = render_markdown(data)
    table = page.split("## ε spent, Dice kept, strongest attack")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| arm=")]
    assert [row.split(" | ")[0] for row in rows] == ["| arm=none", "| arm=patient_eps8"]
    assert "| none | 0.505 " in rows[0]
    assert "DP-SGD (ε per patient) 7.990" in rows[1] and f"| {ratio:.3f} [" in rows[1]
