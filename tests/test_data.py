"""Data: the COVID-QU-Ex loader on the real layout (phantom folders and the real sets), the
phantom itself, and the augmentation."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data
from PIL import Image
from torch.utils.data import DataLoader

from scoregen.segmentation import (
    Chain,
    CovidQUDataset,
    PhantomDataset,
    RandomAffine,
    RandomIntensity,
    SegmentationDataset,
    describe_augment,
    find_split_root,
    make_phantom_set,
    training_augment,
    write_phantom_folder,
)

INNER = Path("Infection Segmentation Data") / "Infection Segmentation Data"
N_TRAIN, N_VAL = 10, 4


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    """A phantom written in the real layout: the set folder (above the split root)."""
    root = tmp_path_factory.mktemp("phantom") / "covid-qu-ex-64"
    write_phantom_folder(root, n_train=N_TRAIN, n_val=N_VAL, size=64, seed=0)
    return root


@pytest.fixture
def phantom_copy(phantom_root, tmp_path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(phantom_root, tmp_path / "copy"))


# ---------------------------------------------------------------------- find_split_root


@pytest.mark.parametrize(
    "given",
    [".", "Infection Segmentation Data", str(INNER)],
    ids=["set-folder", "outer", "split-root"],
)
def test_find_split_root_from_any_level(phantom_root, given):
    assert find_split_root(phantom_root / given) == phantom_root / INNER
    assert find_split_root(str(phantom_root.parent)) == phantom_root / INNER  # one more level


def test_find_split_root_moved_inner_folder_and_archive(tmp_path):
    # Users who move the inner folder up: .../Infection Segmentation Data/Train/...
    moved = tmp_path / "moved" / "Infection Segmentation Data"
    (moved / "Train" / "Normal" / "images").mkdir(parents=True)
    assert find_split_root(tmp_path / "moved") == moved
    # The whole archive: Lung and Infection Segmentation Data side by side.
    archive = tmp_path / "archive"
    for name in ("Lung Segmentation Data", "Infection Segmentation Data"):
        (archive / name / name / "Val").mkdir(parents=True)
    assert find_split_root(archive) == archive / INNER
    lung = archive / "Lung Segmentation Data"
    assert find_split_root(lung) == lung / "Lung Segmentation Data"


def test_find_split_root_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset root .*nowhere does not exist"):
        find_split_root(tmp_path / "nowhere")
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no split folder \(Train/Val/Test\) found"):
        find_split_root(tmp_path / "a")
    deep = tmp_path / "deep" / "1" / "2" / "3" / "4" / "5"
    (deep / "Train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="within 4 levels"):
        find_split_root(tmp_path / "deep")
    assert find_split_root(tmp_path / "deep", max_depth=5) == deep
    for name in ("x", "y"):
        (tmp_path / "two" / name / "Train").mkdir(parents=True)
    with pytest.raises(ValueError, match="several split roots"):
        find_split_root(tmp_path / "two")


# ---------------------------------------------------------------------- CovidQUDataset


def test_loader_reads_phantom_folder_exactly(phantom_root):
    data = make_phantom_set(N_TRAIN + N_VAL, size=64, seed=0)
    for split, offset, n in (("Train", 0, N_TRAIN), ("Val", N_TRAIN, N_VAL)):
        for task, key in (("lung", "lung_masks"), ("infection", "infection_masks")):
            ds = CovidQUDataset(phantom_root, split=split, task=task)
            assert len(ds) == n and ds.split == split and ds.task == task
            assert ds.images.shape == (n, 1, 64, 64) and ds.images.dtype == torch.float32
            assert set(ds.masks.unique().tolist()) <= {-1.0, 1.0}
            by_name = {name: i for i, name in enumerate(data["names"])}
            index = [by_name[name] for name in ds.names]
            assert all(offset <= i < offset + n for i in index)
            # 8-bit images and 0/255 masks read back bit-exactly in [-1, 1].
            torch.testing.assert_close(ds.images, data["images"][index], rtol=0, atol=1e-6)
            assert torch.equal(ds.masks, data[key][index])
            assert ds.classes_of == [data["classes"][i] for i in index]


def test_item_interface_and_loader_order(phantom_root):
    ds = CovidQUDataset(phantom_root, "Val", task="infection")
    item = ds[0]
    assert set(item) == {"image", "mask", "name", "class"}
    assert item["image"].shape == (1, 64, 64) and item["mask"].shape == (1, 64, 64)
    # Classes in COVID-19, Non-COVID, Normal order; names with spaces and parentheses.
    assert ds.classes_of == sorted(ds.classes_of, key=["COVID-19", "Normal"].index)
    assert any(" (" in name for name in ds.names)
    assert ds[-1]["name"] == ds.names[-1]
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 1, 64, 64) and len(batch["name"]) == 3
    covid = ds.class_mask("COVID-19")
    assert covid.sum() == ds.classes_of.count("COVID-19")
    assert (ds.masks[covid].flatten(1).amax(1) == 1).all()
    assert (ds.masks[~covid] == -1).all()


def test_classes_restriction_and_missing_class_folder(phantom_copy):
    ds = CovidQUDataset(phantom_copy, "Train", classes=("COVID-19",))
    assert set(ds.classes_of) == {"COVID-19"}
    shutil.rmtree(phantom_copy / INNER / "Train" / "Normal")  # tolerated
    assert CovidQUDataset(phantom_copy, "Train").classes_of == ds.classes_of
    with pytest.raises(FileNotFoundError, match="no PNG images found under .*Train"):
        CovidQUDataset(phantom_copy, "Train", classes=("Normal", "Non-COVID"))
    with pytest.raises(ValueError, match="unknown classes"):
        CovidQUDataset(phantom_copy, "Train", classes=("covid",))


def test_resize_to_other_sizes(phantom_root):
    ds64 = CovidQUDataset(phantom_root, "Val", task="lung")
    ds32 = CovidQUDataset(phantom_root, "Val", task="lung", size=32)
    assert ds32.images.shape == (N_VAL, 1, 32, 32)
    # Images by area: each 32x32 pixel is the mean of a 2x2 block.
    area = torch.nn.functional.avg_pool2d(ds64.images, 2)
    torch.testing.assert_close(ds32.images, area, atol=1e-5, rtol=0)
    # Masks by area then > 0.5 (ties of a 2x2 block go to background).
    unit = (ds64.masks + 1) / 2
    expected = (torch.nn.functional.avg_pool2d(unit, 2) > 0.5).float() * 2 - 1
    assert torch.equal(ds32.masks, expected)
    assert CovidQUDataset(phantom_root, "Val", size=80).masks.shape == (N_VAL, 1, 80, 80)


def test_large_inputs_of_any_size(tmp_path):
    """256x256 and non-square inputs are resized to the asked size (the mcsz case)."""
    rng = np.random.default_rng(0)
    for cls, shape in (("Normal", (256, 256)), ("Non-COVID", (120, 100))):
        base = tmp_path / "Train" / cls
        for folder in ("images", "lung masks"):
            (base / folder).mkdir(parents=True)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        mask = np.zeros(shape, dtype=np.uint8)
        mask[: shape[0] // 2, : shape[1] // 3] = 255
        Image.fromarray(image).save(base / "images" / "Mixed Case (1).PNG")
        Image.fromarray(mask).save(base / "lung masks" / "Mixed Case (1).PNG")
    ds = CovidQUDataset(tmp_path, "train", size=64)  # split name case-insensitive
    assert ds.images.shape == (2, 1, 64, 64)
    normal = ds.names.index("Mixed Case (1).PNG", ds.classes_of.index("Normal"))
    image_256 = _read(tmp_path / "Train" / "Normal" / "images" / "Mixed Case (1).PNG")
    assert image_256.shape == (256, 256)
    blocks = image_256.reshape(64, 4, 64, 4).mean(axis=(1, 3)) / 255 * 2 - 1
    np.testing.assert_allclose(ds.images[normal, 0].numpy(), blocks, atol=1e-5)
    assert ds.masks[normal, 0, :32, :21].eq(1).all() and ds.masks[normal, 0, 32:].eq(-1).all()


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float64)


def test_missing_split_and_missing_mask_folder(phantom_copy):
    with pytest.raises(FileNotFoundError, match=r"split folder .*Test does not exist"):
        CovidQUDataset(phantom_copy, "Test")
    shutil.rmtree(phantom_copy / INNER / "Val" / "Normal" / "infection masks")
    with pytest.raises(FileNotFoundError, match="task='infection' needs the 'infection masks'"):
        CovidQUDataset(phantom_copy, "Val", task="infection")
    with pytest.raises(ValueError, match="task must be one of"):
        CovidQUDataset(phantom_copy, "Val", task="lungs")


def test_image_without_mask(phantom_copy):
    mask_dir = phantom_copy / INNER / "Train" / "COVID-19" / "lung masks"
    victim = sorted(mask_dir.iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"has no mask: expected .*{victim.name}"):
        CovidQUDataset(phantom_copy, "Train")


def test_corrupt_png(phantom_copy):
    image_dir = phantom_copy / INNER / "Train" / "Normal" / "images"
    victim = sorted(image_dir.iterdir())[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*Normal"):
        CovidQUDataset(phantom_copy, "Train")


def test_image_and_mask_of_different_sizes(phantom_copy):
    mask_dir = phantom_copy / INNER / "Train" / "Normal" / "lung masks"
    victim = sorted(mask_dir.iterdir())[0]
    Image.fromarray(np.zeros((32, 48), dtype=np.uint8)).save(victim)
    with pytest.raises(ValueError, match=r"is 64x64 but its mask .* is 48x32"):
        CovidQUDataset(phantom_copy, "Train")


def test_non_binary_masks_one_warning_with_count(phantom_copy):
    mask_dir = phantom_copy / INNER / "Train" / "COVID-19" / "lung masks"
    victims = sorted(mask_dir.iterdir())[:2]
    for victim in victims:
        raw = _read(victim)
        soft = np.where(raw > 0, 200, 100).astype(np.uint8)  # 200 > 127 fg, 100 bg
        Image.fromarray(soft).save(victim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CovidQUDataset(phantom_copy, "Train")
    messages = [str(w.message) for w in caught if "not binary" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith(f"2 of {N_TRAIN} mask files")
    i = ds.names.index(victims[0].name)
    expected = np.where(_read(victims[0]) > 127, 1.0, -1.0)
    np.testing.assert_array_equal(ds.masks[i, 0].numpy(), expected)


# ---------------------------------------------------------------------- augmentation


def test_augmentation_deterministic_binary_and_small(phantom_root):
    ds = CovidQUDataset(phantom_root, "Train", augment=True, seed=3)
    a, b = ds[2], ds[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], ds.images[2])  # it did transform
    assert set(a["mask"].unique().tolist()) <= {-1.0, 1.0}
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["image"], a["image"])
    ds.set_epoch(0)
    assert torch.equal(ds[2]["image"], a["image"])
    other = CovidQUDataset(phantom_root, "Train", augment=True, seed=4)
    assert not torch.equal(other[2]["image"], a["image"])
    # Small: the augmented mask still overlaps the original well.
    orig, aug = ds.masks[2] > 0, a["mask"] > 0
    assert (orig & aug).sum() / (orig | aug).sum() > 0.75


def test_zero_augmentation_is_identity():
    ds = PhantomDataset(3, augment=RandomAffine(0.0, 0.0, 0.0))
    item = ds[1]
    torch.testing.assert_close(item["image"], ds.images[1], atol=1e-5, rtol=0)
    assert torch.equal(item["mask"], ds.masks[1])
    with pytest.raises(ValueError, match="max_scale must be < 1"):
        RandomAffine(max_scale=1.0)
    with pytest.raises(TypeError, match="augment must be a bool, a RandomAffine"):
        PhantomDataset(2, augment="flip")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        PhantomDataset(2, seed=-1)


def test_augmentation_never_flips():
    """A mask on the left fifth of the image stays on the left in every draw: no flips
    (chest anatomy is not left-right symmetric)."""
    image = torch.linspace(-1, 1, 32).expand(1, 1, 32, 32).clone()  # dark left, bright right
    mask = -torch.ones(1, 1, 32, 32)
    mask[..., :6] = 1.0
    ds = SegmentationDataset(image, mask, ["a.png"], ["Normal"], augment=True)
    for epoch in range(30):
        ds.set_epoch(epoch)
        item = ds[0]
        assert (item["mask"][0, 8:24, 2:4] == 1).all()
        assert (item["mask"][0, :, 16:] == -1).all()
        assert item["image"][0, 16, :8].mean() < item["image"][0, 16, -8:].mean()


def test_intensity_augmentation_is_the_stated_curve_and_leaves_the_mask():
    """x' = clamp(c (2 u^gamma - 1) + b, -1, 1), u = (x + 1) / 2, with (log gamma, c, b)
    the caller's three uniform draws in that order."""
    image = torch.linspace(-1, 1, 64).reshape(1, 8, 8)
    mask = torch.where(image > 0, 1.0, -1.0)
    aug = RandomIntensity(max_log_gamma=0.4, max_contrast=0.2, max_brightness=0.1)
    out, out_mask = aug(image, mask, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    gamma = np.exp(rng.uniform(-0.4, 0.4))
    c, b = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
    u = (image.double() + 1) / 2
    want = (c * (2 * u ** gamma - 1) + b).clamp(-1, 1)
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=0)
    assert out_mask is mask and not torch.allclose(out, image)
    assert out.min() >= -1 and out.max() <= 1
    assert (out[0].flatten().diff() >= 0).all()  # monotone: the anatomy's order is kept
    same, _ = RandomIntensity(0.0, 0.0, 0.0)(image, mask, np.random.default_rng(1))
    torch.testing.assert_close(same, image, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="max_contrast must be < 1"):
        RandomIntensity(max_contrast=1.0)
    with pytest.raises(ValueError, match="max_log_gamma must be a finite number"):
        RandomIntensity(max_log_gamma=-0.1)


def test_a_chain_applies_affine_then_intensity_with_one_rng():
    ds = PhantomDataset(3, augment=training_augment(True, True), seed=5)
    affine_only = PhantomDataset(3, augment=RandomAffine(), seed=5)
    item, moved = ds[1], affine_only[1]
    assert torch.equal(item["mask"], moved["mask"])  # the affine's draw comes first
    rng = np.random.default_rng([5, 0, 1])
    RandomAffine().sample_matrix(rng)  # consume the affine's draws
    want, _ = RandomIntensity()(moved["image"], moved["mask"], rng)
    torch.testing.assert_close(item["image"], want)
    assert [describe_augment(a) for a in (None, RandomAffine(), RandomIntensity(),
                                          training_augment(True, True))] == [
        "none", "affine", "intensity", "affine+intensity"]
    assert training_augment(False, False) is None
    assert isinstance(training_augment(False, True), RandomIntensity)
    with pytest.raises(TypeError, match="Chain takes a non-empty tuple"):
        Chain(("flip",))


# ---------------------------------------------------------------------- phantom


def test_phantom_deterministic_and_prefix_stable():
    a = make_phantom_set(6, seed=1)
    b = make_phantom_set(6, seed=1)
    c = make_phantom_set(4, seed=1)
    d = make_phantom_set(4, seed=2)
    for key in ("images", "lung_masks", "infection_masks"):
        assert torch.equal(a[key], b[key])
        assert torch.equal(a[key][:4], c[key])
    assert not torch.equal(c["images"], d["images"])
    assert a["names"][:4] == c["names"]


def test_phantom_classes_and_masks():
    data = make_phantom_set(24, seed=0, infection_fraction=0.25)
    images, lung, inf = data["images"], data["lung_masks"] > 0, data["infection_masks"] > 0
    assert images.shape == (24, 1, 64, 64) and images.dtype == torch.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    assert data["classes"].count("COVID-19") == 6  # floor(24 * 0.25)
    covid = torch.tensor([c == "COVID-19" for c in data["classes"]])
    assert inf[covid].flatten(1).any(1).all()  # every COVID-19 case has an opacity
    assert not inf[~covid].any()  # the others are empty, like the real data
    assert not (inf & ~lung).any()  # infection lies inside the lungs
    # Lung share of the image like the real data (about 0.24), and lungs darker.
    frac = lung.float().mean().item()
    assert 0.15 < frac < 0.32
    for i in range(24):
        inside = images[i][lung[i]].mean()
        body = images[i][~lung[i] & (images[i] > -0.6)].mean()
        assert inside < body - 0.2
    # Shapes vary from case to case (pose, size): no two lung masks nearly equal.
    flat = lung.flatten(1).float()
    inter = flat @ flat.T
    union = flat.sum(1)[:, None] + flat.sum(1)[None] - inter
    iou = inter / union
    assert iou[~torch.eye(24, dtype=torch.bool)].max() < 0.95
    # Anatomy is asymmetric: the heart notch makes the image-right lung smaller.
    left, right = lung[..., :32].flatten(1).sum(1), lung[..., 32:].flatten(1).sum(1)
    assert (left > right).float().mean() > 0.8  # real Val: 0.90
    assert make_phantom_set(0)["images"].shape == (0, 1, 64, 64)


def test_phantom_dataset_interface():
    ds = PhantomDataset(5, task="infection", size=32, seed=0)
    assert ds.images.shape == ds.masks.shape == (5, 1, 32, 32)
    item = ds[1]
    assert set(item) == {"image", "mask", "name", "class"}
    assert item["class"] == "COVID-19" and item["name"] == "covid_2.png"
    assert ds.names[0] == "Normal (1).png"
    assert ds.classes_of == ["Normal", "COVID-19"] * 2 + ["Normal"]
    with pytest.raises(ValueError, match="task must be 'lung' or 'infection'"):
        PhantomDataset(2, task="heart")
    with pytest.raises(ValueError, match="infection_fraction must be in"):
        make_phantom_set(2, infection_fraction=1.5)
    with pytest.raises(ValueError, match="size must be an int >= 8"):
        make_phantom_set(2, size=4)


# ---------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_infection_train():
    return CovidQUDataset(shared_data("covid-qu-ex-64"), "Train", task="infection", progress=False)


@pytest.fixture(scope="module")
def real_infection_val():
    return CovidQUDataset(shared_data("covid-qu-ex-64"), "Val", task="infection", progress=False)


def _counts(ds: CovidQUDataset) -> dict[str, int]:
    return {c: ds.classes_of.count(c) for c in ("COVID-19", "Non-COVID", "Normal")}


def test_real_covid_qu_counts(real_infection_train, real_infection_val):
    """The counts of shared/data/README.md."""
    assert len(real_infection_train) == 3728
    assert _counts(real_infection_train) == {"COVID-19": 1864, "Non-COVID": 932, "Normal": 932}
    assert len(real_infection_val) == 446
    assert _counts(real_infection_val) == {"COVID-19": 223, "Non-COVID": 108, "Normal": 115}
    assert real_infection_train.split_root.name == "Infection Segmentation Data"
    assert "Non_COVID (28).png" in real_infection_train.names  # capital N, space, parentheses


@pytest.mark.parametrize("split", ["Train", "Val"])
def test_real_infection_masks_empty_except_covid(real_infection_train, real_infection_val, split):
    ds = real_infection_train if split == "Train" else real_infection_val
    covid = ds.class_mask("COVID-19")
    positive = (ds.masks > 0).flatten(1).any(1)
    assert positive[covid].all()
    assert not positive[~covid].any()
    # Infection share: about 0.07 of all images, about 0.14 of COVID-19 ones (seed-notes.md).
    frac = (ds.masks > 0).float().mean().item()
    frac_covid = (ds.masks[covid] > 0).float().mean().item()
    assert 0.05 < frac < 0.09 and 0.11 < frac_covid < 0.17


def test_real_lung_val():
    ds = CovidQUDataset(shared_data("covid-qu-ex-64"), "Val", task="lung", progress=False)
    assert len(ds) == 446 and ds.images.shape == (446, 1, 64, 64)
    assert 0.2 < (ds.masks > 0).float().mean().item() < 0.28  # about 0.24
    assert -1.0 <= ds.images.min() and ds.images.max() <= 1.0


def test_real_mcsz_lung_resized_and_no_infection():
    root = shared_data("cxr-lung-mcsz")
    ds = CovidQUDataset(root, "Val", task="lung", size=64, progress=False)
    assert len(ds) == 106 and ds.images.shape == (106, 1, 64, 64)
    assert {c: ds.classes_of.count(c) for c in set(ds.classes_of)} == {
        "Non-COVID": 52,
        "Normal": 54,
    }
    # One file checked by hand: 256 -> 64 is the mean of 4x4 blocks.
    split_root = find_split_root(root)
    name, cls = ds.names[0], ds.classes_of[0]
    raw = _read(split_root / "Val" / cls / "images" / name)
    raw_mask = _read(split_root / "Val" / cls / "lung masks" / name) > 127
    assert raw.shape == (256, 256)
    blocks = raw.reshape(64, 4, 64, 4).mean(axis=(1, 3)) / 255 * 2 - 1
    np.testing.assert_allclose(ds.images[0, 0].numpy(), blocks, atol=1e-5)
    mask_blocks = raw_mask.reshape(64, 4, 64, 4).mean(axis=(1, 3)) > 0.5
    np.testing.assert_array_equal(ds.masks[0, 0].numpy() > 0, mask_blocks)
    with pytest.raises(FileNotFoundError, match="needs the 'infection masks' folder"):
        CovidQUDataset(root, "Val", task="infection")
    with pytest.raises(FileNotFoundError, match="no PNG images"):
        CovidQUDataset(root, "Val", classes=("COVID-19",))


def test_hold_out_splits_disjointly_and_keeps_augmentation_on_the_rest_only():
    from scoregen.segmentation import PhantomDataset

    ds = PhantomDataset(20, task="lung", size=16, seed=0, augment=True)
    rest, held = ds.hold_out(5, seed=3)
    assert len(rest) == 15 and len(held) == 5
    assert not set(rest.names) & set(held.names)
    assert rest.augment is not None and held.augment is None
    again_rest, again_held = ds.hold_out(5, seed=3)
    assert again_held.names == held.names  # fixed by the seed
    i = ds.names.index(held.names[0])
    assert torch.equal(held.images[0], ds.images[i])
    with pytest.raises(ValueError, match="0 < n < 20"):
        ds.hold_out(20, seed=0)
