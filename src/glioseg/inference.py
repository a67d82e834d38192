"""Sliding-window prediction, shared by validation during training and by the infer stage.

Inference runs on the cached (cropped, resampled if the dataset says so,
normalised) image and maps the result back: probabilities → the crop's own grid
→ regions → the dataset's labels → the original volume, written with the
original label file's affine and header so that it overlays the raw data and
is scored in its original geometry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference
from torch import nn
from tqdm import tqdm

from glioseg.atomic import atomic_dir
from glioseg.cache import read_cache_properties, reader
from glioseg.errors import GliosegError
from glioseg.evaluation import case_labels
from glioseg.labels import LabelConvention, regions_to_labels
from glioseg.manifest import DatasetInfo
from glioseg.models.model_file import load_model
from glioseg.nifti import load_image, write_label_map
from glioseg.preprocess import CaseGeometry
from glioseg.settings import InferenceSettings


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported); a no-op on the CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def flip_combinations(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a (B, C, *spatial) tensor: the mirrorings nnU-Net averages over."""
    axes = range(2, 2 + spatial_dims)
    return [tuple(a for a in axes if mask >> (a - 2) & 1) for mask in range(2**spatial_dims)]


@torch.no_grad()
def _window_probabilities(model: nn.Module, image: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    logits = sliding_window_inference(
        image,
        roi_size=settings.roi_size,
        sw_batch_size=settings.sw_batch_size,
        predictor=model,
        overlap=settings.overlap,
        mode=settings.blend,
    )
    return torch.sigmoid(logits.float())


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: torch.Tensor, settings: InferenceSettings, device: torch.device) -> torch.Tensor:
    """Sigmoid probabilities for a batch of whole (cropped) volumes, tiled with the configured ROI.

    A 2D ROI on 3D volumes predicts each axial slice (the last axis) on its
    own, so 2D models are scored on volumes exactly as 3D models are. With
    ``tta`` on, each input is also predicted mirrored along every combination
    of its axes, each prediction mirrored back, and the probabilities averaged
    (2^3 = 8 passes in 3D, 4 per slice in 2D).
    """
    model.eval()
    if len(settings.roi_size) == image.ndim - 3:
        return _slicewise_probabilities(model, image, settings, device)
    image = image.to(device)
    flips = flip_combinations(image.ndim - 2) if settings.tta else [()]
    total = None
    with autocast(device, settings.amp):
        for axes in flips:
            mirrored = torch.flip(image, axes) if axes else image
            probabilities = _window_probabilities(model, mirrored, settings)
            probabilities = torch.flip(probabilities, axes) if axes else probabilities
            total = probabilities if total is None else total + probabilities
    return total / len(flips)


SLICES_PER_PASS = 32
"""Axial slices predicted together by a 2D model: bounds memory on tall volumes."""


def _slicewise_probabilities(model: nn.Module, volumes: torch.Tensor, settings: InferenceSettings,
                             device: torch.device) -> torch.Tensor:
    """(B, C, X, Y, Z) volumes through a 2D model, slice by slice, back to (B, R, X, Y, Z) on the CPU."""
    out = []
    for volume in volumes:
        slices = volume.permute(3, 0, 1, 2)
        parts = [predict_probabilities(model, slices[start:start + SLICES_PER_PASS], settings, device).cpu()
                 for start in range(0, slices.shape[0], SLICES_PER_PASS)]
        out.append(torch.cat(parts).permute(1, 2, 3, 0))
    return torch.stack(out)


def predict_masks(model: nn.Module, image: torch.Tensor, settings: InferenceSettings, device: torch.device) -> torch.Tensor:
    """Binary region masks: probabilities above the configured threshold."""
    return predict_probabilities(model, image, settings, device) > settings.threshold


def original_labels(probabilities: np.ndarray, geometry: CaseGeometry, threshold: float,
                    convention: LabelConvention) -> np.ndarray:
    """(R, …) probabilities on the crop's grid (:meth:`CaseGeometry.to_crop`) → a label map of the original volume.

    The one way back for the infer stage and ``glioseg predict``: thresholded
    only after any resampling back, as nnU-Net resamples probabilities before
    its argmax.
    """
    return geometry.place(regions_to_labels(probabilities > threshold, convention))


def predict_case_labels(models: Sequence[nn.Module], image: np.ndarray, geometry: CaseGeometry,
                        settings: InferenceSettings, convention: LabelConvention, device: torch.device) -> np.ndarray:
    """A cached (cropped, normalised) case → a label map in the original geometry and label convention.

    Several models form an ensemble: their probabilities are averaged before thresholding.
    """
    probabilities = geometry.to_crop(ensemble_probabilities(models, image, settings, device).numpy())
    return original_labels(probabilities, geometry, settings.threshold, convention)


def load_models(model_paths: Sequence[str | Path], info: DatasetInfo, device: torch.device) -> tuple[list[nn.Module], str]:
    """The models to predict with, checked against the dataset's modalities and against each other; and a name."""
    models, names = [], set()
    regions = None
    for path in model_paths:
        model, payload = load_model(path, device)
        if payload["in_channels"] != len(info.modalities):
            raise GliosegError(
                f"the model takes {payload['in_channels']} modalities but dataset '{info.name}' has {len(info.modalities)} "
                f"({', '.join(info.modalities)})",
                path=path,
                hint="evaluate only on datasets with the training dataset's modalities, in the same order.",
            )
        if regions is not None and payload["regions"] != regions:
            raise GliosegError(f"the model predicts regions {payload['regions']}, the others {regions}", path=path,
                               hint="ensemble only models of one experiment.")
        regions = payload["regions"]
        models.append(model)
        names.add(payload["settings"]["name"])
    return models, "+".join(sorted(names))


def infer_cases(model_paths: Sequence[str | Path], cache_dir: str | Path, manifest: pd.DataFrame, info: DatasetInfo,
                cases: list[str], settings: InferenceSettings, out_dir: str | Path, device: torch.device | None = None) -> None:
    """Write ``<case>.nii.gz`` for each case into ``out_dir`` (atomically, as one folder); several models ensemble."""
    label_files = case_labels(manifest, cases)  # the split's cases that the manifest lacks are named, all at once
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models, name = load_models(model_paths, info, device)
    cache = read_cache_properties(cache_dir)
    properties = cache.cases
    missing = sorted(set(cases) - set(properties))
    if missing:
        raise GliosegError(f"cases {missing} are not in the preprocessed cache", path=cache_dir,
                           hint="re-run preprocessing for this dataset (its manifest changed).")
    description = f"inferring {name}" + (f" (ensemble of {len(models)})" if len(models) > 1 else "")
    with atomic_dir(out_dir) as tmp:
        for case in tqdm(cases, desc=description, unit="case"):
            props = properties[case]
            image = reader(cache_dir, case, props, len(cache.regions)).image()
            labels = predict_case_labels(models, image, CaseGeometry.of(props), settings, info.convention, device)
            write_label_map(tmp / f"{case}.nii.gz", labels, load_image(label_files[case]))


def ensemble_probabilities(models: Sequence[nn.Module], image: np.ndarray, settings: InferenceSettings,
                           device: torch.device) -> torch.Tensor:
    """One cropped, normalised case (C, X, Y, Z) → the models' mean region probabilities (R, X, Y, Z) on the CPU.

    What :func:`predict_case_labels` thresholds, so ``glioseg predict`` gives
    exactly the infer stage's labels.
    """
    batch = torch.from_numpy(image)[None]
    total = sum(predict_probabilities(model, batch, settings, device) for model in models)
    return (total / len(models))[0].cpu()
