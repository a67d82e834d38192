"""Initial weights from a checkpoint: our own model files and published ones.

A training run may start from weights instead of a random initialisation.
:func:`load_initial_weights` reads the file (``weights_only=True``, never any
pickled code), recognises its structure, renames its keys to the model's
parameter names, copies every tensor whose shape agrees and reports the rest.

Accepted structures (``fmt``; docs/formats.md, "External checkpoints"):

``glioseg``
    our ``model.pt`` (``format == "glioseg-model/1"``, weights in ``state_dict``).
``research_contributions``
    MONAI research-contributions Swin UNETR checkpoints (the BraTS 2021 folds):
    ``{"epoch", "best_acc", "state_dict"}`` with MONAI ``SwinUNETR`` names,
    ``module.`` stripped when saved from DDP.
``swin_ssl``
    the self-supervised Swin ViT encoder (``model_swinvit.pt``): ``module.`` +
    encoder names, MLP layers named ``fc1``/``fc2``. Mapped under the model's
    Swin ViT (``swinViT.`` in MONAI's ``SwinUNETR``); only the encoder loads.
``medicalnet``
    MedicalNet (Med3D) ResNets: ``module.`` + ResNet names (``conv1``, ``bn1``,
    ``layer1`` …) and a segmentation head ``conv_seg.*``. Mapped under the
    model's ResNet encoder; the head is ignored; only the encoder loads.
``state_dict``
    a bare state dict (or one under ``state_dict``/``model``) already named
    like the model.

For the two encoder-only formats the loaded fraction counts against the
encoder (the report's *scope*): a decoder that stays random is expected and
does not count as missing. A single-channel first convolution (MedicalNet's
``conv1``, the SSL ``patch_embed``) is repeated over the model's input
channels with :func:`glioseg.models.adapt_first_conv`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg import torch_files
from glioseg.errors import GliosegError
from glioseg.models import adapt_first_conv
from glioseg.models.model_file import MODEL_FORMAT, network_for, save_model
from glioseg.settings import InitSpec, TrainingSettings

_log = logging.getLogger(__name__)

FORMATS = ("auto", "glioseg", "research_contributions", "swin_ssl", "medicalnet", "state_dict")

# Where each encoder-only format expects its encoder inside our model: a key
# that names the encoder's first convolution and one more that confirms it.
_SWIN_MARKERS = ("patch_embed.proj.weight", "layers1.0.blocks.0.norm1.weight")
_RESNET_MARKERS = ("conv1.weight", "layer1.0.conv1.weight")
# The self-supervised Swin ViT used timm-style MLP names; MONAI's MLPBlock has linear1/linear2.
_MLP_RENAMES = ((".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2."))
_SHOW = 5  # keys listed per category in logs and errors


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_initial_weights` did, in the model's key names.

    ``scope`` is the key prefix of the part of the model the checkpoint is meant
    to initialise (``""``: the whole model; ``"swinViT."`` for ``swin_ssl``; the
    ResNet encoder's prefix for ``medicalnet``). ``missing`` and
    ``shape_mismatch`` are model tensors inside the scope; ``outside_scope``
    lists the tensors that keep their initialisation by design (a decoder).
    """

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    shape_mismatch: list[str]
    adapted: list[str] = field(default_factory=list)
    scope: str = ""
    outside_scope: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Model tensors in scope (loaded, absent from the checkpoint, or of another shape)."""
        return len(self.loaded) + len(self.missing) + len(self.shape_mismatch)

    @property
    def fraction(self) -> float:
        """Loaded / model tensors in scope (the whole model unless the format is encoder-only)."""
        return len(self.loaded) / self.total if self.total else 0.0


# ---------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's payload as saved (a dict), read with ``weights_only=True``; code in it is refused."""
    return torch_files.load(path, hint="check the path of the initial weights in the experiment's config, "
                                      "and that the download is complete.")


def _is_state(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _state_of(payload: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
    """The state dict inside a payload: under ``state_dict``, under ``model``, or the payload itself."""
    for key in ("state_dict", "model"):
        value = payload.get(key)
        if isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values()):
            return dict(value)
    if _is_state(payload):
        return dict(payload)
    return None


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove ``module.`` (DataParallel / DDP) when every key has it, repeatedly."""
    state = dict(state)
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _swin_prefix(keys: set[str]) -> str | None:
    """Where the keys hold a Swin ViT encoder: at the root, under ``swinViT.`` or ``swin_vit.``; None if nowhere."""
    for prefix in ("", "swinViT.", "swin_vit."):
        if all(prefix + marker in keys for marker in _SWIN_MARKERS):
            return prefix
    return None


def detect_format(payload: Mapping[str, Any]) -> str:
    """Recognise a checkpoint's structure from its entries and key names (one of :data:`FORMATS` but ``auto``)."""
    declared = payload.get("format")
    if declared == MODEL_FORMAT:
        return "glioseg"
    if isinstance(declared, str):
        raise GliosegError(f"unknown checkpoint format {declared!r}",
                           hint=f"glioseg reads its own {MODEL_FORMAT!r} model files; for other weights set the "
                                f"format explicitly, one of {', '.join(FORMATS[1:])}.")
    state = _state_of(payload)
    if state is None:
        entries = ", ".join(sorted(map(str, payload))[:8])
        raise GliosegError(f"no weights found: neither a 'state_dict' entry nor a dict of tensors (entries: {entries})",
                           hint="save a state dict (model.state_dict()) or a dict with a 'state_dict' entry.")
    wrapped = isinstance(payload.get("state_dict"), Mapping)
    keys = set(_strip_module(state))
    prefix = _swin_prefix(keys)
    if prefix is not None:
        whole_network = prefix == "swinViT." and any(k.startswith(("encoder1.", "decoder1.", "out.")) for k in keys)
        if not whole_network:
            return "swin_ssl"
        return "research_contributions" if wrapped else "state_dict"
    if all(marker in keys for marker in _RESNET_MARKERS):
        return "medicalnet"
    return "state_dict"


# ---------------------------------------------------------------------------------------------
# remapping


def _encoder_prefix(model_keys: set[str], markers: tuple[str, str], what: str, fmt: str) -> str:
    prefixes = sorted((k[: -len(markers[0])] for k in model_keys
                       if k.endswith(markers[0]) and k[: -len(markers[0])] + markers[1] in model_keys), key=len)
    if not prefixes:
        raise GliosegError(f"'{fmt}' weights initialise a {what}, and this model has none "
                           f"(no parameter named '…{markers[0]}' beside '…{markers[1]}')",
                           hint="use these weights with a model that has that encoder (swin_unetr for swin_ssl, "
                                "resnet_unet for medicalnet), or choose another initialisation format.")
    return prefixes[0]


def _rename_mlp(key: str) -> str:
    for old, new in _MLP_RENAMES:
        key = key.replace(old, new)
    return key


def _adapt(state: dict[str, Any], key: str, target: torch.Tensor | None, in_channels: int | None) -> bool:
    """Repeat a 1-input-channel first convolution ``key`` over the model's input channels, in place."""
    source = state.get(key)
    if not isinstance(source, torch.Tensor) or target is None or source.ndim < 3:
        return False
    channels = int(target.shape[1]) if in_channels is None else in_channels
    if source.shape[1] != 1 or channels == 1 or source.shape[0] != target.shape[0] \
            or source.shape[2:] != target.shape[2:]:
        return False
    state[key] = adapt_first_conv(state, key, channels)[key]
    return True


def _remap(state: Mapping[str, Any], fmt: str, model: nn.Module,
           in_channels: int | None = None) -> tuple[dict[str, Any], str, list[str]]:
    """(state renamed to the model's keys, scope prefix, adapted keys)."""
    if fmt == "auto":
        fmt = detect_format(state)
    if fmt not in FORMATS:
        raise GliosegError(f"unknown initial-weights format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}.")
    model_state = model.state_dict()
    model_keys = set(model_state)
    state = _strip_module(state)

    if fmt in ("glioseg", "state_dict"):
        return state, "", []
    if fmt == "research_contributions":
        return {_rename_mlp(k): v for k, v in state.items()}, "", []

    if fmt == "swin_ssl":
        scope = _encoder_prefix(model_keys, _SWIN_MARKERS, "Swin ViT encoder", fmt)
        source_prefix = _swin_prefix(set(state)) or ""
        first_conv = scope + "patch_embed.proj.weight"

        def rename(k: str) -> str:
            return scope + _rename_mlp(k[len(source_prefix):])
    else:  # medicalnet
        scope = _encoder_prefix(model_keys, _RESNET_MARKERS, "ResNet encoder", fmt)
        source_prefix = ""
        first_conv = scope + "conv1.weight"

        def rename(k: str) -> str:
            return scope + k

    out: dict[str, Any] = {}
    for key, value in state.items():
        new = rename(key) if key.startswith(source_prefix) else key
        # Keys with no place in the encoder (conv_seg.*, SSL heads) keep their own names: reported unexpected.
        out[new if new in model_keys else key] = value
    adapted = [first_conv] if _adapt(out, first_conv, model_state.get(first_conv), in_channels) else []
    return out, scope, adapted


def remap(state: Mapping[str, torch.Tensor], fmt: str, model: nn.Module, *,
          in_channels: int | None = None) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's state dict to ``model``'s parameter names (see the module docstring).

    ``module.`` prefixes are stripped; for ``swin_ssl`` and ``medicalnet`` the keys
    move under the model's encoder and a 1-channel first convolution is adapted
    to ``in_channels`` (default: what the model's first convolution takes).
    Keys with no counterpart keep their names (and are reported unexpected).
    """
    return _remap(state, fmt, model, in_channels)[0]


# ---------------------------------------------------------------------------------------------
# loading


def _compare(remapped: Mapping[str, Any], model_state: Mapping[str, torch.Tensor], scope: str,
             adapted: list[str]) -> LoadReport:
    loaded, mismatch, unexpected = [], [], []
    for key, value in remapped.items():
        if key not in model_state or not key.startswith(scope) or not isinstance(value, torch.Tensor):
            unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            mismatch.append(key)
        else:
            loaded.append(key)
    present = set(remapped)
    missing = [k for k in model_state if k.startswith(scope) and k not in present]
    outside = [k for k in model_state if not k.startswith(scope)]
    return LoadReport(loaded=loaded, missing=missing, unexpected=unexpected, shape_mismatch=mismatch,
                      adapted=adapted, scope=scope, outside_scope=outside)


def _listing(keys: list[str]) -> str:
    more = f", … (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _shapes(report: LoadReport, remapped: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> str:
    return "; ".join(f"{k}: checkpoint {tuple(remapped[k].shape)}, model {tuple(model_state[k].shape)}"
                     for k in report.shape_mismatch[:3])


def _where(report: LoadReport) -> str:
    return f"the encoder ({report.scope}*)" if report.scope else "the model"


def _details(report: LoadReport) -> list[str]:
    parts = []
    if report.scope:
        parts.append(f"{len(report.outside_scope)} tensors outside it keep their initialisation")
    if report.adapted:
        parts.append(f"first convolution adapted to the model's input channels: {', '.join(report.adapted)}")
    for name, keys in (("missing", report.missing), ("shape mismatch", report.shape_mismatch),
                       ("unexpected", report.unexpected)):
        if keys:
            parts.append(f"{name} ({len(keys)}): {_listing(keys)}")
    return parts


def _summary(report: LoadReport, fmt: str) -> str:
    head = (f"format {fmt}: loaded {len(report.loaded)}/{report.total} tensors of {_where(report)} "
            f"({report.fraction:.0%})")
    return "; ".join([head, *_details(report)])


def load_initial_weights(model: nn.Module, path: str | Path, fmt: str = "auto", *, min_fraction: float = 0.5,
                         in_channels: int | None = None) -> LoadReport:
    """Copy a checkpoint's weights into ``model`` (in place) and report what matched.

    Tensors whose shapes differ are skipped and reported; nothing is copied
    when fewer than ``min_fraction`` of the model tensors in scope (the whole
    model, or the encoder for encoder-only formats) would load.
    ``in_channels`` is what a single-channel first convolution is adapted to
    (default: the model's own first convolution; a different number shows up
    as a shape mismatch of that tensor).
    """
    if fmt not in FORMATS:
        raise GliosegError(f"unknown initial-weights format {fmt!r}", path=path,
                           hint=f"use one of {', '.join(FORMATS)}.")
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must lie in [0, 1], not {min_fraction}")
    payload = read_checkpoint(path)
    try:
        detected = detect_format(payload) if fmt == "auto" else fmt
        state = _state_of(payload) if detected != "glioseg" else dict(payload.get("state_dict") or {})
        if not state:
            raise GliosegError("no weights found: neither a 'state_dict' entry nor a dict of tensors",
                               hint="save a state dict (model.state_dict()) or a dict with a 'state_dict' entry.")
        model_state = model.state_dict()
        remapped, scope, adapted = _remap(state, detected, model, in_channels)
    except GliosegError as exc:
        if exc.path is not None:
            raise
        raise GliosegError(exc.problem, path=path, hint=exc.hint) from None

    report = _compare(remapped, model_state, scope, adapted)
    summary = _summary(report, detected)
    if report.fraction < min_fraction:
        if len(report.shape_mismatch) > len(report.missing):
            hint = ("the checkpoint is for a different model size or architecture (e.g. feature_size, channels, "
                    "depth): set the model's parameters to those the weights were trained with.")
            detail = f" Shapes differ, e.g. {_shapes(report, remapped, model_state)}."
        else:
            hint = (f"check the initialisation format (used: {detected}; one of {', '.join(FORMATS)}) and that the "
                    "model is the network the weights were trained for.")
            detail = ""
        if detected == "glioseg" and isinstance(payload.get("settings"), Mapping):
            hint += f" The checkpoint was trained with model {payload['settings'].get('model')!r}."
        raise GliosegError(
            f"only {len(report.loaded)} of {report.total} tensors of {_where(report)} ({report.fraction:.0%}) can be "
            f"initialised from this checkpoint (format {detected}), below the minimum of {min_fraction:.0%}; "
            f"{'; '.join(_details(report))}.{detail}",
            path=path, hint=hint)

    with torch.no_grad():
        model.load_state_dict({k: remapped[k] for k in report.loaded}, strict=False)
    _log.info("initial weights from %s: %s", path, summary)
    return report


def load_configured_weights(model: nn.Module, path: str | Path, settings: TrainingSettings) -> LoadReport:
    """:func:`load_initial_weights` read as the experiment's ``init`` section says (format, minimum fraction)."""
    spec = settings.init or InitSpec()
    return load_initial_weights(model, path, spec.format, min_fraction=spec.min_fraction)


def import_model(init: str | Path, settings: TrainingSettings, regions: list[str], in_channels: int,
                 out: str | Path) -> LoadReport:
    """Write a model file for an evaluation-only experiment: its network with the ``init`` weights, untrained.

    Goes through :func:`load_initial_weights`, so a published checkpoint is
    remapped, checked and refused exactly as it would be before fine-tuning.
    """
    torch.manual_seed(settings.seed)
    model = network_for(settings, in_channels, len(regions))
    report = load_configured_weights(model, init, settings)
    save_model(out, model.state_dict(), settings, regions, in_channels, epoch=0, best_metric=float("nan"))
    return report
