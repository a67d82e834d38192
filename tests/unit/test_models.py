"""Model registry: every network trains and predicts at a tiny size, the training hooks, encoder freezing, the schema."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glioseg.config import validate_config
from glioseg.errors import GliosegError
from glioseg.losses import build_loss
from glioseg.models import (
    MODELS,
    adapt_first_conv,
    build_model,
    on_epoch_start,
    training_loss,
)
from glioseg.models.dynunet import deep_supervision_weights, nnunet_topology
from glioseg.models.resnet_unet import FIRST_CONV, ResNetUNet
from glioseg.training.optim import build_optimizer

from .test_config import SCHEMA

IN, OUT = 4, 3

CUBE = (32, 32, 32)
SQUARE = (32, 32)
TINY = {
    # name: (params, patch, batch size): about the smallest sizes each network trains at.
    "unet": ({"channels": [4, 8, 16], "num_res_units": 0}, CUBE, 1),
    # Instance norm needs 2 voxels at Swin UNETR's 1/32 bottleneck.
    "swin_unetr": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}, (64, 32, 32), 1),
    "segresnet": ({"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}, CUBE, 1),
    "segresnet_vae": ({"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1], "vae_nz": 8}, CUBE, 1),
    "dynunet": ({"filters": 4, "deep_supervision": True, "deep_supr_num": 2}, CUBE, 1),
    # Batch norm needs 2 values per channel at the ResNet's 1-voxel bottom.
    "resnet_unet": ({"depth": 10, "decoder_channels": [16, 8, 8, 4, 4]}, CUBE, 2),
    # The 2D studies' models, on slices: the spatial dimensions follow the patch.
    "basic_unet": ({"features": [4, 4, 8, 8, 16, 4]}, SQUARE, 1),
    "attention_unet": ({"channels": [4, 8, 16]}, SQUARE, 1),
    "unet3plus": ({"features": [4, 8, 16, 32], "cat_channels": 4}, SQUARE, 1),
    "resunetpp": ({"features": [4, 8, 16]}, SQUARE, 1),
}


def config(name: str, params: dict, patch: tuple[int, ...] = CUBE) -> dict:
    return {
        "datasets": {"d": {"source": {"synthetic": {}}, "layout": "brats2021"}},
        "experiments": {"e": {"dataset": "d", "model": {"name": name, "params": params}, "patch_size": list(patch)}},
    }


def tiny_model(name: str, seed: int = 0, *, patch: tuple[int, ...] | None = None,
               **changes) -> tuple[nn.Module, tuple[int, ...], int]:
    """The tiny network for its (or the given) patch, built from a validated config like the training loop builds it:
    with as many spatial dimensions as the patch has sides."""
    params, default_patch, batch = TINY[name]
    patch = patch or default_patch
    experiment = validate_config(config(name, {**params, **changes}, patch), SCHEMA)["experiments"]["e"]
    torch.manual_seed(seed)
    patch_size = experiment["patch_size"]
    return build_model(experiment["model"], IN, OUT, len(patch_size), patch_size=patch_size), patch, batch


def batch_of(patch: tuple[int, ...], batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, IN, *patch, generator=generator)
    label = (torch.rand(batch, OUT, *patch, generator=generator) > 0.7).float()
    return image, label


def test_the_tiny_sizes_cover_every_registered_model():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_trains_predicts_logits_and_round_trips_through_a_weights_only_file(name, tmp_path):
    model, patch, batch = tiny_model(name)
    image, label = batch_of(patch, batch)
    model.train()
    loss = training_loss(model, model(image), label, build_loss({"name": "dice_bce"}))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        logits = model(image)
    assert isinstance(logits, torch.Tensor) and logits.shape == (batch, OUT, *patch)

    torch.save(model.state_dict(), tmp_path / "model.pt")
    restored, _, _ = tiny_model(name, seed=1)
    restored.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(restored.eval()(image), logits)


@pytest.mark.parametrize("name, patch", [("unet", SQUARE), ("basic_unet", CUBE), ("attention_unet", CUBE),
                                         ("unet3plus", CUBE), ("resunetpp", CUBE)])
def test_the_u_nets_train_in_the_other_spatial_dimensionality_too(name, patch):
    model, _, batch = tiny_model(name, patch=patch)
    image, label = batch_of(patch, batch)
    logits = model.train()(image)
    build_loss({"name": "dice_bce"})(logits, label).backward()
    assert logits.shape == (batch, OUT, *patch)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unet3plus_without_the_bridge_is_smaller_and_still_trains():
    bridged, patch, batch = tiny_model("unet3plus")
    model, _, _ = tiny_model("unet3plus", bridge=False)
    assert isinstance(model.bridge, nn.Identity) and _size(model) < _size(bridged)
    image, label = batch_of(patch, batch)
    logits = model.train()(image)
    loss = build_loss({"name": "dice_bce"})(logits, label)
    loss.backward()
    assert logits.shape == (batch, OUT, *patch) and torch.isfinite(loss)


def test_unet3plus_dilation_dilates_the_encoder_convolutions_only():
    model, patch, batch = tiny_model("unet3plus", dilation=2)
    encoder = [m for part in (model.encoder, model.bridge) for m in part.modules() if isinstance(m, nn.Conv2d)]
    decoder = [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(encoder) == 8 and all(conv.dilation == (2, 2) and conv.padding == (2, 2) for conv in encoder)
    assert decoder and all(conv.dilation == (1, 1) for conv in decoder)
    image, _ = batch_of(patch, batch)
    with torch.no_grad():
        assert model.eval()(image).shape == (batch, OUT, *patch)


def test_basic_unet_with_three_convolutions_per_block_deepens_every_block_alike():
    plain, patch, batch = tiny_model("basic_unet")
    model, _, _ = tiny_model("basic_unet", convs_per_block=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    plain_convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(plain_convs) == 2 * 9 and len(convs) == 3 * 9  # stem, 4 down, 4 up
    blocks = [m for m in model.modules() if type(m).__name__ == "TwoConv"]
    for block in blocks:  # the added layer repeats the block's second one: width, norm, activation
        second, third = block.conv_1, block.conv_2
        assert third.conv.in_channels == third.conv.out_channels == second.conv.out_channels
        assert [type(m) for m in third.adn.children()] == [type(m) for m in second.adn.children()]
    image, label = batch_of(patch, batch)
    logits = model.train()(image)
    build_loss({"name": "dice_bce"})(logits, label).backward()
    assert logits.shape == (batch, OUT, *patch) and blocks[-1].conv_2.conv.weight.grad.abs().sum() > 0


def test_a_plain_model_trains_on_loss_fn_of_its_logits():
    model, patch, batch = tiny_model("unet")
    image, label = batch_of(patch, batch)
    logits = model.train()(image)
    loss_fn = build_loss({"name": "dice_bce"})
    assert torch.equal(training_loss(model, logits, label, loss_fn), loss_fn(logits, label))
    with pytest.raises(TypeError, match="must define training_loss"):
        training_loss(model, (logits, logits), label, loss_fn)


def test_dynunet_stacks_deep_supervision_heads_in_training_and_weights_them_the_nnunet_way():
    model, patch, batch = tiny_model("dynunet")
    image, _ = batch_of(patch, batch)
    assert model.train()(image).shape == (batch, 3, OUT, *patch)  # logits and 2 heads, at full size
    with torch.no_grad():
        assert model.eval()(image).shape == (batch, OUT, *patch)

    assert torch.allclose(deep_supervision_weights(3), torch.tensor([4 / 7, 2 / 7, 1 / 7]))
    stacked = torch.stack([torch.full((1, OUT, 2, 2, 2), v) for v in (1.0, 2.0, 3.0)], dim=1)
    target = torch.zeros(1, OUT, 2, 2, 2)
    # MSE of each head against zeros is 1, 4, 9: weighted (4 * 1 + 2 * 4 + 1 * 9) / 7 = 3
    assert torch.allclose(training_loss(model, stacked, target, F.mse_loss), torch.tensor(3.0))
    assert torch.equal(training_loss(model, stacked[:, 0], target, F.mse_loss), torch.tensor(1.0))


def test_segresnet_vae_adds_its_weighted_vae_loss_in_training_only():
    model, patch, batch = tiny_model("segresnet_vae", vae_weight=0.5)
    image, _label = batch_of(patch, batch)
    logits, vae_loss = model.train()(image)
    assert logits.shape == (batch, OUT, *patch) and vae_loss.ndim == 0 and vae_loss > 0
    toy_logits, toy_target = torch.full((1, OUT, 2, 2, 2), 2.0), torch.zeros(1, OUT, 2, 2, 2)
    assert torch.allclose(training_loss(model, (toy_logits, torch.tensor(3.0)), toy_target, F.mse_loss),
                          torch.tensor(4.0 + 0.5 * 3.0))
    with pytest.raises(ValueError, match=r"built for \[32, 32, 32\] training patches"):
        model(torch.randn(1, IN, 64, 64, 64))


def test_models_that_size_themselves_by_the_patch_say_what_they_need():
    for name, alternative in [("dynunet", "kernel_size and strides"), ("segresnet_vae", "input_image_size")]:
        with pytest.raises(ValueError, match=f"needs the training patch size.*{alternative}"):
            build_model({"name": name, "params": {}}, IN, OUT)
    explicit = build_model({"name": "dynunet", "params": {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "filters": 4}},
                           IN, OUT)
    assert explicit.strides == [1, 2, 2]
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model({"name": "swin_unetr", "params": {}}, IN, OUT, patch_size=[96, 96, 80])


def test_nnunet_topology_halves_isotropic_axes_down_to_4_voxels_and_spares_coarse_ones():
    kernels, strides = nnunet_topology([128, 128, 128])
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 5 and kernels == [[3, 3, 3]] * 6
    kernels, strides = nnunet_topology([64, 64, 16], spacing=[1.0, 1.0, 3.0])
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    with pytest.raises(ValueError, match="cannot be halved evenly"):
        nnunet_topology([36, 36, 36])


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int, set_to_none: bool = True) -> None:
    """``n`` optimiser steps the way the training loop takes them."""
    loss_fn = build_loss({"name": "dice_bce"})
    model.train()
    for seed in range(n):
        image, label = batch_of(CUBE, 2, seed=seed)
        optimizer.zero_grad(set_to_none=set_to_none)
        training_loss(model, model(image), label, loss_fn).backward()
        optimizer.step()


def test_a_frozen_encoder_gets_no_updates_from_adamw_weight_decay_or_batch_norm():
    model, _, _ = tiny_model("resnet_unet", freeze_encoder="frozen")
    optimizer = build_optimizer({"name": "adamw", "lr": 1e-2, "weight_decay": 0.5}, model.parameters())
    encoder, decoder = _snapshot(model.encoder), _snapshot(model.decoder)
    for epoch in (1, 2):
        on_epoch_start(model, epoch)
        _steps(model, optimizer, 1)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert _changed(encoder, model.encoder) == set()  # weights and running statistics alike
    assert _changed(decoder, model.decoder)


@pytest.mark.slow
def test_freeze_encoder_n_unfreezes_after_n_epochs_and_refreezing_stops_all_drift():
    model, _, _ = tiny_model("resnet_unet", freeze_encoder=1)
    optimizer = build_optimizer({"name": "adamw", "lr": 1e-2, "weight_decay": 0.5}, model.parameters())
    before = _snapshot(model.encoder)
    on_epoch_start(model, 1)
    _steps(model, optimizer, 1)
    assert _changed(before, model.encoder) == set()

    on_epoch_start(model, 2)
    assert all(p.requires_grad for p in model.encoder.parameters())
    _steps(model, optimizer, 1)
    assert "conv1.weight" in _changed(before, model.encoder)

    # Now the encoder has AdamW state: re-freezing must still stop decay and momentum, even with zeroed grads.
    model.set_encoder_frozen(True)
    again = _snapshot(model.encoder)
    _steps(model, optimizer, 1, set_to_none=False)
    assert _changed(again, model.encoder) == set()


def test_adapt_first_conv_spreads_a_single_channel_kernel_over_the_modalities():
    weight = torch.randn(8, 1, 3, 3, 3)
    state = {"conv1.weight": weight, "bn1.weight": torch.ones(8)}
    adapted = adapt_first_conv(state, "conv1.weight", 4)
    assert adapted["conv1.weight"].shape == (8, 4, 3, 3, 3)
    assert torch.equal(adapted["conv1.weight"], weight.repeat(1, 4, 1, 1, 1) / 4)
    assert state["conv1.weight"] is weight and adapted["bn1.weight"] is state["bn1.weight"]
    image = torch.randn(1, 1, 6, 6, 6)
    assert torch.allclose(F.conv3d(image.repeat(1, 4, 1, 1, 1), adapted["conv1.weight"]), F.conv3d(image, weight), atol=1e-5)
    with pytest.raises(KeyError, match=r"no 'conv0\.weight'"):
        adapt_first_conv(state, "conv0.weight", 4)


def test_a_single_channel_encoder_loads_into_the_four_channel_model_after_adaptation():
    single = ResNetUNet(1, OUT, depth=10, decoder_channels=[16, 8, 8, 4, 4]).state_dict()
    model = ResNetUNet(IN, OUT, depth=10, decoder_channels=[16, 8, 8, 4, 4])
    model.load_state_dict(adapt_first_conv(single, FIRST_CONV, IN))
    assert torch.equal(model.state_dict()[FIRST_CONV], single[FIRST_CONV].repeat(1, IN, 1, 1, 1) / IN)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("unet", {"chanels": [8]}, r"'chanels' was unexpected"),
        ("swin_unetr", {"feature_size": 16}, r"feature_size: 16 is not a multiple of 12"),
        ("swin_unetr", {"channels": [8]}, r"'channels' was unexpected"),
        ("segresnet", {"init_filter": 8}, r"'init_filter' was unexpected"),
        ("segresnet_vae", {"vae_weight": -1}, r"vae_weight: -1 is less than the minimum of 0"),
        ("dynunet", {"kernel_size": [3, 3, 3]}, r"'strides' is a dependency of 'kernel_size'"),
        ("dynunet", {"deep_supervision": "yes"}, r"deep_supervision: 'yes' is not of type 'boolean'"),
        ("resnet_unet", {"depth": 101}, r"depth: 101 is not one of \[10, 18, 34, 50\]"),
        ("resnet_unet", {"freeze_encoder": True}, r"freeze_encoder: True is not valid"),
        ("basic_unet", {"feature": [8]}, r"'feature' was unexpected"),
        ("basic_unet", {"upsample": "bilinear"}, r"upsample: 'bilinear' is not one of"),
        ("attention_unet", {"chanels": [8]}, r"'chanels' was unexpected"),
        ("unet3plus", {"dilations": 2}, r"'dilations' was unexpected"),
        ("unet3plus", {"bridge": "no"}, r"bridge: 'no' is not of type 'boolean'"),
        ("resunetpp", {"feature": [8]}, r"'feature' was unexpected"),
        ("resunetpp", {"features": [32, 62]}, r"62 is not a multiple of 4"),
    ],
)
def test_the_schema_refuses_a_bad_parameter_of_each_model(name, params, message):
    with pytest.raises(GliosegError, match=r"experiments → e → model → params.*" + message):
        validate_config(config(name, params), SCHEMA)
