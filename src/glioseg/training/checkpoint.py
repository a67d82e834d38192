"""The resumable training state: what identifies a run, and the random generators' state.

``state/last.pt`` (every epoch) and ``state/best.pt`` live beside the job's
declared outputs, not among them, so Snakemake never deletes them when a job
fails: the retried job resumes from them. A :class:`RunIdentity` (settings,
split, data, initial weights, architecture) guards against resuming a run whose
inputs changed. The files are written and read by :mod:`glioseg.torch_files`;
the model file a training ends with belongs to :mod:`glioseg.models.model_file`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioseg.settings import TrainingSettings


@dataclass(frozen=True)
class RunIdentity:
    """Digests of everything a fold's weights depend on, kept apart so a mismatch can say what changed.

    Saved in ``state/last.pt``; a training resumes only a state whose identity
    is the same in every part. The data part is the cache's own digest, written
    by preprocessing, so checking it costs one small read, not a re-hash.
    """

    settings: str
    split: str
    data: str
    init: str
    architecture: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def changes(self, saved: Mapping[str, str]) -> list[str]:
        """What differs from a saved identity, in words; empty when it is the same run."""
        return [_IDENTITY_WORDS[name] for name, value in self.to_json().items() if saved.get(name) != value]


_IDENTITY_WORDS = {
    "settings": "the experiment's training settings",
    "split": "the fold's training or validation cases",
    "data": "the preprocessed data (the cache's digest)",
    "init": "the initial weights",
    "architecture": "the network the code builds (parameter names and shapes)",
}


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_identity(settings: TrainingSettings, train_cases: list[str], val_cases: list[str], *, data_digest: str,
                 init_digest: str, model: torch.nn.Module) -> RunIdentity:
    """The identity of one fold's training run; ``model`` is the freshly built network."""
    architecture = [(name, list(tensor.shape), str(tensor.dtype)) for name, tensor in model.state_dict().items()]
    return RunIdentity(
        settings=_digest(settings.to_json()),
        split=_digest({"train": sorted(train_cases), "val": sorted(val_cases)}),
        data=data_digest,
        init=init_digest,
        architecture=_digest(architecture),
    )


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: a retrained parent model must not let its child resume stale state."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
