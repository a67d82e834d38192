"""Checkpoints: the resumable training state and the final model file.

``state/last.pt`` (every epoch) and ``state/best.pt`` live beside the job's
declared outputs, not among them, so Snakemake never deletes them when a job
fails: the retried job resumes from them. A fingerprint of the experiment
settings and the fold guards against resuming a run whose config changed.
Everything is loaded with ``weights_only=True``: no pickled code ever runs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioseg.atomic import atomic_path
from glioseg.errors import GliosegError
from glioseg.models import build_model

MODEL_FORMAT = "glioseg-model/1"


def fingerprint(settings: Mapping[str, Any], train_cases: list[str], val_cases: list[str], init_digest: str = "") -> str:
    """A digest of everything that determines the training run, the initial weights' content included."""
    payload = json.dumps({"settings": settings, "train": sorted(train_cases), "val": sorted(val_cases), "init": init_digest},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: a retrained parent model must not let its child resume stale state."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(path: str | Path, state_dict: Mapping[str, torch.Tensor], settings: Mapping[str, Any], regions: list[str],
               in_channels: int, *, epoch: int, best_metric: float) -> None:
    """Write a model file: the weights and what is needed to rebuild the network around them."""
    save(
        {
            "format": MODEL_FORMAT,
            "state_dict": dict(state_dict),
            "epoch": epoch,
            "best_metric": best_metric,
            "settings": dict(settings),
            "regions": list(regions),
            "in_channels": in_channels,
        },
        path,
    )


def save(payload: Mapping[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(dict(payload), tmp)


def load(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Global RNG states, in types that ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def network_for(settings: Mapping[str, Any], in_channels: int, out_channels: int) -> torch.nn.Module:
    """The untrained network an experiment's training settings describe (2D or 3D by its patch size)."""
    return build_model(settings["model"], in_channels, out_channels, spatial_dims=len(settings["patch_size"]),
                       patch_size=settings["patch_size"])


def load_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from its model file (weights only, no pickled code)."""
    payload = load(path)
    if payload.get("format") != MODEL_FORMAT:
        raise GliosegError(f"not a glioseg model file (format {payload.get('format')!r})", path=path,
                           hint="point at a model.pt written by 'glioseg train'.")
    model = network_for(payload["settings"], payload["in_channels"], len(payload["regions"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload
