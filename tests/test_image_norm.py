"""Per-image histogram equalisation (scoregen.segmentation.image_norm) against values
worked out by hand, and its path through the datasets, the example and the benchmark."""

from __future__ import annotations

import pytest
import torch

from scoregen.segmentation import PhantomDataset, SegmentationDataset, equalize_histogram
from scoregen.segmentation.image_norm import normalise_images


def test_equalize_is_the_mid_rank_ecdf_worked_by_hand():
    # 4 pixels: values 0.1, 0.5, 0.5, 0.9. Mid-rank ECDF: (#< + #== / 2) / 4
    #   0.1 -> (0 + 0.5) / 4 = 0.125;  0.5 -> (1 + 1) / 4 = 0.5;  0.9 -> (3 + 0.5) / 4 = 0.875
    x = torch.tensor([[[0.1, 0.5], [0.5, 0.9]]])
    expected = 2.0 * torch.tensor([[[0.125, 0.5], [0.5, 0.875]]]) - 1.0
    torch.testing.assert_close(equalize_histogram(x), expected)


def test_equalize_removes_a_monotone_grey_curve_and_is_idempotent():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    curved = torch.sign(x) * x.abs() ** 0.4 * 0.7 + 0.2  # another "scanner": monotone map
    eq = equalize_histogram(x)
    torch.testing.assert_close(equalize_histogram(curved), eq)
    torch.testing.assert_close(equalize_histogram(eq), eq)
    # distinct values: the equalised image is the uniform grid (2 k + 1) / N - 1, k = 0..N-1
    n = 256
    grid = (2 * torch.arange(n, dtype=torch.float32) + 1) / n - 1
    torch.testing.assert_close(eq[0, 0].flatten().sort().values, grid)


def test_each_image_is_equalised_on_its_own_and_a_constant_image_maps_to_zero():
    a = torch.linspace(-1, 1, 16).reshape(1, 4, 4)
    batch = torch.cat([a, 0.1 * a - 0.5, torch.full((1, 4, 4), 0.3)])
    eq = equalize_histogram(batch)
    torch.testing.assert_close(eq[0], eq[1])
    assert torch.equal(eq[2], torch.zeros(4, 4))


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(TypeError, match=r"\(\.\.\., H, W\)"):
        equalize_histogram([[0.0, 1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        equalize_histogram(torch.zeros(5))
    with pytest.raises(ValueError, match="image_norm must be one of"):
        normalise_images(torch.zeros(1, 2, 2), "clahe")
    with pytest.raises(ValueError, match="image_norm must be one of"):
        PhantomDataset(2, image_norm="equalise")


def test_datasets_equalise_once_and_keep_the_name_through_subsets():
    plain = PhantomDataset(6, seed=3)
    eq = PhantomDataset(6, seed=3, image_norm="equalize")
    assert plain.image_norm == "none" and eq.image_norm == "equalize"
    torch.testing.assert_close(eq.images, equalize_histogram(plain.images))
    assert torch.equal(eq.masks, plain.masks)
    rest, held = eq.hold_out(2, seed=0)
    assert rest.image_norm == held.image_norm == "equalize"
    # a subset is not equalised again (idempotent anyway, but it must not be re-run on
    # augmented or already-normalised pixels): its images are the parent's rows
    torch.testing.assert_close(held.images, eq.images[held_rows(eq, held)])


def held_rows(parent: SegmentationDataset, part: SegmentationDataset) -> list[int]:
    return [parent.names.index(n) for n in part.names]
