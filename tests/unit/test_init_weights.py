"""Initial weights: each published checkpoint structure loads into the model it was made for.

Every fixture is a real network's state dict, re-keyed to the structure the
public project publishes (see docs/formats.md, "External checkpoints").
"""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from glioseg.errors import GliosegError
from glioseg.models import adapt_first_conv, build_model
from glioseg.training.init_weights import (
    FORMATS,
    LoadReport,
    detect_format,
    load_initial_weights,
    read_checkpoint,
    remap,
)

SWIN = {"name": "swin_unetr", "params": {"feature_size": 12}}
SWIN_24 = {"name": "swin_unetr", "params": {"feature_size": 24}}
RESNET = {"name": "resnet_unet", "params": {"depth": 10, "decoder_channels": [32, 16, 16, 8, 8]}}
UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


@functools.cache
def _built(name: str, params: str, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model({"name": name, "params": json.loads(params)}, in_channels, 3)


def _model(spec: dict, in_channels: int = 4) -> nn.Module:
    """A freshly initialised network (built once per kind; each call gets its own copy)."""
    return copy.deepcopy(_built(spec["name"], json.dumps(spec["params"], sort_keys=True), in_channels))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _trained(spec: dict, in_channels: int = 4) -> dict[str, torch.Tensor]:
    """The state of a network of that kind whose weights differ from a fresh one's (as a trained one's do)."""
    generator = torch.Generator().manual_seed(1)
    return {k: v + torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in _state(_model(spec, in_channels)).items()}


def _assert_loaded(model: nn.Module, source: dict[str, torch.Tensor], keys: list[str]) -> None:
    state = model.state_dict()
    for key in keys:
        assert torch.equal(state[key], source[key]), key


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], keys: list[str]) -> None:
    state = model.state_dict()
    for key in keys:
        assert torch.equal(state[key], before[key]), key


# ---------------------------------------------------------------------------------------------
# fixtures in the published structures (each written once per module)


def _glioseg(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    source = _trained(UNET)
    path = folder / "model.pt"
    torch.save({"format": "glioseg-model/1", "state_dict": source, "epoch": 12, "best_metric": 0.81,
                "settings": {"model": UNET, "patch_size": [32, 32, 32]}, "regions": ["TC", "WT", "ET"],
                "in_channels": 4}, path)
    return path, source


def _research_contributions(folder: Path, *, ddp: bool = False, spec: dict = SWIN) -> tuple[Path, dict]:
    """SwinUNETR/BRATS21 trainer.save_checkpoint: best_acc is np.mean(...) → a numpy.float64."""
    source = _trained(spec)
    prefix = "module." if ddp else ""
    path = folder / f"fold1_f{spec['params']['feature_size']}{'_ddp' if ddp else ''}_model.pt"
    torch.save({"epoch": 299, "best_acc": np.mean(np.array([0.88, 0.93, 0.86])),
                "state_dict": OrderedDict((prefix + k, v) for k, v in source.items())}, path)
    return path, source


def _swin_ssl(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """model_swinvit.pt: a 1-channel Swin ViT alone, ``module.`` + encoder names, timm MLP names fc1/fc2.

    Built as MONAI's ``SwinTransformer``, the class of ``SwinUNETR.swinViT``, with SWIN's sizes.
    """
    from monai.networks.nets.swin_unetr import SwinTransformer

    torch.manual_seed(1)
    encoder = SwinTransformer(in_chans=1, embed_dim=12, window_size=(7, 7, 7), patch_size=(2, 2, 2),
                              depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24))
    source = {"swinViT." + k: v for k, v in _state(encoder).items()}

    def published_name(key: str) -> str:
        key = "module." + key[len("swinViT."):]
        return key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")

    published = OrderedDict((published_name(k), v) for k, v in source.items())
    assert "module.layers1.0.blocks.0.mlp.fc1.weight" in published and "module.patch_embed.proj.weight" in published
    path = folder / "model_swinvit.pt"
    torch.save({"state_dict": published}, path)
    return path, source


def _medicalnet(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """resnet_10.pth: DataParallel ``module.`` + ResNet names, 1 input channel, and the ``conv_seg`` head."""
    from monai.networks.nets import resnet10

    torch.manual_seed(1)
    encoder = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    head = nn.Sequential(nn.ConvTranspose3d(512, 32, 2, stride=2), nn.BatchNorm3d(32), nn.ReLU(),
                         nn.Conv3d(32, 32, 3, padding=1, bias=False), nn.BatchNorm3d(32), nn.ReLU(),
                         nn.Conv3d(32, 2, 1, bias=False))
    source = _state(encoder)
    published = OrderedDict(("module." + k, v) for k, v in source.items())
    published.update(("module.conv_seg." + k, v) for k, v in head.state_dict().items())
    assert tuple(published["module.conv1.weight"].shape) == (64, 1, 7, 7, 7)
    path = folder / "resnet_10.pth"
    torch.save({"state_dict": published}, path)
    return path, source


def _bare(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    source = _trained(UNET)
    path = folder / "weights.pt"
    torch.save(source, path)
    return path, source


MAKERS = {
    "glioseg": _glioseg,
    "research_contributions": _research_contributions,
    "research_contributions_ddp": functools.partial(_research_contributions, ddp=True),
    "research_contributions_f24": functools.partial(_research_contributions, spec=SWIN_24),
    "swin_ssl": _swin_ssl,
    "medicalnet": _medicalnet,
    "state_dict": _bare,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``checkpoint(name) -> (path, source state)``, each file written once for the module."""
    made: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    def get(name: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if name not in made:
            made[name] = MAKERS[name](tmp_path_factory.mktemp(name))
        return made[name]

    return get


# ---------------------------------------------------------------------------------------------
# each format


def test_glioseg_model_file_loads_completely(checkpoint, caplog):
    path, source = checkpoint("glioseg")
    model = _model(UNET)
    assert not torch.equal(model.state_dict()["model.0.conv.weight"], source["model.0.conv.weight"])
    with caplog.at_level(logging.INFO, logger="glioseg.training.init_weights"):
        report = load_initial_weights(model, path, "glioseg")
    assert report.loaded == list(source) and report.fraction == 1.0
    assert report.missing == report.unexpected == report.shape_mismatch == report.outside_scope == []
    _assert_loaded(model, source, list(source))
    assert f"loaded {len(source)}/{len(source)} tensors of the model (100%)" in caplog.text


@pytest.mark.parametrize("ddp", [False, True])
def test_research_contributions_swin_unetr_loads_with_or_without_module_prefix(checkpoint, ddp):
    path, source = checkpoint("research_contributions_ddp" if ddp else "research_contributions")
    assert type(read_checkpoint(path)["best_acc"]).__name__ == "float64"  # a numpy scalar, read weights-only
    model = _model(SWIN)
    report = load_initial_weights(model, path, "research_contributions")
    assert sorted(report.loaded) == sorted(source) and len(source) == 159
    assert report.missing == report.unexpected == report.shape_mismatch == []
    _assert_loaded(model, source, list(source))


def test_swin_ssl_loads_only_the_encoder_and_adapts_patch_embedding(checkpoint, caplog):
    path, source = checkpoint("swin_ssl")
    model = _model(SWIN, in_channels=4)
    before = _state(model)
    with caplog.at_level(logging.INFO, logger="glioseg.training.init_weights"):
        report = load_initial_weights(model, path, "swin_ssl", min_fraction=0.9)
    encoder = [k for k in before if k.startswith("swinViT.")]
    decoder = [k for k in before if not k.startswith("swinViT.")]
    assert report.scope == "swinViT." and sorted(report.loaded) == sorted(encoder) and len(encoder) == 126
    assert report.missing == report.unexpected == report.shape_mismatch == []
    assert report.fraction == 1.0 and sorted(report.outside_scope) == sorted(decoder)
    assert report.adapted == ["swinViT.patch_embed.proj.weight"]
    # fc1/fc2 landed in MONAI's linear1/linear2; every encoder tensor but the first equals its source
    _assert_loaded(model, source, [k for k in encoder if k != "swinViT.patch_embed.proj.weight"])
    first = model.state_dict()["swinViT.patch_embed.proj.weight"]
    expected = adapt_first_conv(source, "swinViT.patch_embed.proj.weight", 4)["swinViT.patch_embed.proj.weight"]
    assert first.shape == (12, 4, 2, 2, 2) and torch.equal(first, expected)
    _assert_untouched(model, before, decoder)
    assert "loaded 126/126 tensors of the encoder (swinViT.*) (100%)" in caplog.text
    assert f"{len(decoder)} tensors outside it keep their initialisation" in caplog.text


def test_medicalnet_loads_the_resnet_encoder_drops_conv_seg_and_adapts_conv1(checkpoint):
    path, source = checkpoint("medicalnet")
    model = _model(RESNET, in_channels=4)
    before = _state(model)
    report = load_initial_weights(model, path, "medicalnet", in_channels=4)
    encoder = [k for k in before if k.startswith("encoder.")]
    assert report.scope == "encoder." and sorted(report.loaded) == sorted(encoder) and len(encoder) == len(source)
    assert report.missing == report.shape_mismatch == []
    assert report.unexpected and all(k.startswith("conv_seg.") for k in report.unexpected)
    assert report.adapted == ["encoder.conv1.weight"]
    _assert_loaded(model, {"encoder." + k: v for k, v in source.items()},
                   [k for k in encoder if k != "encoder.conv1.weight"])
    conv1 = model.state_dict()["encoder.conv1.weight"]
    assert conv1.shape == (64, 4, 7, 7, 7)
    for channel in range(4):  # the 1-channel kernel on every modality, divided by 4
        assert torch.equal(conv1[:, channel:channel + 1], source["conv1.weight"] * 0.25)
    _assert_untouched(model, before, report.outside_scope)
    assert all(not k.startswith("encoder.") for k in report.outside_scope)


def test_bare_state_dict_loads(checkpoint):
    path, source = checkpoint("state_dict")
    model = _model(UNET)
    report = load_initial_weights(model, path, "state_dict")
    assert report.fraction == 1.0 and report.unexpected == []
    _assert_loaded(model, source, list(source))


# ---------------------------------------------------------------------------------------------
# auto detection


@pytest.mark.parametrize("fmt, spec", [
    ("glioseg", UNET),
    ("research_contributions", SWIN),
    ("swin_ssl", SWIN),
    ("medicalnet", RESNET),
    ("state_dict", UNET),
])
def test_auto_detects_each_format_and_loads_as_explicitly(checkpoint, fmt, spec):
    path, _ = checkpoint(fmt)
    assert detect_format(read_checkpoint(path)) == fmt
    explicit = load_initial_weights(_model(spec), path, fmt)
    auto = load_initial_weights(_model(spec), path)  # fmt="auto"
    assert auto == explicit and auto.fraction == 1.0


def test_auto_detects_ddp_research_contributions_and_refuses_unknown_declared_formats(checkpoint):
    path, _ = checkpoint("research_contributions_ddp")
    assert detect_format(read_checkpoint(path)) == "research_contributions"
    with pytest.raises(GliosegError, match="unknown checkpoint format 'other/2'"):
        detect_format({"format": "other/2", "state_dict": {}})
    with pytest.raises(GliosegError, match="no weights found"):
        detect_format({"epoch": 3, "optimizer": {"lr": 0.1}})


def test_remap_names_match_monai_swin_unetr(checkpoint):
    path, _ = checkpoint("swin_ssl")
    model = _model(SWIN)
    mapped = remap(read_checkpoint(path)["state_dict"], "swin_ssl", model)
    assert "swinViT.layers1.0.blocks.0.mlp.linear1.weight" in mapped
    assert "swinViT.layers4.0.downsample.reduction.weight" in mapped
    assert set(mapped) <= set(model.state_dict())


# ---------------------------------------------------------------------------------------------
# refusals


def test_checkpoint_of_another_model_size_is_refused_and_nothing_is_copied(checkpoint):
    path, _ = checkpoint("research_contributions_f24")
    model = _model(SWIN)  # feature_size 12
    before = _state(model)
    with pytest.raises(GliosegError) as caught:
        load_initial_weights(model, path)
    message = str(caught.value)
    assert str(path) in message and "below the minimum of 50%" in message
    assert "only 17 of 159 tensors of the model (11%)" in message and "different model size" in message
    assert "swinViT.patch_embed.proj.weight: checkpoint (24, 4, 2, 2, 2), model (12, 4, 2, 2, 2)" in message
    _assert_untouched(model, before, list(before))


def test_weights_for_another_network_are_refused_with_advice(checkpoint):
    path, _ = checkpoint("glioseg")  # a U-Net model file into a Swin UNETR
    with pytest.raises(GliosegError, match=r"only 0 of 159 .*(?s:.*)check the initialisation format.*'unet'"):
        load_initial_weights(_model(SWIN), path)
    medicalnet, _ = checkpoint("medicalnet")
    with pytest.raises(GliosegError, match="'medicalnet' weights initialise a ResNet encoder, and this model has none"):
        load_initial_weights(_model(SWIN), medicalnet)


def _touch(path: str) -> None:  # what a malicious pickle would call while being unpickled
    Path(path).touch()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _touch, (self.marker,)


class _Settings:
    lr = 0.1


def test_pickles_needing_code_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Payload(marker)}, evil)
    with pytest.raises(GliosegError) as caught:
        load_initial_weights(_model(UNET), evil)
    assert str(evil) in str(caught.value) and "weights_only=True" in str(caught.value)
    assert "_touch" in str(caught.value) and "never runs code" in str(caught.value)
    assert not marker.exists()

    instance = tmp_path / "instance.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": _Settings()}, instance)
    with pytest.raises(GliosegError, match=r"refused: this checkpoint is a pickle that needs"):
        read_checkpoint(instance)


def test_numpy_scalars_pickled_under_numpy_1_or_2_are_read_as_data(tmp_path):
    """research-contributions' best_acc: numpy 1 pickles it as numpy.core.multiarray.scalar, numpy 2 as numpy._core."""
    buffer = io.BytesIO()
    torch.save({"best_acc": np.float64(0.9059), "state_dict": {"w": torch.arange(4.0)}}, buffer,
               _use_new_zipfile_serialization=False)  # a plain pickle stream: the global's name can be rewritten
    numpy2 = buffer.getvalue()
    assert numpy2.count(b"numpy._core.multiarray") == 1
    numpy1 = numpy2.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    for name, raw in (("numpy2.pt", numpy2), ("numpy1.pt", numpy1)):
        (tmp_path / name).write_bytes(raw)
        payload = read_checkpoint(tmp_path / name)
        assert payload["best_acc"] == np.float64(0.9059) and torch.equal(payload["state_dict"]["w"], torch.arange(4.0))


def test_unreadable_or_missing_files_are_reported(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(GliosegError, match=r"not a PyTorch checkpoint: it starts with b'not a ch', where torch.save"):
        read_checkpoint(garbage)
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.arange(4.0)}, whole)
    (tmp_path / "cut.pt").write_bytes(whole.read_bytes()[:200])
    with pytest.raises(GliosegError, match=r"not a readable PyTorch checkpoint, truncated or corrupt \(RuntimeError"):
        read_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(GliosegError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(GliosegError, match="unknown initial-weights format 'timm'"):
        load_initial_weights(_model(UNET), garbage, "timm")
    assert FORMATS[0] == "auto"


def test_fraction_counts_the_scope():
    report = LoadReport(loaded=["a", "b", "c"], missing=["d"], unexpected=["x"], shape_mismatch=[],
                        scope="enc.", outside_scope=["dec.1", "dec.2", "dec.3"])
    assert report.total == 4 and report.fraction == 0.75
    assert LoadReport([], [], [], []).fraction == 0.0
