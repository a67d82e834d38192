"""Reading and writing ``torch.save`` files, safely, for every file glioseg opens.

Training states, model files and published checkpoints are all read by
:func:`load`, with ``weights_only=True``: no pickled code ever runs, and a
truncated, corrupt or code-carrying file is one clear error naming the file.
Every file is written by :func:`save`, atomically.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioseg.atomic import atomic_path
from glioseg.errors import GliosegError


def save(payload: Mapping[str, Any], path: str | Path) -> None:
    """Write ``payload`` with ``torch.save``, atomically: a killed job leaves the old file or none."""
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


def _check_header(path: Path, hint: str) -> None:
    """Refuse another kind of file under a checkpoint's name by its first bytes, before torch reads it as a pickle
    and fails with an opcode error that says nothing of what the file is."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle stream
        raise GliosegError(f"not a PyTorch checkpoint: it starts with {head!r}, where torch.save writes a zip archive",
                           path=path, hint=hint)


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
    _check_header(path, hint)
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
