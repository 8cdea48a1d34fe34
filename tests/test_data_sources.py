"""Datasets from disk: readers, slicing and normalisation, patient-level partitions, cache."""

from __future__ import annotations

import numpy as np
import pytest

from fl_mia.config.loading import build_config
from fl_mia.data import build_attacker_population, build_hospital, input_channels
from fl_mia.data import pool as pool_module
from fl_mia.data.disk import assignment
import fl_mia.data.sources.volumes_io as volumes_io
from fl_mia.data.sources.base import DataError
from fl_mia.models import build_experiment_model
from tests.conftest import tiny_raw
from tests.disk_datasets import write_folder, write_msd, write_nnunet, write_npz


def disk_cfg(source: str, path, cache, *, data=None, federation=None, seed: int = 0):
    return build_config(
        tiny_raw(
            seed=seed,
            data={"source": source, "path": str(path), "cache_dir": str(cache), "image_size": 32, **(data or {})},
            federation={"num_hospitals": 2, "patients_per_hospital": 4, "attacker_patients": 2, **(federation or {})},
        )
    )


def all_splits(cfg):
    hospitals = [build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed) for k in range(cfg.federation.num_hospitals)]
    return [s for h in hospitals for s in (h.train, h.heldout, h.test)] + [build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed)]


@pytest.fixture(scope="module")
def msd_dir(tmp_path_factory):
    return write_msd(tmp_path_factory.mktemp("msd"))


def test_msd_volumes_become_slices_of_their_patients(msd_dir, tmp_path):
    cfg = disk_cfg("msd", msd_dir, tmp_path, data={"msd": {"empty_slice_fraction": 0.0}})
    pool = pool_module.load_pool(cfg.data)
    assert pool.patients == [f"liver_{i}" for i in range(12)]
    assert pool.label_names == ["background", "liver", "cancer"]
    # Liver spans slices 2..7 of 10 along z (axis 2): 6 foreground slices per case, no empty one kept.
    assert len(pool) == 12 * 6
    assert pool.images.shape == (72, 1, 32, 32)
    assert set(np.unique(pool.labels)) == {0, 1, 2}
    assert pool.spacings[0] == pytest.approx([0.8, 0.8, 2.5])


def test_empty_slice_share_is_kept(msd_dir, tmp_path):
    cfg = disk_cfg("msd", msd_dir, tmp_path, data={"msd": {"empty_slice_fraction": 0.5}})
    # 4 empty slices per case, half of them kept.
    assert len(pool_module.load_pool(cfg.data)) == 12 * (6 + 2)


def test_ct_normalisation_standardises_foreground(tmp_path):
    root = write_msd(tmp_path / "square", cases=6, shape=(32, 32, 10))  # no resizing, which would smooth the noise
    raw = pool_module.load_pool(disk_cfg("msd", root, tmp_path / "a", data={"normalize": "none"}).data)
    ct = pool_module.load_pool(disk_cfg("msd", root, tmp_path / "b", data={"normalize": "ct"}).data)
    foreground = np.asarray(ct.labels) > 0
    values = np.asarray(ct.images)[:, 0][foreground]
    # Clipping at the 0.5/99.5 percentiles moves the moments only slightly off 0 and 1.
    assert abs(values.mean()) < 0.1 and 0.85 < values.std() < 1.1
    assert np.asarray(raw.images)[:, 0][foreground].mean() > 20  # raw values were far from standardised


def test_task_masks_follow_the_dataset_labels(msd_dir, tmp_path):
    lesion = np.concatenate([s.masks for s in all_splits(disk_cfg("msd", msd_dir, tmp_path))])
    organ_lesion = np.concatenate([s.masks for s in all_splits(disk_cfg("msd", msd_dir, tmp_path, data={"task": "organ_lesion"}))])
    assert set(np.unique(lesion)) == {0, 1}
    assert set(np.unique(organ_lesion)) == {0, 1, 2}
    assert np.array_equal(organ_lesion == 2, lesion == 1)  # the last label (cancer) is the lesion


def test_multimodal_msd_sets_the_model_channels(tmp_path):
    root = write_msd(tmp_path / "brats", cases=10, modalities=2)
    cfg = disk_cfg("msd", root, tmp_path / "cache", data={"normalize": "zscore"})
    assert build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train.images.shape[1] == 2
    assert input_channels(cfg.data) == 2
    model = build_experiment_model(cfg.model, cfg.data)
    assert next(model.parameters()).shape[1] == 2


def test_nnunet_reads_one_file_per_channel(tmp_path):
    root = write_nnunet(tmp_path / "nn", cases=10, channels=2)
    cfg = disk_cfg("nnunet", root, tmp_path / "cache", data={"nnunet": {"empty_slice_fraction": 0.0}})
    pool = pool_module.load_pool(cfg.data)
    assert pool.channels == 2 and pool.patients == [f"case{i:03d}" for i in range(10)]
    assert pool.label_names == ["background", "liver", "tumour"]


def test_folder_groups_images_by_patient_regex(tmp_path):
    root = write_folder(tmp_path / "kvasir", images=16)
    cfg = disk_cfg("folder", root, tmp_path / "cache", data={"patient_regex": r"^(p\d+)_"})
    pool = pool_module.load_pool(cfg.data)
    assert len(pool) == 16 and pool.channels == 3
    assert len(pool.patients) == 8  # two images per patient
    assert set(np.unique(pool.labels)) == {0, 1}  # 0/255 masks are binary
    assert input_channels(cfg.data) == 3


def test_folder_palette_masks(tmp_path):
    from PIL import Image

    root = write_folder(tmp_path / "pal", images=4)
    for mask_file in (root / "masks").glob("*.png"):
        grey = np.asarray(Image.open(mask_file))
        colour = np.zeros((*grey.shape, 3), np.uint8)
        colour[grey > 0] = [255, 0, 0]
        Image.fromarray(colour).save(mask_file)
    cfg = disk_cfg("folder", root, tmp_path / "cache", data={"labels": {"background": [0, 0, 0], "polyp": [255, 0, 0]}})
    assert set(np.unique(pool_module.load_pool(cfg.data).labels)) == {0, 1}


def test_npz_sites_make_hospitals_by_manifest(tmp_path):
    path = write_npz(tmp_path / "d.npz", patients=12, sites=3)
    cfg = disk_cfg("npz", path, tmp_path / "cache", federation={"num_hospitals": 3, "partition": "manifest", "attacker_patients": 0})
    pool = pool_module.load_pool(cfg.data)
    hospitals, attacker = assignment(cfg.data, cfg.federation, seed=cfg.seed)
    for k, members in enumerate(hospitals):
        assert {pool.patient_sites[p] for p in members} == {f"site{k}"}
        assert len(members) == 4
    assert len(attacker) == 0


def test_site_manifest_gives_each_hospital_exactly_its_sites_patients(msd_dir, tmp_path):
    manifest = tmp_path / "sites.csv"
    sites = {f"liver_{i}": ("attacker" if i < 2 else f"hospital_{'ab'[i % 2]}") for i in range(12)}
    manifest.write_text("case,site\n" + "".join(f"{case},{site}\n" for case, site in sites.items()))
    cfg = disk_cfg("msd", msd_dir, tmp_path / "cache", federation={"partition": "manifest", "manifest": str(manifest)})
    pool = pool_module.load_pool(cfg.data)
    for k, site in enumerate(["hospital_a", "hospital_b"]):
        hospital = build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed)
        got = {pool.patients[p] for s in (hospital.train, hospital.heldout, hospital.test) for p in s.patient_ids}
        assert got == {case for case, s in sites.items() if s == site}
    attacker = build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed)
    assert {pool.patients[p] for p in attacker.patient_ids} == {"liver_0", "liver_1"}


@pytest.mark.parametrize("partition", ["iid", "size_skew", "dirichlet"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_split_ever_cuts_a_patient(msd_dir, tmp_path, partition, seed):
    cfg = disk_cfg(
        "msd", msd_dir, tmp_path, seed=seed,
        data={"msd": {"empty_slice_fraction": 0.5}},
        federation={"partition": partition, "patients_per_hospital": [4, 5], "dirichlet_alpha": 1.0},
    )
    splits = all_splits(cfg)
    owners = [set(s.patient_ids.tolist()) for s in splits]
    for i, a in enumerate(owners):
        for b in owners[i + 1 :]:
            assert not a & b
    ids = np.concatenate([s.image_ids for s in splits])
    assert len(ids) == len(set(ids.tolist()))
    pool = pool_module.load_pool(cfg.data)
    for s in splits:  # every slice of a split's patients is in that split
        assert len(s) == np.isin(pool.slice_patient, s.patient_ids).sum()


def test_size_skew_gives_the_listed_sizes(msd_dir, tmp_path):
    cfg = disk_cfg("msd", msd_dir, tmp_path, federation={"partition": "size_skew", "patients_per_hospital": [4, 6]})
    assert [len(h) for h in assignment(cfg.data, cfg.federation, seed=cfg.seed)[0]] == [4, 6]


def test_dirichlet_skews_lesion_strata(msd_dir, tmp_path):
    from fl_mia.data.partition import lesion_strata

    strata = lesion_strata(np.array([0, 0, 5, 10, 20, 30, 40, 50.0]))
    assert strata[:2].tolist() == [0, 0] and strata[2] == 1 and strata[-1] == 3
    cfg = disk_cfg("msd", msd_dir, tmp_path, federation={"partition": "dirichlet", "dirichlet_alpha": 0.3})
    again = disk_cfg("msd", msd_dir, tmp_path, federation={"partition": "dirichlet", "dirichlet_alpha": 0.3})
    assert [h.tolist() for h in assignment(cfg.data, cfg.federation, seed=cfg.seed)[0]] == [h.tolist() for h in assignment(again.data, again.federation, seed=again.seed)[0]]


def test_second_load_reads_the_cache_not_the_volumes(msd_dir, tmp_path, monkeypatch):
    decodes = []
    real = volumes_io.load_nifti
    monkeypatch.setattr(volumes_io, "load_nifti", lambda path: decodes.append(path) or real(path))
    cfg = disk_cfg("msd", msd_dir, tmp_path)
    first = pool_module.load_pool(cfg.data)
    assert len(decodes) == 24  # 12 images + 12 masks
    second = pool_module.load_pool(cfg.data)
    assert len(decodes) == 24
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.images, second.images)
    # Another preprocessing setting is another cache entry.
    pool_module.load_pool(disk_cfg("msd", msd_dir, tmp_path, data={"image_size": 64}).data)
    assert len(decodes) == 48


def test_editing_a_file_invalidates_the_cache(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    cfg = disk_cfg("npz", path, tmp_path / "cache")
    key = pool_module.cache_key(cfg.data, [path])
    write_npz(path, seed=1)
    import os

    os.utime(path, ns=(1, 1))
    assert pool_module.cache_key(cfg.data, [path]) != key


def test_too_few_patients_is_one_line(msd_dir, tmp_path):
    cfg = disk_cfg("msd", msd_dir, tmp_path, federation={"num_hospitals": 4, "attacker_patients": 2})
    with pytest.raises(DataError, match="leaves 10 patients for 4 hospitals, which need at least 16"):
        build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)
