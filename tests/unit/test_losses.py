import math
from pathlib import Path

import pytest
import torch

from glioseg.config import validate_config
from glioseg.errors import GliosegError
from glioseg.losses import LOSSES, build_loss
from glioseg.training.optim import build_optimizer

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SMOOTH = 1e-5  # the soft-Dice smoothing constant the losses use

SPECS = [
    {"name": name} for name in sorted(LOSSES)
] + [
    {"name": "dice_bce", "dice_weight": 0.5, "bce_weight": 2.0},
    {"name": "bce", "pos_weight": [3, 1, 1]},
    {"name": "focal", "gamma": 1.5, "alpha": 0.75},
    {"name": "exp_log", "w_dice": 0.3, "w_ce": 0.7, "gamma_dice": 0.5, "gamma_ce": 0.4, "pos_weight": [2, 1, 4]},
]
SHAPES = {"2d": (2, 3, 8, 8), "3d": (2, 3, 4, 4, 4)}


def targets(shape: tuple[int, ...]) -> torch.Tensor:
    """Random binary masks with foreground and background in every channel of every sample."""
    target = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    flat = target.view(shape[0], shape[1], -1)
    flat[..., 0], flat[..., 1] = True, False
    return target.to(torch.uint8)


def ids(spec: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in spec.items())


@pytest.mark.parametrize("spec", SPECS, ids=ids)
def test_each_loss_option_is_accepted_by_the_schema(spec):
    config = {
        "datasets": {"d": {"source": {"synthetic": {}}, "layout": "brats2021"}},
        "experiments": {"e": {"dataset": "d", "model": {"name": "unet"}, "loss": spec}},
    }
    assert validate_config(config, SCHEMA)["experiments"]["e"]["loss"] == spec


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("spec", SPECS, ids=ids)
def test_a_confident_right_prediction_costs_about_nothing_and_a_wrong_one_a_lot(spec, shape):
    loss = build_loss(spec)
    target = targets(shape)
    right = torch.where(target.bool(), 30.0, -30.0).requires_grad_()
    perfect = loss(right, target)
    perfect.backward()
    assert perfect.item() == pytest.approx(0.0, abs=1e-3)
    assert torch.isfinite(right.grad).all()
    assert loss(-right.detach(), target).item() > 0.5


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("spec", SPECS, ids=ids)
def test_gradients_flow_to_every_logit(spec, shape):
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(1)).requires_grad_()
    build_loss(spec)(logits, targets(shape).bool()).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad != 0).all()


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_pos_weight_multiplies_the_foreground_loss_of_its_own_region(shape):
    # logit 0: p = 1/2, so -ln p = -ln(1 - p) = ln 2; logit ln 3: p = 3/4, so -ln p = ln(4/3), -ln(1 - p) = ln 4.
    l3 = math.log(3)
    logits = torch.tensor([[0, l3, 0], [0, l3, l3], [0, 0, 0]]).view(1, 3, *[1] * (len(shape) - 3), 3)
    target = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.uint8).view(logits.shape)
    region0 = 3 * math.log(2) + 3 * math.log(4 / 3) + math.log(2)  # foreground voxels weighted 3
    region1 = math.log(2) + math.log(4) + math.log(4 / 3)
    region2 = 3 * math.log(2)
    expected = (region0 + region1 + region2) / 9
    assert build_loss({"name": "bce", "pos_weight": [3, 1, 1]})(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_exp_log_matches_the_formula_on_a_case_worked_by_hand():
    # Region 0: p = (1/2, 3/4), target (1, 0); region 1: p = (1/2, 1/2), target empty.
    logits = torch.tensor([[0, math.log(3)], [0, 0]]).view(1, 2, 1, 2)
    target = torch.tensor([[1, 0], [0, 0]]).view(1, 2, 1, 2)
    dice0 = (2 * 0.5 + SMOOTH) / (0.5 + 0.75 + 1 + SMOOTH)
    dice1 = SMOOTH / (0.5 + 0.5 + SMOOTH)
    dice_term = ((-math.log(dice0)) ** 0.5 + (-math.log(dice1)) ** 0.5) / 2
    ce_term = (2 * math.log(2) ** 0.4 + math.log(4) ** 0.4 + 2 * math.log(2) ** 0.4) / 4  # pos_weight 2 on region 0's foreground
    expected = 0.3 * dice_term + 0.7 * ce_term
    loss = build_loss({"name": "exp_log", "w_dice": 0.3, "w_ce": 0.7, "gamma_dice": 0.5, "gamma_ce": 0.4, "pos_weight": [2, 1]})
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    default = (0.8 * (-math.log((1 + SMOOTH) / (2 + SMOOTH))) ** 0.3 + 0.2 * math.log(2) ** 0.3)
    assert build_loss({"name": "exp_log"})(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1, 0]]]])).item() == pytest.approx(default, rel=1e-5)


@pytest.mark.parametrize("name", ["exp_log", "dice"])
@pytest.mark.parametrize("empty_logit", [-30.0, 0.0, 30.0])
def test_an_empty_target_channel_keeps_the_loss_and_its_gradient_finite(name, empty_logit):
    target = targets(SHAPES["3d"])
    target[:, 2] = 0
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    logits[:, 2] = empty_logit
    logits.requires_grad_()
    loss = build_loss({"name": name})(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_pos_weight_needs_one_value_per_region():
    with pytest.raises(GliosegError, match="pos_weight has 3 values but the model outputs 1 regions"):
        build_loss({"name": "bce", "pos_weight": [3, 1, 1]})(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_an_unknown_loss_is_refused_with_the_known_names():
    with pytest.raises(KeyError, match=r"unknown loss 'dicee'; known losses: .*'exp_log'.*'focal'"):
        build_loss({"name": "dicee"})


def test_adagrad_builds_and_takes_a_step():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer({"name": "adagrad", "lr": 0.1, "weight_decay": 0.0}, [weight])
    assert isinstance(optimizer, torch.optim.Adagrad)
    (weight**2).sum().backward()
    optimizer.step()
    assert torch.allclose(weight.detach(), torch.full((3,), 0.9))  # Adagrad's first step is lr * sign(gradient)


def test_a_batch_dice_pools_the_slices_so_empty_ones_do_not_dominate():
    """Three empty slices with a faint prediction and one tumour slice predicted right."""
    from glioseg.losses import build_loss

    target = torch.zeros(4, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1
    logits = torch.full((4, 1, 8, 8), -6.0)
    logits[0, 0, 2:6, 2:6] = 8.0
    per_sample = build_loss({"name": "dice"})(logits, target)
    pooled = build_loss({"name": "dice", "batch": True})(logits, target)
    assert per_sample > 0.7  # each empty slice costs ~1 for a probability of 0.0025 per pixel
    assert pooled < 0.05
    assert build_loss({"name": "dice_bce", "batch": True})(logits, target) < build_loss({"name": "dice_bce"})(logits, target)
