"""Synthetic "hospital phantom" scans: body, organ and lesions, with their masks.

A patient is a small 3-D anatomy (an organ ellipsoid and spherical lesions inside a body
ellipse); its slices are rendered by a hospital's scanner, which has its own acquisition
shift (intensity scale and offset, contrast, noise, blur, field of view). Every slice draws
fresh texture and noise, so no two images are equal, and everything is a pure function of
the seeds passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

BACKGROUND, ORGAN, LESION = 0, 1, 2


@dataclass(frozen=True)
class ScannerProfile:
    """Acquisition settings of one hospital's scanner."""

    intensity_scale: float
    intensity_offset: float
    gamma: float
    noise_std: float
    blur_sigma: float
    field_of_view: float

    @classmethod
    def neutral(cls) -> "ScannerProfile":
        return cls(1.0, 0.0, 1.0, 0.04, 0.6, 1.0)

    @classmethod
    def sample(cls, rng: np.random.Generator, *, strength: float) -> "ScannerProfile":
        """A scanner drawn around the neutral one; ``strength`` scales every shift."""
        s = strength
        return cls(
            intensity_scale=float(np.exp(rng.uniform(-0.35, 0.35) * s)),
            intensity_offset=float(rng.uniform(-0.15, 0.15) * s),
            gamma=float(np.exp(rng.uniform(-0.4, 0.4) * s)),
            noise_std=float(0.04 * np.exp(rng.uniform(-0.6, 0.9) * s)),
            blur_sigma=float(max(0.0, 0.6 + rng.uniform(-0.5, 1.0) * s)),
            field_of_view=float(np.exp(rng.uniform(-0.2, 0.2) * s)),
        )


@dataclass(frozen=True)
class Lesion:
    center: tuple[float, float, float]  # x, y in body coordinates, z in slice units
    radius: float
    contrast: float


@dataclass(frozen=True)
class PatientAnatomy:
    """The 3-D shape of one patient; slices are cross-sections at z = 0, 1, 2, ..."""

    body_axes: tuple[float, float]
    organ_center: tuple[float, float]
    organ_axes: tuple[float, float]
    organ_angle: float
    organ_extent: float  # half-height of the organ ellipsoid along z, in slices
    body_intensity: float
    organ_intensity: float
    lesions: tuple[Lesion, ...]

    @classmethod
    def sample(cls, rng: np.random.Generator, *, lesion_probability: float, num_slices: int) -> "PatientAnatomy":
        organ_axes = (rng.uniform(0.25, 0.42), rng.uniform(0.18, 0.32))
        organ_center = (rng.uniform(-0.18, 0.18), rng.uniform(-0.12, 0.12))
        organ_angle = rng.uniform(0, np.pi)
        middle = (num_slices - 1) / 2
        lesions: list[Lesion] = []
        if rng.random() < lesion_probability:
            for _ in range(int(rng.integers(1, 4))):
                # Lesions sit inside the organ ellipse (polar sample in its frame).
                radius_in_organ = 0.65 * np.sqrt(rng.random())
                angle = rng.uniform(0, 2 * np.pi)
                local = np.array([np.cos(angle) * organ_axes[0], np.sin(angle) * organ_axes[1]]) * radius_in_organ
                rotation = np.array(
                    [[np.cos(organ_angle), -np.sin(organ_angle)], [np.sin(organ_angle), np.cos(organ_angle)]]
                )
                x, y = rotation @ local + np.array(organ_center)
                z = middle + rng.uniform(-0.6, 0.6) * max(1.0, num_slices / 2)
                lesions.append(
                    Lesion(
                        center=(float(x), float(y), float(z)),
                        radius=float(rng.uniform(0.08, 0.16)),
                        contrast=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.18, 0.35)),
                    )
                )
        return cls(
            body_axes=(float(rng.uniform(0.7, 0.9)), float(rng.uniform(0.55, 0.75))),
            organ_center=(float(organ_center[0]), float(organ_center[1])),
            organ_axes=(float(organ_axes[0]), float(organ_axes[1])),
            organ_angle=float(organ_angle),
            organ_extent=float(max(1.5, num_slices * rng.uniform(0.8, 1.4))),
            body_intensity=float(rng.uniform(0.25, 0.35)),
            organ_intensity=float(rng.uniform(0.5, 0.6)),
            lesions=tuple(lesions),
        )


def render_slice(
    anatomy: PatientAnatomy,
    slice_index: int,
    num_slices: int,
    scanner: ScannerProfile,
    *,
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one slice; returns ``(image float32 [size, size], labels uint8 [size, size])``.

    Labels are 0 background, 1 organ, 2 lesion (lesion wins over organ).
    """
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float64) / scanner.field_of_view
    x, y = np.meshgrid(coords, coords, indexing="xy")
    z = slice_index - (num_slices - 1) / 2
    # The organ's cross-section shrinks away from its middle slice (an ellipsoid in 3-D).
    organ_scale = np.sqrt(max(0.05, 1.0 - (z / anatomy.organ_extent) ** 2))

    body = (x / anatomy.body_axes[0]) ** 2 + (y / anatomy.body_axes[1]) ** 2 <= 1.0
    cos_a, sin_a = np.cos(anatomy.organ_angle), np.sin(anatomy.organ_angle)
    dx, dy = x - anatomy.organ_center[0], y - anatomy.organ_center[1]
    u, v = cos_a * dx + sin_a * dy, -sin_a * dx + cos_a * dy
    organ = (u / (anatomy.organ_axes[0] * organ_scale)) ** 2 + (v / (anatomy.organ_axes[1] * organ_scale)) ** 2 <= 1.0
    organ &= body

    image = np.zeros((size, size))
    image[body] = anatomy.body_intensity
    image[organ] = anatomy.organ_intensity
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[organ] = ORGAN

    slice_position = slice_index
    for lesion in anatomy.lesions:
        cx, cy, cz = lesion.center
        # A sphere's cross-section: lesions appear and vanish across neighbouring slices.
        squared = lesion.radius**2 - ((slice_position - cz) * 0.04) ** 2
        if squared <= (0.02) ** 2:
            continue
        inside = ((x - cx) ** 2 + (y - cy) ** 2 <= squared) & organ
        image[inside] = anatomy.organ_intensity + lesion.contrast
        labels[inside] = LESION

    # Tissue texture: smooth random field, different for every slice.
    texture = gaussian_filter(rng.standard_normal((size, size)), sigma=size / 24)
    texture /= texture.std() + 1e-8
    image = image + 0.03 * texture * body

    if scanner.blur_sigma > 0:
        image = gaussian_filter(image, sigma=scanner.blur_sigma)
    image = np.clip(image, 0.0, None) ** scanner.gamma
    image = scanner.intensity_scale * image + scanner.intensity_offset
    image = image + scanner.noise_std * rng.standard_normal((size, size))
    return image.astype(np.float32), labels


def render_patient(
    anatomy: PatientAnatomy,
    scanner: ScannerProfile,
    *,
    num_slices: int,
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """All slices of one patient: ``(images [S, size, size], labels [S, size, size])``."""
    slices = [render_slice(anatomy, s, num_slices, scanner, size=size, rng=rng) for s in range(num_slices)]
    return np.stack([s[0] for s in slices]), np.stack([s[1] for s in slices])
