"""A deterministic, BraTS-like synthetic dataset, so the whole pipeline runs without patient data.

The archive it writes has the exact layout of the BraTS 2021 Kaggle release
(``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``), so the
pipeline extracts and reads it through the same code path as the real data.

The images are not noise with a blob in it: each case is a skull-stripped head
with an irregular brain outline, cortex with sulci, white matter, ventricles,
deep grey matter and an interhemispheric fissure, a glioma with mass effect
(HGG-like: edema, enhancing rim, necrosis; LGG-like: non-enhancing core and
edema), per-modality tissue contrasts, partial-volume blur, a bias field,
Rician noise and a per-scanner intensity scale. A segmentation model has to
learn something multi-modal to solve it, so a pipeline bug that silently
scrambles modalities or labels shows up as a drop in Dice.

Every case draws from its own generator seeded by ``(seed, index)``: case ``k``
is the same whatever ``cases`` is, and the archive is byte-identical from run
to run (fixed zip timestamps and attributes, gzip ``mtime=0``, no BLAS in the
arithmetic). Identity across machines or library versions is likely but not
promised: numpy's SIMD maths and zlib's deflate may differ in the last bit.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from glioseg.atomic import atomic_path
from glioseg.errors import GliosegError

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Values of :attr:`SyntheticCase.tissue`: the healthy anatomy under the tumour,
#: kept so tests and figures can compare tumour against normal tissue.
TISSUE_LABELS: dict[str, int] = {"background": 0, "csf": 1, "gm": 2, "wm": 3}

# Internal tissue classes: deep grey matter and ventricles get their own
# intensities but are reported as GM and CSF.
_BG, _CSF, _GM, _WM, _DGM, _VENT = 0, 1, 2, 3, 4, 5
_TISSUE_OUT = np.array([0, 1, 2, 3, 2, 1], dtype=np.uint8)

# Piecewise-constant tissue intensities before blur, bias, noise and scaling,
# roughly proportional to real 1.5-3 T contrasts. Columns are the internal
# classes above, then the tumour compartments.
_TABLE_KEYS = ("csf", "gm", "wm", "dgm", "vent", "edema", "necrosis", "enhancing", "nonenh")
_INTENSITY: dict[str, dict[str, float]] = {
    #           CSF   GM    WM    DGM   VENT  edema necro  enh  non-enh core (LGG)
    "t1":    dict(zip(_TABLE_KEYS, (0.22, 0.55, 0.80, 0.62, 0.20, 0.60, 0.30, 0.55, 0.45))),
    "t1ce":  dict(zip(_TABLE_KEYS, (0.20, 0.52, 0.72, 0.58, 0.18, 0.55, 0.24, 1.15, 0.42))),
    "t2":    dict(zip(_TABLE_KEYS, (1.00, 0.55, 0.38, 0.48, 1.00, 0.78, 0.95, 0.62, 0.85))),
    "flair": dict(zip(_TABLE_KEYS, (0.10, 0.58, 0.42, 0.52, 0.08, 0.95, 0.40, 0.72, 0.82))),
}


@dataclass(frozen=True)
class SyntheticSpec:
    """What to synthesise; the defaults match the ``synthetic`` config section.

    ``lgg_fraction`` is the share of LGG-like cases (no enhancing tumour, so
    label 4 absent) that makes the ET region empty in some cases, as in real
    BraTS, which is where Dice conventions for empty masks matter.
    """

    cases: int = 20
    shape: tuple[int, int, int] = (96, 96, 64)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    lgg_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        # Configs arrive as YAML lists; normalise so specs compare and hash equal.
        try:
            shape = tuple(int(s) for s in self.shape)
            spacing = tuple(float(s) for s in self.spacing)
        except (TypeError, ValueError):
            raise GliosegError(
                f"synthetic shape/spacing must be three numbers, got {self.shape!r} / {self.spacing!r}"
            ) from None
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        if len(shape) != 3 or len(spacing) != 3:
            raise GliosegError(f"synthetic shape and spacing need three values each, got {shape} and {spacing}")
        if min(shape) < 16:
            raise GliosegError(
                f"synthetic shape {shape} is too small to hold a brain", hint="use at least 16 voxels per axis"
            )
        if min(spacing) <= 0:
            raise GliosegError(f"synthetic spacing {spacing} must be positive")
        if self.cases < 0:
            raise GliosegError(f"synthetic cases must be >= 0, got {self.cases}")
        if not 0.0 <= self.lgg_fraction <= 1.0:
            raise GliosegError(f"synthetic lgg_fraction must lie in [0, 1], got {self.lgg_fraction}")


@dataclass(frozen=True)
class SyntheticCase:
    """One synthesised case; ``tissue`` (see :data:`TISSUE_LABELS`) is ground truth the archive does not carry."""

    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    grade: Literal["HGG", "LGG"]
    tissue: np.ndarray

    @property
    def brain_mask(self) -> np.ndarray:
        return self.tissue > 0


def case_id(index: int) -> str:
    """Kaggle BraTS 2021 case name: ``case_id(3) == "BraTS2021_00003"``."""
    if not 0 <= index <= 99999:
        raise ValueError(f"case index {index} does not fit the five-digit BraTS 2021 id")
    return f"BraTS2021_{index:05d}"


def lgg_count(spec: SyntheticSpec) -> int:
    """Number of LGG-like cases: ``cases * lgg_fraction`` rounded half up."""
    return _round_half_up(spec.cases * spec.lgg_fraction)


def grade_of(spec: SyntheticSpec, index: int) -> Literal["HGG", "LGG"]:
    """Grade of case ``index``, spread evenly over indices and independent of ``spec.cases``.

    Case ``k`` is LGG when the rounded LGG count steps up at ``k + 1``, so the
    first ``n`` cases always hold :func:`lgg_count` LGG cases for ``cases = n``.
    """
    f = spec.lgg_fraction
    return "LGG" if _round_half_up((index + 1) * f) > _round_half_up(index * f) else "HGG"


def spec_affine(spec: SyntheticSpec) -> np.ndarray:
    """Voxel-to-world (RAS, mm) affine: diagonal spacing, volume centre at the origin."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spec.spacing)
    affine[:3, 3] = -0.5 * (np.asarray(spec.shape) - 1) * np.asarray(spec.spacing)
    return affine


def synthesize_case(spec: SyntheticSpec, index: int) -> SyntheticCase:
    """Synthesise case ``index`` from the spec's shape, spacing, seed and the case's grade, never from ``cases``."""
    rng = np.random.default_rng([spec.seed, index])
    grade = grade_of(spec, index)
    shape = spec.shape
    spacing = np.asarray(spec.spacing)

    brain = _brain_geometry(rng, shape, spacing)
    tissue = _healthy_tissue(rng, shape, spacing, brain)
    seg, tissue = _tumour(rng, spec, index, grade, spacing, brain, tissue)

    mask = brain.mask
    sigma_pv = rng.uniform(0.5, 0.7)  # partial volume, in voxels
    texture = 1.0 + 0.03 * _smooth_field(rng, shape, _cells(shape, spacing, 12.0))
    tumour_texture = 1.0 + 0.10 * _smooth_field(rng, shape, _cells(shape, spacing, 8.0))
    images: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        table = {k: v * rng.uniform(0.95, 1.05) for k, v in _INTENSITY[modality].items()}
        lut = np.array([0.0, table["csf"], table["gm"], table["wm"], table["dgm"], table["vent"]], dtype=np.float32)
        img = lut[tissue] * texture
        for label, key in ((2, "edema"), (1, "nonenh" if grade == "LGG" else "necrosis"), (4, "enhancing")):
            region = seg == label
            img[region] = table[key] * tumour_texture[region]
        img = ndi.gaussian_filter(img, sigma_pv, truncate=3.0)
        img *= _bias_field(rng, shape, amplitude=rng.uniform(0.08, 0.2))
        scale = math.exp(rng.uniform(math.log(300.0), math.log(4000.0)))  # scanners differ
        noise_sd = rng.uniform(0.015, 0.035) * table["wm"]
        n1 = rng.standard_normal(shape, dtype=np.float32)
        n2 = rng.standard_normal(shape, dtype=np.float32)
        img = np.hypot(img + noise_sd * n1, noise_sd * n2) * scale  # Rician magnitude
        # Skull-stripped: exactly 0 outside the brain, >= 1 inside, so "nonzero" is the brain mask.
        img = np.where(mask, np.clip(np.rint(img), 1, 32767), 0).astype(np.int16)
        images[modality] = img

    return SyntheticCase(
        images=images,
        seg=seg,
        affine=spec_affine(spec),
        grade=grade,
        tissue=_TISSUE_OUT[tissue],
    )


def write_sample_archive(spec: SyntheticSpec, out_zip: str | Path) -> None:
    """Write ``spec`` as a BraTS 2021 Kaggle-layout zip, atomically and byte-reproducibly."""
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        # Everything stored (no deflate): the bytes then depend on zlib only through the gzip of each volume.
        _write_member(zf, "README.txt", _readme(spec).encode("utf-8"), zipfile.ZIP_STORED)
        for index in range(spec.cases):
            case = synthesize_case(spec, index)
            cid = case_id(index)
            volumes = {**case.images, "seg": case.seg}
            for name in sorted(volumes):  # sorted: a stable member order
                data = _nifti_gz(volumes[name], case.affine)
                # Already gzip-compressed: store, do not deflate twice.
                _write_member(zf, f"{cid}/{cid}_{name}.nii.gz", data, zipfile.ZIP_STORED)


# --------------------------------------------------------------------- helpers


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


@dataclass(frozen=True)
class _Brain:
    mask: np.ndarray  # bool
    depth: np.ndarray  # mm to the nearest voxel outside the brain
    centre: np.ndarray  # mm, in the volume-centred frame
    rotation: np.ndarray  # 3x3, world -> brain frame
    semi: np.ndarray  # semi-axes (x: left-right, y: posterior-anterior, z: inferior-superior), mm
    coords: tuple[np.ndarray, np.ndarray, np.ndarray]  # brain-frame coordinates of every voxel, mm


def _cells(shape: tuple[int, ...], spacing: np.ndarray, cell_mm: float) -> tuple[int, ...]:
    """Coarse-grid size for a random field whose features are about ``cell_mm`` across."""
    return tuple(max(2, round(n * s / cell_mm)) for n, s in zip(shape, spacing))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: tuple[int, ...]) -> np.ndarray:
    """Smooth zero-mean, unit-std random field: Gaussian bumps on a coarse lattice with random weights.

    Separable (three small matrix products), so it costs milliseconds where
    ``ndimage.zoom(order=3)`` costs a few hundred.
    """
    bases = []
    for n, c in zip(shape, cells):
        x = (np.arange(n) + 0.5) / n * c  # voxel positions in cell units
        centres = np.arange(-1, c + 1) + 0.5  # one extra bump outside each end avoids edge fall-off
        bases.append(np.exp(-0.5 * ((x[:, None] - centres[None, :]) / 0.7) ** 2))
    field = _separable(rng.standard_normal(tuple(b.shape[1] for b in bases)), bases)
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def _separable(coeffs: np.ndarray, bases: list[np.ndarray]) -> np.ndarray:
    """``sum_abc coeffs[a,b,c] * B0[i,a] * B1[j,b] * B2[k,c]``, one axis at a time, in float64.

    Plain einsum rather than BLAS: as fast at these sizes, and the result does
    not depend on how many BLAS threads a busy machine happens to offer.
    """
    out = np.einsum("ia,abc->ibc", bases[0], coeffs)
    out = np.einsum("ibc,jb->ijc", out, bases[1])
    return np.einsum("ijc,kc->ijk", out, bases[2])


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random polynomial of degree 3 (as MONAI's RandBiasField)."""
    degree = 3
    powers = np.arange(degree + 1)
    bases = [np.linspace(-1.0, 1.0, n)[:, None] ** powers[None, :] for n in shape]
    i, j, k = np.meshgrid(powers, powers, powers, indexing="ij")
    order = i + j + k
    coeffs = np.where((order > 0) & (order <= degree), rng.uniform(-1.0, 1.0, order.shape) / np.maximum(order, 1), 0.0)
    log_bias = _separable(coeffs, bases)
    log_bias *= amplitude / (np.abs(log_bias).max() + 1e-12)
    return np.exp(log_bias).astype(np.float32)


def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    """A small random rotation (about x, y, z) bounded by ``max_deg`` per axis."""
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _voxel_mm(shape: tuple[int, ...], spacing: np.ndarray) -> list[np.ndarray]:
    """Voxel-centre coordinates along each axis in mm, volume centre at 0, as broadcastable 1-D arrays."""
    out = []
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        v = ((np.arange(n) - 0.5 * (n - 1)) * s).astype(np.float32)
        out.append(v.reshape([-1 if a == axis else 1 for a in range(3)]))
    return out


def _brain_geometry(rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray) -> _Brain:
    """Brain outline: an egg-shaped ellipsoid (narrow frontal pole, flat base) with a randomly bumpy surface."""
    half = 0.5 * np.asarray(shape) * spacing
    # Semi-axes as fractions of the field of view: a brain is longer front-to-back than wide.
    semi = half * np.array([rng.uniform(0.66, 0.76), rng.uniform(0.80, 0.88), rng.uniform(0.78, 0.86)])
    room = half - semi * 1.08
    centre = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)]) * np.maximum(room, 0.0)
    rot = _rotation(rng, (6.0, 4.0, 8.0))
    x, y, z = _voxel_mm(shape, spacing)
    px, py, pz = x - centre[0], y - centre[1], z - centre[2]
    u = rot[0, 0] * px + rot[0, 1] * py + rot[0, 2] * pz
    v = rot[1, 0] * px + rot[1, 1] * py + rot[1, 2] * pz
    w = rot[2, 0] * px + rot[2, 1] * py + rot[2, 2] * pz
    # Egg shape: narrower towards the frontal pole (+y), flatter at the skull base (-z).
    taper = 1.0 - rng.uniform(0.06, 0.14) * (v / semi[1])
    ax = semi[0] * taper
    az = np.where(w < 0, semi[2] * rng.uniform(0.78, 0.9), semi[2])
    rho = np.sqrt((u / ax) ** 2 + (v / semi[1]) ** 2 + (w / az) ** 2)
    outline = 1.0 + rng.uniform(0.03, 0.06) * np.tanh(_smooth_field(rng, shape, _cells(shape, spacing, 45.0)))
    outline += 0.015 * np.tanh(_smooth_field(rng, shape, _cells(shape, spacing, 14.0)))
    mask = rho < outline
    # The bumps may not reach the edge of the field of view: keep a one-voxel background frame.
    mask[[0, -1], :, :] = mask[:, [0, -1], :] = mask[:, :, [0, -1]] = False
    mask = ndi.binary_fill_holes(mask)
    labelled, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(labelled.ravel())
        sizes[0] = 0
        mask = labelled == sizes.argmax()
    depth = ndi.distance_transform_edt(mask, sampling=spacing).astype(np.float32)
    return _Brain(mask=mask, depth=depth, centre=centre, rotation=rot, semi=semi, coords=(u, v, w))


def _healthy_tissue(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray, brain: _Brain
) -> np.ndarray:
    """Internal tissue classes: cortex with sulci, WM, deep GM, lateral and third ventricles, fissure, CSF rim."""
    u, v, w = brain.coords
    a = brain.semi
    depth = brain.depth
    s = float(np.mean(a)) / 68.0  # anatomy scales with head size
    vox = float(spacing.min())

    tissue = np.where(brain.mask, _WM, _BG).astype(np.uint8)
    # Cortex: a band of varying thickness, folded by sulci along the zero set of a random field.
    thickness = (3.5 + 1.0 * _smooth_field(rng, shape, _cells(shape, spacing, 30.0)).clip(-1.5, 1.5)) * s + vox
    gyri = _smooth_field(rng, shape, _cells(shape, spacing, 8.0))
    sulcal_depth = rng.uniform(12.0, 18.0) * s
    tissue[brain.mask & (depth < thickness)] = _GM
    sulcus_zone = brain.mask & (depth < sulcal_depth + thickness)
    tissue[sulcus_zone & (np.abs(gyri) < 0.6)] = _GM
    tissue[sulcus_zone & (depth < sulcal_depth) & (np.abs(gyri) < 0.15)] = _CSF

    # Interhemispheric fissure above the corpus callosum and at both poles.
    fissure_w = max(1.0 * s, 0.5 * vox)
    upper = (w > 0.25 * a[2]) | (np.abs(v) > 0.6 * a[1])
    tissue[brain.mask & upper & (np.abs(u) < fissure_w + thickness)] = _GM
    tissue[brain.mask & upper & (np.abs(u) < fissure_w) & (depth < 0.7 * a[2])] = _CSF

    # Deep grey matter (basal ganglia / thalamus), one blob per hemisphere.
    for side in (-1.0, 1.0):
        blob = (
            ((u - side * 0.26 * a[0]) / (0.13 * a[0])) ** 2
            + ((v + 0.02 * a[1]) / (0.24 * a[1])) ** 2
            + ((w + 0.08 * a[2]) / (0.2 * a[2])) ** 2
        )
        tissue[brain.mask & (blob < 1.0)] = _DGM

    # Lateral ventricles: ")(" in axial slices (frontal horns close to the midline,
    # bodies diverging backwards), horns curving down, size varying with "age".
    vsize = rng.uniform(0.75, 1.35)
    vw, vl, vh = 0.075 * a[0] * vsize, 0.42 * a[1], 0.15 * a[2] * vsize
    vgap = max(0.025 * a[0], 0.5 * vox)
    spread = rng.uniform(0.08, 0.16) * a[0]
    bend = 0.3 * a[2]
    t = np.clip((v + 0.08 * a[1]) / vl, -1.5, 1.5)  # -1 occipital end, +1 frontal end
    wc = w - (0.12 * a[2] - bend * t**2)  # the horns curve down at both ends
    width = vw * (0.55 + 0.6 * np.clip(1.0 - t**2, 0.0, 1.0))
    ripple = 1.0 + 0.15 * np.tanh(_smooth_field(rng, shape, _cells(shape, spacing, 12.0)))
    for side in (-1.0, 1.0):
        uc = u - side * (vgap + width + spread * ((1.0 - np.clip(t, -1.0, 1.0)) / 2.0) ** 1.5)
        lobe = (uc / width) ** 2 + t**2 + (wc / vh) ** 2
        tissue[brain.mask & (lobe < ripple)] = _VENT
    third = (
        (u / max(0.015 * a[0], 0.5 * vox)) ** 2
        + ((v + 0.05 * a[1]) / (0.16 * a[1])) ** 2
        + ((w + 0.05 * a[2]) / (0.12 * a[2])) ** 2
    )
    tissue[brain.mask & (third < 1.0)] = _VENT

    # Thin CSF rim around the brain, one voxel here and there a little more.
    rim = vox * (1.0 + 0.5 * (_smooth_field(rng, shape, _cells(shape, spacing, 25.0)) > 0.8))
    tissue[brain.mask & (depth <= rim + 1e-3)] = _CSF
    return tissue


def _tumour(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    index: int,
    grade: str,
    spacing: np.ndarray,
    brain: _Brain,
    tissue: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Place an irregular glioma, push the healthy tissue aside (mass effect) and label it.

    Returns the BraTS label map and the displaced tissue map.
    """
    shape = spec.shape
    s = float(np.mean(brain.semi)) / 68.0
    vox = float(spacing.min())
    margin = 2.0 * vox  # whole tumour stays at least this far from the brain surface

    # Size: a low-discrepancy (golden-ratio) sequence over cases, so any handful
    # of consecutive cases spans small to large tumours; log-uniform radius.
    phase = ((spec.seed + 1) * 0.7548776662466927) % 1.0
    q = (phase + index * 0.6180339887498949 + rng.uniform(-0.04, 0.04)) % 1.0
    r_wt = s * math.exp(math.log(12.0) + q * (math.log(36.0) - math.log(12.0)))
    r_wt = max(r_wt, 3.0 * vox)  # below a few voxels a tumour is only partial-volume blur
    core_frac = rng.uniform(0.55, 0.85) if grade == "LGG" else rng.uniform(0.5, 0.8)
    aspect_wt = rng.uniform(0.75, 1.25, size=3)
    aspect_wt /= np.cbrt(aspect_wt.prod())
    aspect_core = aspect_wt * rng.uniform(0.85, 1.15, size=3)
    aspect_core /= np.cbrt(aspect_core.prod())
    amp_wt, amp_core = rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.3)
    rot_wt, rot_core = _random_rotation(rng), _random_rotation(rng)

    # Centre: deep enough that the distorted whole tumour cannot reach the surface,
    # preferably off the midline (gliomas are hemispheric); shrink if nothing fits.
    u = brain.coords[0]
    off_midline = np.broadcast_to(np.abs(u) > 0.2 * brain.semi[0], shape)
    for _ in range(40):
        reach = r_wt * aspect_wt.max() * (1.0 + amp_wt) + margin
        fits = brain.depth >= reach
        candidates = np.flatnonzero(fits & off_midline)
        if candidates.size == 0:
            candidates = np.flatnonzero(fits)
        if candidates.size:
            break
        r_wt *= 0.9
    else:  # a brain too small for any tumour: a tiny one at the deepest point
        candidates = np.array([int(brain.depth.argmax())])
        r_wt = max(vox, float(brain.depth.max()) - margin) / (aspect_wt.max() * (1.0 + amp_wt))
    centre_idx = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], shape))
    r_core = max(r_wt * core_frac, min(2.0 * vox, 0.9 * r_wt))

    # Work in a box around the tumour: everything below is local.
    ext = r_wt * aspect_wt.max() * (1.0 + amp_wt) * 1.8 + 2 * vox
    lo = np.maximum(centre_idx - np.ceil(ext / spacing).astype(int), 0)
    hi = np.minimum(centre_idx + np.ceil(ext / spacing).astype(int) + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    bshape = tuple(int(b - a) for a, b in zip(lo, hi))
    grids = [((np.arange(a, b) - c) * sp).astype(np.float32) for a, b, c, sp in zip(lo, hi, centre_idx, spacing)]
    gx, gy, gz = np.meshgrid(*grids, indexing="ij")
    p = np.stack([gx, gy, gz])  # mm from the tumour centre
    r = np.sqrt((p**2).sum(axis=0))

    def distorted(rot: np.ndarray, aspect: np.ndarray, radius: float, amp: float, cell_mm: float) -> np.ndarray:
        rho2 = sum((sum(rot[j, i] * p[j] for j in range(3)) / aspect[i]) ** 2 for i in range(3))
        rho = np.sqrt(rho2) / radius
        bumps = np.tanh(_smooth_field(rng, bshape, _cells(bshape, spacing, cell_mm * max(s, 0.3))))
        return rho / (1.0 + amp * bumps)  # < 1 inside; the surface lies within (1 +- amp) * radius

    d_wt = distorted(rot_wt, aspect_wt, r_wt, amp_wt, 9.0)  # edema: finger-like
    d_core = distorted(rot_core, aspect_core, r_core, amp_core, 8.0)

    # Mass effect: sample healthy tissue closer to the centre, pushing it outwards;
    # the push fades before the brain surface, which the skull holds in place.
    push = rng.uniform(0.25, 0.5) * min(1.0, r_core / (12.0 * s))
    pull = 1.0 - push * np.exp(-((r / (1.3 * r_core)) ** 2))
    src = (p * pull) / spacing[:, None, None, None] + centre_idx[:, None, None, None]
    local_tissue = ndi.map_coordinates(tissue, src.reshape(3, -1), order=0, mode="nearest").reshape(bshape)
    inside = brain.mask[box]
    local_tissue = np.where(inside & (local_tissue == _BG), _WM, local_tissue)
    local_tissue = np.where(inside, local_tissue, _BG).astype(np.uint8)
    tissue = tissue.copy()
    tissue[box] = local_tissue

    # Tumour compartments. Edema spreads through white matter, spares the cortex
    # and does not fill CSF; the core displaces whatever is there.
    core = d_core < 1.0
    near_core = d_wt < 0.7
    permeable = (local_tissue == _WM) | (local_tissue == _DGM) | ((local_tissue == _GM) & near_core)
    edema = (d_wt < 1.0) & permeable
    label = np.zeros(bshape, dtype=np.uint8)
    label[edema] = 2
    if grade == "LGG":
        label[core] = 1
    else:
        label[core] = 4
        # Necrosis has its own irregular outline, so the enhancing rim varies in
        # thickness, but a rim of at least one voxel always remains.
        rim_mm = rng.uniform(1.5, 4.0) * max(s, 0.5) + 0.5 * vox
        if rng.random() > 0.15 and r_core > rim_mm + vox:  # occasionally solid enhancing, no necrosis
            d_nec = distorted(rot_core @ _random_rotation(rng), aspect_core, r_core - rim_mm, amp_core, 8.0)
            enclosed = ndi.binary_erosion(core, structure=np.ones((3, 3, 3), dtype=bool))
            label[enclosed & (d_nec < 1.0)] = 1
    label[~inside | (brain.depth[box] < margin)] = 0

    seg = np.zeros(shape, dtype=np.uint8)
    seg[box] = label
    return seg, tissue


def _nifti_gz(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 bytes with qform and sform set, reproducible (gzip mtime 0, no file name)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = b"glioseg synthetic"
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes, compress_type: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: byte-identical archives
    info.create_system = 3  # Unix, whatever the host
    info.external_attr = 0o100644 << 16
    info.compress_type = compress_type
    zf.writestr(info, data)


def _readme(spec: SyntheticSpec) -> str:
    spec_json = json.dumps(dataclasses.asdict(spec))
    return (
        "SYNTHETIC DATA - NOT REAL PATIENTS\n"
        "\n"
        "This archive was generated by glioseg (glioseg.datasets.synthetic) from a\n"
        "random seed. Every image is simulated: no patient, scanner or hospital data\n"
        "was used. It mimics the layout of the BraTS 2021 Kaggle release\n"
        "(BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz; labels\n"
        "0 background, 1 necrotic/non-enhancing core, 2 edema, 4 enhancing tumour)\n"
        "so that the pipeline can be tested end to end. Results on it say nothing\n"
        "about performance on real MRI.\n"
        "\n"
        f"LGG-like cases (no label 4): {lgg_count(spec)} of {spec.cases}.\n"
        "Specification:\n"
        f"{spec_json}\n"
    )
