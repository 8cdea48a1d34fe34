import hashlib

import numpy as np

from fl_mia.config.loading import build_config
from fl_mia.data import build_attacker_population, build_hospital
from fl_mia.data.phantom import LESION, ORGAN, PatientAnatomy, ScannerProfile, render_slice
from tests.conftest import tiny_raw


def all_hospitals(cfg):
    return [build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed) for k in range(cfg.federation.num_hospitals)]


def test_every_image_is_unique_across_hospitals_and_attacker(tiny_cfg):
    splits = [s for h in all_hospitals(tiny_cfg) for s in (h.train, h.heldout, h.test)] + [build_attacker_population(tiny_cfg.data, tiny_cfg.federation, seed=tiny_cfg.seed)]
    digests = [hashlib.sha1(img.tobytes()).hexdigest() for s in splits for img in s.images]
    ids = np.concatenate([s.image_ids for s in splits])
    assert len(set(digests)) == len(digests)
    assert len(set(ids.tolist())) == len(ids)


def test_patients_never_straddle_splits_hospitals_or_attacker(tiny_cfg):
    owners = []
    for hospital in all_hospitals(tiny_cfg):
        for split in (hospital.train, hospital.heldout, hospital.test):
            assert len(split) > 0
            owners.append(set(split.patient_ids.tolist()))
    owners.append(set(build_attacker_population(tiny_cfg.data, tiny_cfg.federation, seed=tiny_cfg.seed).patient_ids.tolist()))
    for i in range(len(owners)):
        for j in range(i + 1, len(owners)):
            assert not owners[i] & owners[j]
    # every patient contributes all of its slices to one split
    slices = tiny_cfg.data.phantom.slices_per_patient
    for hospital in all_hospitals(tiny_cfg):
        _, counts = np.unique(hospital.train.patient_ids, return_counts=True)
        assert (counts == slices).all()


def test_reproducible_from_seed_and_different_for_another_seed(tiny_cfg):
    first = build_hospital(tiny_cfg.data, tiny_cfg.federation, 1, seed=tiny_cfg.seed)
    same, reseeded = build_config(tiny_raw()), build_config(tiny_raw(seed=1))
    again = build_hospital(same.data, same.federation, 1, seed=same.seed)
    other = build_hospital(reseeded.data, reseeded.federation, 1, seed=reseeded.seed)
    assert np.array_equal(first.train.images, again.train.images)
    assert not np.array_equal(first.train.images[:1], other.train.images[:1])


def test_hospital_shift_is_visible_in_intensity_statistics():
    cfg = build_config(tiny_raw(data={"normalize": "none", "image_size": 32, "phantom": {"num_patients": 200}},
                                federation={"num_hospitals": 4, "patients_per_hospital": 20}))
    means = [build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed).train.images.mean(axis=(1, 2, 3)) for k in range(4)]
    between = np.var([m.mean() for m in means])
    within = np.mean([m.var() / len(m) for m in means])  # variance of each hospital's mean
    assert between > 10 * within
    # without shift the hospitals look alike
    flat = build_config(tiny_raw(data={"normalize": "none", "image_size": 32, "phantom": {"num_patients": 200, "shift_strength": 0.0}},
                                 federation={"num_hospitals": 4, "patients_per_hospital": 20}))
    flat_means = [build_hospital(flat.data, flat.federation, k, seed=flat.seed).train.images.mean() for k in range(4)]
    assert np.var(flat_means) < between / 10


def test_masks_match_images():
    rng = np.random.default_rng(3)
    scanner = ScannerProfile(1.0, 0.0, 1.0, 0.0, 0.0, 1.0)  # noiseless, unblurred
    found_lesion = False
    for _ in range(20):
        anatomy = PatientAnatomy.sample(rng, lesion_probability=1.0, num_slices=1)
        image, labels = render_slice(anatomy, 0, 1, scanner, size=64, rng=rng)
        organ = labels == ORGAN
        assert organ.any()
        assert abs(image[organ].mean() - anatomy.organ_intensity) < 0.05
        assert image[labels == 0].mean() < anatomy.organ_intensity - 0.1
        lesion = labels == LESION
        if lesion.any():
            found_lesion = True
            # lesions are brighter or darker than the organ by at least 0.18 (texture std 0.03)
            assert np.median(np.abs(image[lesion] - anatomy.organ_intensity)) > 0.1
    assert found_lesion


def test_tasks_give_binary_and_three_class_masks(tiny_cfg):
    binary = build_hospital(tiny_cfg.data, tiny_cfg.federation, 0, seed=tiny_cfg.seed).train.masks
    assert set(np.unique(binary)) <= {0, 1} and binary.max() == 1
    organ_lesion = build_config(tiny_raw(data={"task": "organ_lesion", "image_size": 32}))
    multi = build_hospital(organ_lesion.data, organ_lesion.federation, 0, seed=organ_lesion.seed).train.masks
    assert set(np.unique(multi)) == {0, 1, 2}


def test_label_skew_spreads_lesion_prevalence():
    cfg = build_config(tiny_raw(data={"image_size": 32, "phantom": {"num_patients": 400, "slices_per_patient": 1}},
                                federation={"num_hospitals": 2, "patients_per_hospital": 150,
                                            "attacker_patients": 0, "label_skew": 1.0}))
    rates = [(build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed).train.masks.reshape(75, -1).max(1) > 0).mean() for k in range(2)]
    assert rates[1] - rates[0] > 0.3


def test_attacker_population_size(tiny_cfg):
    attacker = build_attacker_population(tiny_cfg.data, tiny_cfg.federation, seed=tiny_cfg.seed)
    assert len(attacker) == tiny_cfg.federation.attacker_patients * tiny_cfg.data.phantom.slices_per_patient
