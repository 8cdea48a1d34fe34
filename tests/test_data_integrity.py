"""Volume datasets checked as nnU-Net checks them, the intensity scheme taken from the dataset,
and the dataset's own patient ids in what a user reads (CSV files, previews, ``inspect``)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital, patient_names
from fl_mia.data import pool as pool_module
from fl_mia.data.overview import slice_title, summarize
from fl_mia.data.sources.folder import case_key
from fl_mia.referee.candidates import with_patient_names
from fl_mia.report.collect import candidate_truth
from tests.conftest import tiny_raw
from tests.disk_datasets import write_folder, write_msd, write_nnunet
from tests.test_data_sources import disk_cfg


def _relabel(root, case: str, *, data=None, affine=None) -> None:
    file = root / "labelsTr" / f"{case}.nii.gz"
    stored = nib.load(str(file))
    values = np.asarray(stored.dataobj) if data is None else data(np.asarray(stored.dataobj))
    nib.save(nib.Nifti1Image(values, stored.affine if affine is None else affine), file)


def test_a_label_with_a_trailing_axis_of_one_is_squeezed(tmp_path):
    root = write_msd(tmp_path / "msd", cases=6)
    plain = pool_module.load_pool(disk_cfg("msd", root, tmp_path / "a").data)
    _relabel(root, "liver_2", data=lambda labels: labels[..., None])
    squeezed = pool_module.load_pool(disk_cfg("msd", root, tmp_path / "b").data)
    assert np.array_equal(np.asarray(plain.labels), np.asarray(squeezed.labels))


def test_an_nnunet_channel_file_with_a_trailing_axis_of_one_is_squeezed(tmp_path):
    root = write_nnunet(tmp_path / "nn", cases=8)
    plain = pool_module.load_pool(disk_cfg("nnunet", root, tmp_path / "a").data)
    file = root / "imagesTr" / "case002_0000.nii.gz"
    stored = nib.load(str(file))
    nib.save(nib.Nifti1Image(np.asarray(stored.dataobj)[..., None], stored.affine), file)
    squeezed = pool_module.load_pool(disk_cfg("nnunet", root, tmp_path / "b").data)
    assert np.array_equal(np.asarray(plain.images), np.asarray(squeezed.images))


def test_check_geometry_false_accepts_a_label_in_another_affine(tmp_path):
    root = write_msd(tmp_path / "msd", cases=6)
    _relabel(root, "liver_2", affine=np.diag([0.8, 0.8, 2.0, 1.0]))
    with pytest.raises(ValueError, match="spacing"):
        pool_module.load_pool(disk_cfg("msd", root, tmp_path / "a").data)
    pool = pool_module.load_pool(disk_cfg("msd", root, tmp_path / "b", data={"msd": {"check_geometry": False}}).data)
    assert pool.cases == 6


def test_geometry_within_tolerance_passes(tmp_path):
    root = write_msd(tmp_path / "msd", cases=6)
    _relabel(root, "liver_2", affine=np.diag([0.80004, 0.8, 2.5, 1.0]))  # rounding noise of a converter
    assert pool_module.load_pool(disk_cfg("msd", root, tmp_path / "a").data).cases == 6


def test_a_missing_file_fails_before_the_cache_key_stats_it(tmp_path, monkeypatch):
    root = write_msd(tmp_path / "msd", cases=6)
    (root / "labelsTr" / "liver_3.nii.gz").unlink()
    monkeypatch.setattr(pool_module, "cache_key", lambda *a, **k: pytest.fail("cache key computed before the checks"))
    with pytest.raises(ValueError, match=r"training entry 3 \(label\) lists .*liver_3.nii.gz, which does not exist"):
        pool_module.load_pool(disk_cfg("msd", root, tmp_path / "cache").data)


def test_the_intensity_scheme_follows_the_declared_modality(tmp_path):
    ct_root = write_msd(tmp_path / "ct", cases=6)
    auto = pool_module.load_pool(disk_cfg("msd", ct_root, tmp_path / "a").data)
    explicit = pool_module.load_pool(disk_cfg("msd", ct_root, tmp_path / "b", data={"normalize": "ct"}).data)
    assert (auto.normalize, explicit.normalize) == ("ct", "ct")
    assert "modality" in auto.normalize_origin and explicit.normalize_origin == "data.normalize"
    assert np.array_equal(np.asarray(auto.images), np.asarray(explicit.images))

    mri_root = write_nnunet(tmp_path / "mr", cases=8)  # channel_names MR0
    mri = pool_module.load_pool(disk_cfg("nnunet", mri_root, tmp_path / "c").data)
    assert mri.normalize == "zscore" and "channel_names" in mri.normalize_origin and "not CT" in mri.normalize_origin
    forced = pool_module.load_pool(disk_cfg("nnunet", mri_root, tmp_path / "d", data={"normalize": "ct"}).data)
    assert forced.normalize == "ct"


def test_the_msd_config_no_longer_forces_ct():
    text = open("configs/data/msd.toml").read()
    assert 'normalize = "ct"' not in text


def test_the_phantom_under_auto_is_the_phantom_under_zscore():
    auto = build_config(tiny_raw(data={"image_size": 32}))
    zscore = build_config(tiny_raw(data={"image_size": 32, "normalize": "zscore"}))
    assert auto.data.normalize == "auto"
    a, z = (build_hospital(c.data, c.federation, 0, seed=c.seed) for c in (auto, zscore))
    assert np.array_equal(a.train.images, z.train.images)


def test_inspect_shows_the_scheme_and_the_manifests_sites(tmp_path):
    root = write_msd(tmp_path / "msd")
    manifest = tmp_path / "sites.csv"
    manifest.write_text("case,site\n" + "".join(f"liver_{i},{'north' if i < 6 else 'south'}\n" for i in range(12)))
    cfg = disk_cfg("msd", root, tmp_path / "cache", federation={"partition": "manifest", "manifest": str(manifest), "attacker_patients": 0})
    rows = dict(summarize(cfg.data, cfg.federation, seed=cfg.seed).overview)
    assert rows["sites"] == f"north (6 p), south (6 p) (from {manifest})"
    assert rows["intensity scheme"].startswith("ct (") and "modality" in rows["intensity scheme"]


def test_folder_masks_with_a_suffix_pair_through_the_mask_glob(tmp_path):
    root = write_folder(tmp_path / "kvasir", images=12)
    for mask in (root / "masks").glob("*.png"):
        mask.rename(mask.with_name(mask.stem + "_mask.png"))
    assert case_key(root / "masks" / "p01_img002_mask.png", "masks/*_mask.png") == "p01_img002"
    assert case_key(root / "images" / "p01_img002.png", "images/*") == "p01_img002"
    cfg = disk_cfg("folder", root, tmp_path / "cache", data={"folder": {"mask_glob": "masks/*_mask.png"}})
    assert pool_module.load_pool(cfg.data).patients[0] == "p00_img000"


def test_run_outputs_name_the_datasets_patients():
    rows = [{"candidate": 0, "hospital": 1, "patient": 2, "image": 40}]
    assert with_patient_names(rows, ["case_000", "case_001", "case_023"])[0]["patient"] == "case_023"
    assert with_patient_names(rows, None) == rows  # the phantom: numbered patients stay numbers


def test_preview_titles_name_the_datasets_patients():
    assert slice_title(1, 2, ["case_000", "case_001", "case_023"]) == "h1 case_023"
    assert slice_title(1, 17, None) == "h1 p17"  # the phantom, as before


def test_patient_names_are_the_pool_ids(tmp_path):
    root = write_msd(tmp_path / "msd", cases=6)
    cfg = disk_cfg("msd", root, tmp_path / "cache")
    assert patient_names(cfg.data) == [f"liver_{i}" for i in range(6)]
    assert patient_names(build_config(tiny_raw()).data) is None


def test_the_report_reads_candidates_named_by_the_dataset(tmp_path):
    np.save(tmp_path / "keep.npy", np.array([[True, False], [False, True], [False, False]]))
    with open(tmp_path / "candidates.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["candidate", "hospital", "patient", "image"], [0, 0, "p14", 3], [1, 1, "p02", 7], [2, 1, "p14", 9]])
    members, keys = candidate_truth(tmp_path)
    assert members.tolist() == [True, True, False]
    assert keys[0] != keys[2]  # same patient id, different hospitals: different units
    assert len(set(keys.tolist())) == 3


@pytest.mark.slow
def test_a_real_run_on_disk_data_writes_case_ids(tmp_path):
    """keep_patients.csv and candidates.csv of a short run carry liver_N, not pool indices."""
    root = write_msd(tmp_path / "msd")
    config = tmp_path / "run.toml"
    import tomli_w

    raw = tiny_raw(data={"source": "msd", "path": str(root), "cache_dir": str(tmp_path / "cache"), "image_size": 32},
                   federation={"num_hospitals": 2, "patients_per_hospital": 4, "attacker_patients": 2, "rounds": 1})
    config.write_text(tomli_w.dumps(raw))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for name in ("candidates.csv", "keep_patients.csv"):
        with open(tmp_path / "run" / name) as handle:
            patients = {row["patient"] for row in csv.DictReader(handle)}
        assert patients and all(p.startswith("liver_") for p in patients), (name, patients)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())
