"""Training samples read patch by patch from the cache: where patches land, and batches independent of the workers."""

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from glioseg.settings import Augmentation, SpatialAugmentation
from glioseg.training.data import ReadPatchd, case_items, resolve_workers, rotate_and_zoom, train_loader, train_transforms

NO_AUGMENTATION = Augmentation(flip_prob=0.0, scale_intensity=0.0, shift_intensity=0.0)
CASES = ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"]


@pytest.fixture
def cache(tiny_cache):
    return tiny_cache


def patches(cache, patch, fraction, draws=12, slice_index=None):
    """``draws`` patches of the first case, each with its own seed, and the whole case to compare them with."""
    item = case_items(cache, CASES[:1])[0]
    if slice_index is not None:
        item = {**item, "slice": slice_index}
    read = ReadPatchd(patch, fraction)
    out = []
    for seed in range(draws):
        read.set_random_state(seed)
        out.append(read(item))
    return item["reader"], out


def located(whole: np.ndarray, patch: np.ndarray) -> tuple[int, ...] | None:
    """Where ``patch`` sits inside ``whole`` (spatial axes), found by brute force."""
    shape = patch.shape[1:]
    for start in np.ndindex(*[w - p + 1 for w, p in zip(whole.shape[1:], shape)]):
        window = (slice(None), *[slice(s, s + n) for s, n in zip(start, shape)])
        if np.array_equal(whole[window], patch):
            return start
    return None


def test_a_patch_is_a_window_of_the_whole_case_with_its_labels(cache):
    reader, samples = patches(cache, (16, 16, 12), 0.0, draws=4)
    whole, labels = reader.image(), reader.labels()
    starts = set()
    for sample in samples:
        assert sample["image"].dtype == torch.float32 and sample["label"].dtype == torch.uint8
        image = sample["image"].numpy()
        start = located(whole, image)
        assert start is not None, "the patch is not a window of the whole case"
        window = (slice(None), *[slice(s, s + n) for s, n in zip(start, image.shape[1:])])
        np.testing.assert_array_equal(sample["label"].numpy(), labels[window])
        starts.add(start)
    assert len(starts) > 1  # placed at random


def test_oversampling_centres_patches_on_the_tumour(cache):
    reader, centred = patches(cache, (8, 8, 8), 1.0)
    assert all(sample["label"].numpy()[1].any() for sample in centred)  # every patch holds whole tumour
    _, uniform = patches(cache, (8, 8, 8), 0.0)
    tumour_share = reader.labels()[1].mean()
    assert tumour_share < 0.2 and sum(sample["label"].numpy()[1].any() for sample in uniform) < len(uniform)


def test_a_patch_larger_than_the_case_reads_all_of_it_and_is_padded_after(cache):
    reader, samples = patches(cache, (200, 200, 200), 0.5, draws=2)
    for sample in samples:
        assert tuple(sample["image"].shape[1:]) == reader.shape
    padded = train_transforms((200, 200, 200), NO_AUGMENTATION, 0.5)
    padded.set_random_state(0)
    assert tuple(padded(case_items(cache, CASES[:1])[0])["image"].shape) == (4, 200, 200, 200)


def test_a_2d_item_reads_a_window_of_its_slice(cache):
    reader, samples = patches(cache, (16, 16), 0.5, draws=3, slice_index=10)
    whole = reader.image()[..., 10]
    for sample in samples:
        assert sample["image"].shape == (4, 16, 16)
        assert located(whole, sample["image"].numpy()) is not None


def batches(cache, workers: int) -> list[dict]:
    transforms = train_transforms((16, 16, 12), Augmentation(flip_prob=0.5, scale_intensity=0.1, shift_intensity=0.1), 0.5)
    loader = train_loader(case_items(cache, CASES), transforms, batch_size=2, seed=3, epoch=2,
                          options={"num_workers": workers, "pin_memory": False})
    return list(loader)


def test_the_batches_do_not_depend_on_the_number_of_loader_workers(cache):
    alone, two = batches(cache, 0), batches(cache, 2)
    assert [b["case"] for b in alone] == [b["case"] for b in two]
    for a, b in zip(alone, two):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    again = batches(cache, 0)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(alone, again))


@pytest.mark.parametrize(("setting", "threads", "workers"), [("auto", 1, 0), ("auto", 2, 1), ("auto", 32, 8), (3, 1, 3)])
def test_auto_workers_follow_the_jobs_cpus(setting, threads, workers):
    assert resolve_workers(setting, threads) == workers


def test_rotation_and_zoom_move_image_and_masks_together_and_keep_the_masks_uint8():
    """A square seen by the image (linear) and by a mask (nearest): after any draw, the mask is where the image is bright."""
    square = np.zeros((1, 64, 64), dtype=np.float32)
    square[:, 20:44, 24:40] = 1.0
    sample = {"image": torch.from_numpy(square), "label": torch.from_numpy(square.astype(np.uint8))}
    transform = Compose(rotate_and_zoom(2, Augmentation(0.0, 0.0, 0.0, SpatialAugmentation(prob=1.0, rotate_degrees=40,
                                                                                            zoom=0.2))))
    moved = 0
    for seed in range(6):
        transform.set_random_state(seed)
        out = transform(dict(sample))
        image, label = np.asarray(out["image"]), np.asarray(out["label"])
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1} and image.shape == label.shape == (1, 64, 64)
        assert np.mean((image > 0.5) == (label == 1)) > 0.99
        assert 0.6 * 384 < label.sum() < 1.6 * 384  # zoomed by 0.8–1.2 on each axis
        moved += not np.array_equal(label, sample["label"].numpy())
        transform.set_random_state(seed)
        assert torch.equal(torch.as_tensor(transform(dict(sample))["image"]), torch.as_tensor(out["image"]))
    assert moved == 6


@pytest.mark.parametrize("spatial", [None, SpatialAugmentation(prob=0.0, rotate_degrees=30, zoom=0.1),
                                     SpatialAugmentation(prob=0.5, rotate_degrees=0, zoom=0)])
def test_no_rotation_or_zoom_adds_no_transform(spatial):
    assert rotate_and_zoom(3, Augmentation(0.5, 0.1, 0.1, spatial)) == []


def test_batches_mix_rotated_and_plain_patches_of_a_volume(cache):
    spatial = Augmentation(0.5, 0.1, 0.1, SpatialAugmentation(prob=0.5, rotate_degrees=15, zoom=0.1))
    loader = train_loader(case_items(cache, CASES), train_transforms((16, 16, 12), spatial, 0.5), batch_size=4, seed=3,
                          epoch=1, options={"num_workers": 0, "pin_memory": False})
    (batch,) = list(loader)
    assert batch["image"].shape == (4, 4, 16, 16, 12) and batch["label"].dtype == torch.uint8
