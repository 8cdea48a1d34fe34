"""Catalogue of bad input: each case fails through the CLI with exit code 2 and ONE line that
names the field or file and says what to do. No traceback, nothing created, no Ray started.

To add a case (e.g. a SecAgg+ threshold above the hospital count once defences exist), append
a ``Case`` to ``CASES``: its ``args`` get the prepared paths, ``expect`` are fragments the one
error line must contain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from fl_mia.checkpoint import CHECKPOINT_FILE, Checkpointer, config_fingerprint
from fl_mia.app.cli import app
from fl_mia.config.loading import build_config
from fl_mia.round_log import RoundLog
from fl_mia.run_folder import set_status, write_toml
from strategies.honest import PartitionSeededClientManager
from tests.conftest import tiny_raw


@dataclass
class Paths:
    """Files a case can point at, prepared fresh in a temporary folder for every case."""

    root: Path
    config: Path  # a valid tiny experiment
    run: Path  # an interrupted run of that experiment, with a checkpoint after round 1
    new_out: Path  # where a rejected run must not create anything


@dataclass
class Case:
    name: str
    args: Callable[[Paths], list[str]]
    expect: tuple[str, ...]
    prepare: Callable[[Paths], None] = field(default=lambda paths: None)


def with_set(*overrides: str) -> Callable[[Paths], list[str]]:
    def args(p: Paths) -> list[str]:
        return ["run", str(p.config), *sum((["--set", o] for o in overrides), []), "--out", str(p.new_out)]

    return args


def write(path_of: Callable[[Paths], Path], data: bytes) -> Callable[[Paths], None]:
    def prepare(p: Paths) -> None:
        path_of(p).write_bytes(data)

    return prepare


def edit_run_config(p: Paths) -> None:
    write_toml(p.run / "config.toml", build_config(tiny_raw(seed=99)).to_toml_dict())


CASES = [
    # --- config values ----------------------------------------------------------------------
    Case("unknown key", with_set("federation.roundz=3"), ("federation.roundz", "unknown key")),
    Case("unknown section", with_set("attackz.kind=1"), ("attackz", "unknown key")),
    Case("wrong type", with_set('training.batch_size="eight"'), ("training.batch_size", "integer")),
    Case("negative rounds", with_set("federation.rounds=-1"), ("federation.rounds", "greater than or equal to 1")),
    Case("zero learning rate", with_set("training.lr=0"), ("training.lr", "greater than 0")),
    Case("negative seed", with_set("seed=-3"), ("seed", "greater than or equal to 0")),
    Case("empty name", with_set('name=""'), ("name", "at least 1 character")),
    Case("image size not a multiple of 32", with_set("data.image_size=48"), ("data.image_size", "multiple of 32")),
    Case("unknown architecture", with_set('model.arch="Unetz"'), ("model.arch", "UnetPlusPlus")),
    Case("unknown encoder", with_set('model.encoder="resnet19"'), ("model.encoder", "resnet19")),
    Case("unknown task", with_set('data.task="liver"'), ("data.task", "lesion")),
    Case("tiny hospitals", with_set("federation.patients_per_hospital=2"), ("patients_per_hospital", "at least 4")),
    # --- contradictory settings -------------------------------------------------------------
    Case("more hospitals than patients", with_set("federation.num_hospitals=20"), ("federation.num_hospitals", "data.phantom.num_patients")),
    Case("size list vs hospital count", with_set("federation.patients_per_hospital=[8,8,8]"), ("patients_per_hospital", "num_hospitals is 2")),
    Case("no test split left", with_set("federation.train_fraction=0.7", "federation.heldout_fraction=0.3"), ("train_fraction", "test split")),
    Case("constant loss", with_set("training.dice_weight=0", "training.ce_weight=0"), ("dice_weight", "ce_weight")),
    Case("crash probability above 1", with_set("failures.crash_probability=1.5"), ("failures.crash_probability", "less than or equal to 1")),
    Case("crash of a hospital that does not exist", with_set("failures.crashes=[{hospital=5, rounds=[1]}]"), ("failures.crashes", "hospital 5 does not exist")),
    Case("crash after the last round", with_set("failures.crashes=[{hospital=0, rounds=[9]}]"), ("failures.crashes", "round 9", "federation.rounds=2")),
    Case("crash at round 0", with_set("failures.crashes=[{hospital=0, rounds=[0]}]"), ("failures.crashes", "counted from 1")),
    Case("misspelt key in a failure entry", with_set("failures.crashes=[{hospital=0, round=[1]}]"), ("failures.crashes.0.round", "unknown key")),
    Case("stragglers without a timeout", with_set("failures.stragglers=[{hospital=0, rounds=[1]}]"), ("failures", "round_timeout_s")),
    Case(
        "straggle delay inside the deadline",
        with_set("failures.stragglers=[{hospital=0, rounds=[1]}]", "failures.round_timeout_s=5", "failures.first_round_allowance_s=5", "failures.straggle_delay_s=8"),
        ("straggle_delay_s=8", "must exceed"),
    ),
    Case("more CPUs per hospital than the machine has", with_set("simulation.cpus_per_client=512"), ("simulation.cpus_per_client", "lower it")),
    Case("more CPUs in all than the machine has", with_set("simulation.total_cpus=4096"), ("simulation.total_cpus", "lower it")),
    # --- files and command line ---------------------------------------------------------------
    Case("missing config file", lambda p: ["run", str(p.root / "nope.toml")], ("nope.toml", "no such config file")),
    Case("config that is not TOML", lambda p: ["run", str(p.root / "bad.toml")], ("bad.toml", "not valid TOML"), write(lambda p: p.root / "bad.toml", b"seed = = 1")),
    Case("config that is not text", lambda p: ["run", str(p.root / "bin.toml")], ("bin.toml", "not valid TOML"), write(lambda p: p.root / "bin.toml", bytes([0xFF, 0xFE, 0x00, 0x81]))),
    Case("missing encoder weights", with_set('model.encoder_weights_path="/no/such/weights.pt"'), ("model.encoder_weights_path", "no such file")),
    Case(
        "unreadable encoder weights",
        lambda p: ["run", str(p.config), "--set", f'model.encoder_weights_path="{p.root / "w.pt"}"', "--out", str(p.new_out)],
        ("model.encoder_weights_path", "cannot read", "torch.save"),
        write(lambda p: p.root / "w.pt", b"not a torch file"),
    ),
    Case("--set without =", with_set("federation.rounds"), ("--set", "dotted.key=value")),
    Case("--set into a value", with_set("seed.x=1"), ("--set", "seed is a value")),
    Case("--out folder holding files", lambda p: ["run", str(p.config), "--out", str(p.run)], ("--out", "not empty")),
    Case("neither CONFIG nor --resume", lambda p: ["run"], ("CONFIG", "--resume")),
    # --- resuming -----------------------------------------------------------------------------
    Case("--resume of a missing folder", lambda p: ["run", "--resume", str(p.root / "gone")], ("--resume", "no such run folder")),
    Case("--resume of a folder that is no run", lambda p: ["run", "--resume", str(p.root)], ("--resume", "no config.toml")),
    Case(
        "--resume of a complete run",
        lambda p: ["run", "--resume", str(p.run)],
        ("already complete", "fl-mia show"),
        lambda p: set_status(p.run, "complete"),
    ),
    Case(
        "--resume of a live run",
        lambda p: ["run", "--resume", str(p.run)],
        ("still running", str(os.getppid())),
        lambda p: set_status(p.run, "running", pid=os.getppid(), host=__import__("socket").gethostname()),
    ),
    Case(
        "--resume without a checkpoint",
        lambda p: ["run", "--resume", str(p.run)],
        (CHECKPOINT_FILE, "no checkpoint"),
        lambda p: (p.run / CHECKPOINT_FILE).unlink(),
    ),
    Case(
        "--resume with a truncated checkpoint",
        lambda p: ["run", "--resume", str(p.run)],
        (CHECKPOINT_FILE, "unreadable checkpoint"),
        lambda p: (p.run / CHECKPOINT_FILE).write_bytes((p.run / CHECKPOINT_FILE).read_bytes()[:200]),
    ),
    Case(
        "--resume after config.toml was edited",
        lambda p: ["run", "--resume", str(p.run)],
        (CHECKPOINT_FILE, "different experiment config"),
        edit_run_config,
    ),
    Case(
        "--resume with a damaged config.toml",
        lambda p: ["run", "--resume", str(p.run)],
        ("config.toml", "damaged"),
        write(lambda p: p.run / "config.toml", b"[federation\n"),
    ),
    Case(
        "--resume with another config",
        lambda p: ["run", str(p.config), "--set", "federation.rounds=3", "--resume", str(p.run)],
        ("federation.rounds=2", "not 3"),
    ),
    Case("--resume with --out", lambda p: ["run", "--resume", str(p.run), "--out", str(p.new_out)], ("--resume", "--out")),
    Case("--resume with --set alone", lambda p: ["run", "--resume", str(p.run), "--set", "seed=1"], ("--set", "--resume")),
    Case(
        "trap weights under weight decay",
        with_set('threat.poisoning="trap_weights"', "training.weight_decay=0.01"),
        ("trap_weights", "training.weight_decay must be 0"),
    ),
    Case(
        "trap weights on BatchNorm",
        with_set('threat.poisoning="trap_weights"', 'model.norm="batchnorm"'),
        ("trap_weights", "model.norm = 'groupnorm'"),
    ),
    Case(
        "more trap detectors than GroupNorm groups",
        with_set('threat.poisoning="trap_weights"', "threat.trap_weights.detectors_per_round=40"),
        ("threat.trap_weights.detectors_per_round = 40", "32 GroupNorm groups"),
    ),
    Case(
        "a poisoner's knob under its old flat key",
        with_set('threat.poisoning="gradient_ascent"', "threat.ascent_lr=0.1"),
        ("threat.ascent_lr has moved", "threat.gradient_ascent.lr"),
    ),
    Case("a poisoner nobody registered", with_set('threat.poisoning="flood"'), ("threat.poisoning", "'flood'", "trap_weights")),
    Case(
        "isolation under SecAgg+ (the server holds no hospital's own model to send back)",
        with_set('threat.poisoning="isolation"', "defences.secagg.enabled=true"),
        ("threat.poisoning=isolation", "SecAgg+", "model_inconsistency"),
    ),
]


def sweep(*args: str) -> Callable[[Paths], list[str]]:
    return lambda p: ["sweep", str(p.config), *args, "--out", str(p.new_out)]


CASES += [
    Case(
        "sweep of a defence that is off",
        sweep("--param", "defences.dp_sgd.noise_multiplier", "--values", "1,2"),
        ("DP-SGD is off", "defences.dp_sgd.enabled=true"),
    ),
    Case(
        "sweep value of the wrong type",
        sweep("--param", "defences.dp_sgd.noise_multiplier", "--values", "1,x", "--set", "defences.dp_sgd.enabled=true"),
        ("noise_multiplier=x", "valid number"),
    ),
    Case("sweep with a repeated value", sweep("--param", "training.lr", "--values", "0.1,0.1"), ("--values", "repeated")),
    Case("sweep of a key that does not exist", sweep("--param", "training.nope", "--values", "1,2"), ("training.nope",)),
]
if not torch.cuda.is_available():
    CASES.append(Case("a GPU on a machine without one", with_set("simulation.gpus_per_client=1"), ("simulation.gpus_per_client", "no GPU")))
else:
    CASES.append(Case("more GPUs per hospital than the machine has", with_set("simulation.gpus_per_client=4096"), ("simulation.gpus_per_client", "lower it")))


# --- datasets from disk (docs/data.md) ---------------------------------------------------------
def on_data(source: str, folder: str, *overrides: str) -> Callable[[Paths], list[str]]:
    """``run`` of the tiny config on the dataset a case prepared under ``root/folder``."""

    def args(p: Paths) -> list[str]:
        settings = [f'data.source="{source}"', f'data.path="{p.root / folder}"', f'data.cache_dir="{p.root / "cache"}"',
                    "federation.attacker_patients=2", *(o.replace("{root}", str(p.root)) for o in overrides)]
        return ["run", str(p.config), *sum((["--set", s] for s in settings), []), "--out", str(p.new_out)]

    return args


def _msd(p: Paths, **kwargs) -> Path:
    from tests.disk_datasets import write_msd

    return write_msd(p.root / "msd", **kwargs)


def _edit_msd_label(p: Paths, change: Callable[[np.ndarray], np.ndarray]) -> None:
    import nibabel as nib

    root = _msd(p)
    file = root / "labelsTr" / "liver_4.nii.gz"
    stored = nib.load(str(file))  # the same geometry: only the values (or shape) change
    nib.save(nib.Nifti1Image(change(np.asarray(stored.dataobj)), stored.affine), file)


def _folder(p: Paths) -> Path:
    from tests.disk_datasets import write_folder

    return write_folder(p.root / "kvasir", images=24)


def _nnunet_declaring_two_channels(p: Paths) -> None:
    import json

    from tests.disk_datasets import write_nnunet

    root = write_nnunet(p.root / "nn")
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))


def _duplicate_msd_case(p: Paths) -> None:
    import json

    root = _msd(p)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append(meta["training"][0])
    (root / "dataset.json").write_text(json.dumps(meta))


def _manifest(rows: Callable[[int], str]) -> Callable[[Paths], None]:
    def prepare(p: Paths) -> None:
        _msd(p)
        (p.root / "sites.csv").write_text("case,site\n" + "".join(f"liver_{i},{rows(i)}\n" for i in range(12)))

    return prepare


MANIFEST = ('federation.partition="manifest"', 'federation.manifest="{root}/sites.csv"')
CASES += [
    Case("dataset path missing", on_data("msd", "nowhere"), ("data.path", "nowhere", "does not exist")),
    Case(
        "folder without image/mask pairs",
        on_data("folder", "empty"),
        ("no image/mask pairs", "images/*", "masks/*", "data.folder.image_glob"),
        lambda p: (p.root / "empty").mkdir(),
    ),
    Case(
        "mask without its image",
        on_data("folder", "kvasir"),
        ("p03_img007.png", "mask without its image"),
        lambda p: (_folder(p) / "images" / "p03_img007.png").unlink(),
    ),
    Case(
        "image without its mask",
        on_data("folder", "kvasir"),
        ("p03_img007.png", "image without its mask"),
        lambda p: (_folder(p) / "masks" / "p03_img007.png").unlink(),
    ),
    Case(
        "image and mask shapes differ",
        on_data("msd", "msd"),
        ("liver_4.nii.gz", "differs from its mask"),
        lambda p: _edit_msd_label(p, lambda labels: labels[:-2]),
    ),
    Case(
        "truncated volume",
        on_data("msd", "msd"),
        ("imagesTr/liver_5.nii.gz", "cannot read", "replace"),
        lambda p: (lambda f: f.write_bytes(f.read_bytes()[:300]))(_msd(p) / "imagesTr" / "liver_5.nii.gz"),
    ),
    Case(
        "undeclared label value",
        on_data("msd", "msd"),
        ("liver_4.nii.gz", "label values [7]", "not declared"),
        lambda p: _edit_msd_label(p, lambda labels: np.where(labels == 2, 7, labels).astype(np.uint8)),
    ),
    Case(
        "channel files not matching channel_names",
        on_data("nnunet", "nn"),
        ("channel_names", "declares 2"),
        _nnunet_declaring_two_channels,
    ),
    Case("duplicate case ids", on_data("msd", "msd"), ("dataset.json", "liver_0", "appears twice"), _duplicate_msd_case),
    Case(
        "manifest naming a missing case",
        on_data("msd", "msd", *MANIFEST),
        ("sites.csv", "liver_99", "not in the dataset"),
        lambda p: (_msd(p), (p.root / "sites.csv").write_text("case,site\nliver_0,a\nliver_99,b\n")),
    ),
    Case(
        "manifest site too small for its splits",
        on_data("msd", "msd", *MANIFEST),
        ("sites.csv", "site 'small' has 2 patient(s)", "merge it"),
        _manifest(lambda i: "small" if i < 2 else "big"),
    ),
    Case(
        "fewer patients than the hospitals need",
        on_data("msd", "msd", "federation.num_hospitals=3", "federation.attacker_patients=2"),
        ("leaves 10 patients for 3 hospitals", "need at least 12"),
        lambda p: _msd(p),
    ),
    Case(
        "no foreground for the task",
        on_data("msd", "msd"),
        ("no slice", "foreground", "data.task='lesion'"),
        lambda p: (_msd(p), _cancer_becomes_liver(p)),
    ),
]


def _msd_entry_without_files(p: Paths) -> None:
    import json

    root = _msd(p)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/liver_99.nii.gz", "label": "./labelsTr/liver_99.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))


def _msd_label_geometry(p: Paths, affine: np.ndarray) -> None:
    """liver_4's label with the same voxels as its image but another affine."""
    import nibabel as nib

    root = _msd(p)
    file = root / "labelsTr" / "liver_4.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(file)).dataobj), affine), file)


def _msd_image_2d(p: Paths) -> None:
    import nibabel as nib

    root = _msd(p)
    file = root / "imagesTr" / "liver_4.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(file)).dataobj)[:, :, 5], np.diag([0.8, 0.8, 1.0, 1.0])), file)


def _nnunet_channel_geometry(p: Paths) -> None:
    import nibabel as nib

    from tests.disk_datasets import write_nnunet

    root = write_nnunet(p.root / "nn", channels=2)
    file = root / "imagesTr" / "case004_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(file)).dataobj), np.diag([1.0, 1.0, 1.5, 1.0])), file)


def _folder_masks_with_suffix(p: Paths) -> None:
    for mask in (_folder(p) / "masks").glob("*.png"):
        mask.rename(mask.with_name(mask.stem + "_mask.png"))


def _manifest_with_an_empty_case(p: Paths) -> None:
    """liver_4's label emptied: with no empty slice kept, nothing of it is left to share out."""
    _edit_msd_label(p, lambda labels: np.zeros_like(labels))
    (p.root / "sites.csv").write_text("case,site\n" + "".join(f"liver_{i},{'a' if i < 6 else 'b'}\n" for i in range(12)))


def _msd_of_two_cases(p: Paths) -> None:
    from tests.disk_datasets import write_msd

    write_msd(p.root / "msd", cases=2)  # case 0 has no lesion: one would fail the task check first


def inspect_data(source: str, folder: str, *overrides: str) -> Callable[[Paths], list[str]]:
    """``data inspect`` (not ``run``) of the tiny config on a prepared dataset."""

    def args(p: Paths) -> list[str]:
        run_args = on_data(source, folder, *overrides)(p)
        return ["data", "inspect", *run_args[1:-2], "--out", str(p.new_out)]

    return args


# The integrity checks nnU-Net runs, before anything is decoded or cached.
FLIPPED_X = np.diag([-0.8, 0.8, 2.5, 1.0])
CASES += [
    Case(
        "dataset.json entry whose files are missing",
        on_data("msd", "msd"),
        ("dataset.json", "training entry 12 (image)", "liver_99.nii.gz", "does not exist"),
        _msd_entry_without_files,
    ),
    Case(
        "inspect of a dataset.json entry whose files are missing",
        inspect_data("msd", "msd"),
        ("dataset.json", "training entry 12 (image)", "does not exist"),
        _msd_entry_without_files,
    ),
    Case(
        "label flipped against its image",
        on_data("msd", "msd"),
        ("imagesTr/liver_4.nii.gz", "labelsTr/liver_4.nii.gz", "direction", "data.msd.check_geometry=false"),
        lambda p: _msd_label_geometry(p, FLIPPED_X),
    ),
    Case(
        "label spacing differs from its image",
        on_data("msd", "msd"),
        ("liver_4.nii.gz", "spacing (0.8, 0.8, 2.5) vs (1, 1, 1)"),
        lambda p: _msd_label_geometry(p, np.eye(4)),
    ),
    Case(
        "label origin differs from its image",
        on_data("msd", "msd"),
        ("liver_4.nii.gz", "origin"),
        lambda p: _msd_label_geometry(p, np.array([[0.8, 0, 0, 5.0], [0, 0.8, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]])),
    ),
    Case(
        "interpolated label values",
        on_data("msd", "msd"),
        ("labelsTr/liver_4.nii.gz", "0.5", "not whole class ids", "nearest-neighbour"),
        lambda p: _edit_msd_label(p, lambda labels: np.where(labels == 1, 0.5, labels).astype(np.float32)),
    ),
    Case("2-D NIfTI in an MSD dataset", on_data("msd", "msd"), ("imagesTr/liver_4.nii.gz", "2-D NIfTI", "3-D volumes"), _msd_image_2d),
    Case(
        "nnU-Net channel files in different geometry",
        on_data("nnunet", "nn"),
        ("case004_0001.nii.gz", "channel file", "spacing", "data.nnunet.check_geometry=false"),
        _nnunet_channel_geometry,
    ),
    Case(
        "folder masks named {case}_mask.png",
        on_data("folder", "kvasir"),
        ("image without its mask", "_mask.png", "data.folder.mask_glob='masks/*_mask.png'"),
        _folder_masks_with_suffix,
    ),
    Case(
        "manifest naming a case with no slice kept",
        on_data("msd", "msd", *MANIFEST, "data.msd.empty_slice_fraction=0.0"),
        ("sites.csv", "liver_4", "no slice left", "empty_slice_fraction"),
        _manifest_with_an_empty_case,
    ),
    Case(
        "the attacker's draw takes every patient",
        on_data("msd", "msd"),
        ("has 2 patient(s)", "attacker's draw", "federation.attacker_patients=2", "takes 2", "leaves 0 patients"),
        _msd_of_two_cases,
    ),
]


# What a user mistypes on the command line, and what to run instead of a wrong folder.
CASES += [
    Case("--set key misspelt", with_set("federation.round=3"), ("--set federation.round=3", "did you mean federation.rounds")),
    Case("--set section misspelt", with_set("federatoin.rounds=3"), ("--set federatoin.rounds=3", "did you mean federation")),
    Case(
        "--set quoted number for an integer",
        with_set('federation.rounds="3"'),
        ('--set federation.rounds="3"', "takes an integer", "write federation.rounds=3"),
    ),
    Case("--set quoted boolean", with_set('defences.secagg.enabled="true"'), ("takes true or false", "enabled=true")),
    Case("--set value out of range is blamed on the --set", with_set("federation.rounds=0"), ("--set federation.rounds=0", "greater than")),
    Case("report of a missing folder", lambda p: ["report", str(p.root / "absent"), "-o", str(p.new_out / "r.html")], ("absent", "does not exist")),
    Case("report of an unfinished run", lambda p: ["report", str(p.run), "-o", str(p.new_out / "r.html")], ("without metrics.json", "--resume")),
    Case("show of a missing folder", lambda p: ["show", str(p.root / "absent")], ("absent", "does not exist")),
    Case(
        "show of a suite folder",
        lambda p: ["show", str(p.root / "suite")],
        ("a suite folder", "fl-mia report"),
        lambda p: ((p.root / "suite").mkdir(), (p.root / "suite" / "suite.json").write_text("{}")),
    ),
]



def deploy(*args: str) -> Callable[[Paths], list[str]]:
    """``fl-mia deploy`` of the tiny config: rejected before any SuperLink, workdir or run folder exists."""
    return lambda p: ["deploy", str(p.config), *args, "--runs-root", str(p.new_out), "--workdir", str(p.new_out / "work")]


def _sizes_per_hospital(p: Paths) -> None:
    p.config.write_text(tomli_w.dumps(tiny_raw(federation={"patients_per_hospital": [8, 10]})))


CASES += [
    Case("deploy --hospitals above the limit", deploy("--hospitals", "101"), ("--hospitals 101", "federation.num_hospitals", "100")),
    Case("deploy --hospitals 0", deploy("--hospitals", "0"), ("--hospitals 0", "federation.num_hospitals", "greater than")),
    Case(
        "deploy --hospitals beyond the sizes the config lists",
        deploy("--hospitals", "3"),
        ("--hospitals 3", "lists 2 sizes", "--set federation.patients_per_hospital=8"),
        _sizes_per_hospital,
    ),
]

def _cancer_becomes_liver(p: Paths) -> None:
    import nibabel as nib

    for file in (p.root / "msd" / "labelsTr").glob("*.nii.gz"):
        stored = nib.load(str(file))
        labels = np.asarray(stored.dataobj)
        nib.save(nib.Nifti1Image(np.where(labels == 2, 1, labels).astype(np.uint8), stored.affine), file)


def interrupted_run(folder: Path, raw: dict) -> None:
    """What a run killed after round 1 leaves: config, status 'running' of a dead process, checkpoint."""
    cfg = build_config(raw)
    folder.mkdir()
    write_toml(folder / "config.toml", cfg.to_toml_dict())
    set_status(folder, "running", pid=2**22 + 12345, host="elsewhere")
    checkpointer = Checkpointer(folder, config_fingerprint(cfg.to_toml_dict()))
    checkpointer.register("round_log", RoundLog(num_hospitals=2, total_rounds=2))
    checkpointer.register("client_manager", PartitionSeededClientManager(seed=0, directory={}))
    checkpointer.save(server_round=1, weights=[np.zeros(3, np.float32)], wall_time_s=1.0)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_with_one_line_naming_what_to_fix(case: Case, tmp_path: Path):
    raw = tiny_raw()
    config = tmp_path / "tiny.toml"
    config.write_text(tomli_w.dumps(raw))
    paths = Paths(root=tmp_path, config=config, run=tmp_path / "run", new_out=tmp_path / "new_run")
    interrupted_run(paths.run, raw)
    case.prepare(paths)
    before = {p: p.stat().st_mtime_ns for p in paths.run.iterdir()}

    result = CliRunner().invoke(app, case.args(paths))

    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    missing = [fragment for fragment in case.expect if fragment not in lines[0]]
    assert not missing, f"{lines[0]!r} lacks {missing}"
    assert not paths.new_out.exists()  # nothing is created for rejected input
    assert {p: p.stat().st_mtime_ns for p in paths.run.iterdir()} == before  # the earlier run is untouched


def test_catalogue_has_at_least_sixty_kinds():
    assert len(CASES) >= 60

