"""The cache's arrays: exact storage, patch reads equal to slicing the whole case, z-score applied on read."""

import blosc2
import numpy as np
import pytest

from glioseg.cache import (
    CasePaths,
    CaseReader,
    Normalisation,
    pack_regions,
    storage_dtype,
    unpack_regions,
    write_case,
)
from glioseg.errors import GliosegError
from glioseg.preprocess import normalise


@pytest.mark.parametrize(("values", "dtype"), [
    ([0, 3, 255], np.uint8),
    ([-5, 0, 1200], np.int16),
    ([0, 40000], np.uint16),
    ([0, 1.5], np.float32),
    ([0, 70000.0, -1], np.int32),
    ([0, np.nan], np.float32),
])
def test_the_storage_dtype_is_the_narrowest_that_holds_every_value_exactly(values, dtype):
    image = np.asarray(values, dtype=np.float32).reshape(1, -1, 1, 1)
    assert storage_dtype(image) == np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        np.testing.assert_array_equal(image.astype(dtype).astype(np.float32), image)


def test_regions_pack_into_bits_and_back():
    rng = np.random.default_rng(0)
    regions = (rng.random((3, 5, 6, 7)) < 0.3).astype(np.uint8)
    packed = pack_regions(regions)
    assert packed.dtype == np.uint8 and packed.shape == (5, 6, 7) and packed.max() <= 7
    np.testing.assert_array_equal(unpack_regions(packed, 3), regions)
    with pytest.raises(GliosegError, match="9 regions do not fit"):
        pack_regions(np.zeros((9, 2, 2, 2), np.uint8))


def test_normalisation_applied_on_read_equals_the_whole_volume_zscore():
    rng = np.random.default_rng(1)
    image = np.zeros((2, 10, 9, 8), dtype=np.float32)
    image[0, 2:8, 2:7, 1:7] = rng.integers(50, 900, size=(6, 5, 6))
    image[1, 3:9, 1:8, 2:8] = rng.integers(1, 300, size=(6, 7, 6))
    scored = Normalisation.of(image, None).apply(image)
    for channel, raw in zip(scored, image):
        inside = channel[raw != 0]
        assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5
        assert np.all(channel[raw == 0] == 0)
    np.testing.assert_array_equal(scored, normalise(image))
    brain = image[0] != 0
    shared = Normalisation.of(image, brain)
    assert shared.shared_brain and np.all(shared.apply(image, brain)[:, ~brain] == 0)


def write_reader(tmp_path, image, regions, brain=None) -> CaseReader:
    stored = image.astype(storage_dtype(image))
    write_case(tmp_path, "c", stored, regions, brain)
    return CaseReader(CasePaths.of(tmp_path, "c"), Normalisation.of(image, brain), regions.shape[0])


def case(shape=(40, 36, 30), seed=2):
    rng = np.random.default_rng(seed)
    image = np.zeros((4, *shape), dtype=np.float32)
    image[:, 3:-3, 4:-4, 2:-2] = rng.integers(1, 2000, size=(4, shape[0] - 6, shape[1] - 8, shape[2] - 4))
    regions = np.zeros((3, *shape), dtype=np.uint8)
    regions[1, 10:20, 12:22, 8:16] = 1
    regions[0, 12:18, 14:20, 10:14] = 1
    regions[2, 13:16, 15:18, 11:13] = 1
    return image, regions


def test_a_cached_case_reads_back_exactly_as_int16_and_a_patch_equals_the_slice_of_the_whole(tmp_path):
    image, regions = case()
    reader = write_reader(tmp_path, image, regions)
    assert reader.shape == (40, 36, 30)
    assert blosc2.open(str(reader.paths.image)).dtype == np.int16  # the scanner's integers, losslessly
    whole, labels = reader.image(), reader.labels()
    np.testing.assert_array_equal(whole, normalise(image))
    np.testing.assert_array_equal(labels, regions)
    window = (slice(5, 37), slice(0, 20), slice(7, 29))
    np.testing.assert_array_equal(reader.image(window), whole[(slice(None), *window)])
    np.testing.assert_array_equal(reader.labels(window), regions[(slice(None), *window)])
    np.testing.assert_array_equal(reader.image((slice(None), slice(None), 11)), whole[..., 11])
    assert not reader.paths.brain.exists()  # the zero rule needs no brain array


def test_a_shared_brain_is_stored_and_zeroes_the_background_on_read(tmp_path):
    image, regions = case()
    image += 7.25  # a constant nonzero background: the brain must come from the mask
    brain = np.zeros(image.shape[1:], bool)
    brain[3:-3, 4:-4, 2:-2] = True
    reader = write_reader(tmp_path, image, regions, brain)
    assert reader.paths.brain.exists()
    whole = reader.image()
    np.testing.assert_allclose(whole, normalise(image, brain), atol=1e-6)
    assert np.all(whole[:, ~brain] == 0)
    window = (slice(0, 10), slice(0, 36), slice(5, 6))
    np.testing.assert_array_equal(reader.image(window), whole[(slice(None), *window)])


def test_a_damaged_array_is_named_with_what_to_do(tmp_path):
    image, regions = case()
    reader = write_reader(tmp_path, image, regions)
    reader.paths.image.write_bytes(b"not a blosc2 array")
    with pytest.raises(GliosegError, match="unreadable cache array") as error:
        reader.image()
    assert error.value.path == reader.paths.image and "re-run preprocessing" in error.value.hint
