"""The infer path: regions → labels → original geometry, checked with a model whose answer is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from glioseg.inference import predict_case_labels
from glioseg.labels import BRATS
from glioseg.preprocess import CaseGeometry, CropBox
from glioseg.settings import InferenceSettings

SETTINGS = InferenceSettings(roi_size=(16, 16, 16), overlap=0.25, sw_batch_size=2, blend="gaussian", threshold=0.5, amp=False)


class ThresholdModel(nn.Module):
    """Region logits read off the input: TC where channel 0 > 0, WT where channel 1 > 0, ET where channel 2 > 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, :3] > 0, 10.0, -10.0)


def test_prediction_is_painted_and_put_back_where_it_was_cropped_from():
    cropped = np.full((4, 20, 18, 12), -1.0, dtype=np.float32)
    cropped[1, 2:15, 3:14, 1:10] = 1  # WT
    cropped[0, 5:10, 5:10, 3:7] = 1  # TC
    cropped[2, 6:8, 6:8, 4:6] = 1  # ET
    box = CropBox(start=(7, 4, 10), stop=(27, 22, 22))
    labels = predict_case_labels([ThresholdModel()], cropped, CaseGeometry(box, (40, 30, 25)), SETTINGS, BRATS, torch.device("cpu"))
    assert labels.shape == (40, 30, 25) and labels.dtype == np.uint8
    inside = labels[7:27, 4:22, 10:22]
    assert np.count_nonzero(labels) == np.count_nonzero(inside)  # nothing outside the crop box
    assert (inside == 4).sum() == 2 * 2 * 2
    assert (inside == 1).sum() == 5 * 5 * 4 - 8
    assert (inside == 2).sum() == 13 * 11 * 9 - 5 * 5 * 4
    assert inside[6, 6, 4] == 4 and inside[5, 5, 3] == 1 and inside[2, 3, 1] == 2 and inside[0, 0, 0] == 0


class Asymmetric(nn.Module):
    """A convolution with a lopsided kernel: its output changes when the input is mirrored."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(4, 3, 3, padding=1)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_flip_tta_averages_the_eight_mirrorings():
    from glioseg.inference import flip_combinations, predict_probabilities

    assert sorted(flip_combinations(3)) == sorted([(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)])
    model, cpu = Asymmetric().eval(), torch.device("cpu")
    image = torch.randn(1, 4, 12, 10, 8)
    settings = dataclasses.replace(SETTINGS, roi_size=(12, 10, 8), overlap=0.0, blend="constant")
    plain = predict_probabilities(model, image, settings, cpu)
    tta = predict_probabilities(model, image, dataclasses.replace(settings, tta=True), cpu)
    with torch.no_grad():
        expected = sum(torch.flip(torch.sigmoid(model(torch.flip(image, a))), a) if a else torch.sigmoid(model(image))
                       for a in flip_combinations(3)) / 8
    torch.testing.assert_close(tta, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(tta, plain, atol=1e-3)  # mirroring matters for this model


class ConstantLogit(nn.Module):
    """The same logit for every region and voxel."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3, *x.shape[2:]), self.logit)


def test_an_ensemble_averages_probabilities_not_votes():
    image = np.zeros((4, 12, 10, 8), dtype=np.float32)
    box, cpu = CaseGeometry(CropBox(start=(0, 0, 0), stop=(12, 10, 8)), (12, 10, 8)), torch.device("cpu")
    settings = dataclasses.replace(SETTINGS, roi_size=(12, 10, 8))
    # Probabilities 0.998, 0.378, 0.378: their mean 0.584 passes the threshold although two of three models say no.
    models = [ConstantLogit(6.0), ConstantLogit(-0.5), ConstantLogit(-0.5)]
    assert (predict_case_labels(models, image, box, settings, BRATS, cpu) == 4).all()
    assert (predict_case_labels(models[1:], image, box, settings, BRATS, cpu) == 0).all()
    # A confident no outweighs a fairly sure yes: 0.900 and 0.0025 average to 0.451.
    assert (predict_case_labels([ConstantLogit(2.2), ConstantLogit(-6.0)], image, box, settings, BRATS, cpu)
            == 0).all()
