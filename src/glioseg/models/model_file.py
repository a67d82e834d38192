"""The model file: a trained network's weights and what is needed to rebuild it.

Written by training (the best epoch) and by ``import-model`` (weights taken
as they are); read by inference, by ``init: {experiment: …}`` and by users.
Its settings are the training settings' JSON, so the file rebuilds its
network without any config at hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from glioseg.errors import GliosegError
from glioseg.models import build_model
from glioseg.settings import TrainingSettings
from glioseg.torch_files import load, save

MODEL_FORMAT = "glioseg-model/1"


def network_for(settings: TrainingSettings, in_channels: int, out_channels: int) -> torch.nn.Module:
    """The untrained network a training recipe describes (2D or 3D by its patch size)."""
    return build_model(settings.model, in_channels, out_channels, spatial_dims=settings.spatial_dims,
                       patch_size=settings.patch_size)


def save_model(path: str | Path, state_dict: Mapping[str, torch.Tensor], settings: TrainingSettings, regions: list[str],
               in_channels: int, *, epoch: int, best_metric: float) -> None:
    """Write a model file: the weights and what is needed to rebuild the network around them."""
    save(
        {
            "format": MODEL_FORMAT,
            "state_dict": dict(state_dict),
            "epoch": epoch,
            "best_metric": best_metric,
            "settings": settings.to_json(),
            "regions": list(regions),
            "in_channels": in_channels,
        },
        path,
    )


def load_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from its model file (weights only, no pickled code)."""
    payload = load(path, hint="point at a model.pt written by glioseg (train or import-model), or run that step again.")
    if payload.get("format") != MODEL_FORMAT:
        raise GliosegError(f"not a glioseg model file (format {payload.get('format')!r})", path=path,
                           hint="point at a model.pt written by 'glioseg train'.")
    model = network_for(TrainingSettings.from_json(payload["settings"]), payload["in_channels"], len(payload["regions"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload
