"""Checkpoints: the resumable training state and the final model file.

``state/last.pt`` (every epoch) and ``state/best.pt`` live beside the job's
declared outputs, not among them, so Snakemake never deletes them when a job
fails: the retried job resumes from them. A :class:`RunIdentity` (settings,
split, data, initial weights, architecture) guards against resuming a run whose
inputs changed. Every file is read by :func:`load`, with ``weights_only=True``:
no pickled code ever runs, and a truncated or foreign file is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioseg.atomic import atomic_path
from glioseg.errors import GliosegError
from glioseg.models import build_model

MODEL_FORMAT = "glioseg-model/1"


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


def run_identity(settings: Mapping[str, Any], train_cases: list[str], val_cases: list[str], *, data_digest: str,
                 init_digest: str, model: torch.nn.Module) -> RunIdentity:
    """The identity of one fold's training run; ``model`` is the freshly built network."""
    architecture = [(name, list(tensor.shape), str(tensor.dtype)) for name, tensor in model.state_dict().items()]
    return RunIdentity(
        settings=_digest(settings),
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


_NUMERIC_DTYPES = ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
                   "Float16", "Float32", "Float64", "LongDouble")


def _numpy_scalar_globals() -> list[Any]:
    """NumPy numeric scalars: data, not code, but refused by ``weights_only`` unless allowed.

    research-contributions saves ``best_acc`` as a ``numpy.float64``; a file
    pickled under NumPy 1 names its constructor ``numpy.core.multiarray.scalar``,
    under NumPy 2 ``numpy._core.multiarray.scalar`` (and builds its dtype as a
    ``numpy.dtypes.Float64DType``). Only that constructor, ``numpy.dtype`` and
    the numeric dtype classes are allowed: they rebuild a number from a dtype
    and raw bytes; anything else is still refused by torch's restricted unpickler.
    """
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list[Any] = [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25
    allowed += [getattr(dtypes, f"{name}DType") for name in _NUMERIC_DTYPES if hasattr(dtypes, f"{name}DType")]
    return allowed


_CODE_NEEDED = re.compile(r"GLOBAL (\S+)|Can only (?:create|build)[^\n]*?got (.+)|unrecognized function (.+)")


def _unpickling_refusal(text: str) -> tuple[bool, str]:
    """(whether torch's weights-only unpickler met a global/class/function, a one-line reason)."""
    match = _CODE_NEEDED.search(text)
    if match:
        name = next(group for group in match.groups() if group)
        return True, f"needs {name.strip()}"
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return False, lines[0] if lines else "unpickling failed"


def load(path: str | Path, *, hint: str = "delete it and run the step that writes it again.") -> dict[str, Any]:
    """A ``torch.save`` file's payload, read with ``weights_only=True``; any failure names the file.

    ``hint`` says what to do about an unreadable file, which depends on who
    wrote it: a training state is re-made by training, a published checkpoint
    is downloaded again. A file whose unpickling needs code (a class, a
    function) is refused, and the message never suggests loading it anyway.
    """
    path = Path(path)
    if not path.is_file():
        raise GliosegError("no such checkpoint file", path=path, hint=hint)
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs_code, reason = _unpickling_refusal(str(exc))
        if not needs_code:
            raise GliosegError(f"not a readable PyTorch checkpoint ({reason})", path=path, hint=hint) from None
        raise GliosegError(
            f"refused: this checkpoint is a pickle that {reason} to load; glioseg reads checkpoints with "
            "torch.load(weights_only=True), which accepts tensors and plain containers only, and never runs "
            "code from a file.",
            path=path,
            hint="use a file that holds tensors only, e.g. one saved as torch.save(model.state_dict(), path) "
                 "by its author; a file that needs code to load is not one glioseg will open.",
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise GliosegError(f"not a readable PyTorch checkpoint, truncated or corrupt ({type(exc).__name__}: {exc})",
                           path=path, hint=hint) from None
    if not isinstance(payload, Mapping):
        raise GliosegError(f"the checkpoint holds a {type(payload).__name__}, not a dict of weights", path=path,
                           hint="save a state dict (model.state_dict()) or a dict with a 'state_dict' entry.")
    return dict(payload)


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
