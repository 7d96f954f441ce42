"""numcnn.data: preprocessing, validation split, one-hot, augmentation, loader, prepare_image."""

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

import numcnn
from numcnn.data import (
    Augment,
    Compose,
    DataLoader,
    Preprocessing,
    affine,
    one_hot,
    prepare_image,
    train_val_split,
)
from numcnn.errors import DataError, ShapeError

IDENTITY = Preprocessing(scale=1 / 255, mean=(0.0,), std=(1.0,), input_shape=(1, 28, 28))


# ---- Preprocessing ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_fit_computes_per_channel_statistics_of_the_scaled_training_images(dtype):
    rng = np.random.default_rng(0)
    x = (rng.random((37, 3, 5, 4)) * [[[[255]], [[60]], [[3]]]]).astype(dtype)
    prep = Preprocessing.fit(x, chunk=8)  # several chunks
    scale = 1 / 255 if dtype == np.uint8 else 1.0
    assert prep.scale == scale and prep.input_shape == (3, 5, 4)
    scaled = x.astype(np.float64) * scale
    np.testing.assert_allclose(prep.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(prep.std, scaled.std(axis=(0, 2, 3)), rtol=1e-8)


def test_apply_z_scores_with_the_training_statistics():
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (40, 2, 6, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, (5, 2, 6, 6), dtype=np.uint8)
    prep = Preprocessing.fit(x_train)
    out = prep.apply(x_train)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)
    mean = np.asarray(prep.mean)[:, None, None]
    std = np.asarray(prep.std)[:, None, None]
    np.testing.assert_allclose(prep(x_test), (x_test / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert prep.apply(x_test.astype(np.float64)).dtype == np.float64
    x_copy = x_test.astype(np.float32)
    prep.apply(x_copy)
    np.testing.assert_array_equal(x_copy, x_test)  # the input is left alone


def test_course_values_on_real_mnist(mnist_small):
    x_train = mnist_small[0][:, None]
    prep = Preprocessing.fit(x_train)
    pixels = x_train / 255.0
    np.testing.assert_allclose(prep.mean, [pixels.mean()], rtol=1e-10)
    np.testing.assert_allclose(prep.std, [pixels.std()], rtol=1e-8)


def test_constant_channel_gets_unit_std():
    prep = Preprocessing.fit(np.full((4, 1, 3, 3), 7, np.uint8))
    assert prep.std == (1.0,)
    np.testing.assert_allclose(prep.apply(np.full((1, 1, 3, 3), 7, np.uint8)), 0, atol=1e-7)


def test_preprocessing_round_trips_through_json():
    x = np.random.default_rng(2).integers(0, 256, (9, 3, 4, 4), dtype=np.uint8)
    prep = Preprocessing.fit(x)
    restored = Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict())))
    assert restored == prep


def test_preprocessing_errors():
    with pytest.raises(ShapeError, match=r"Preprocessing: expected images \(N, 1, 28, 28\), "
                                         r"got \(2, 28, 28\)"):
        IDENTITY.apply(np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match=r"expected a dict with keys \('scale', 'mean', 'std', "
                                        r"'input_shape'\), got \{'scale': 1\}"):
        Preprocessing.from_dict({"scale": 1})
    with pytest.raises(DataError, match=r"input_shape must be \(C, H, W\) with C means and C stds, "
                                        r"got input_shape=\(3, 2, 2\), 1 means, 1 stds"):
        Preprocessing.from_dict({"scale": 1, "mean": [0], "std": [1], "input_shape": [3, 2, 2]})
    with pytest.raises(DataError, match=r"bad values"):
        Preprocessing.from_dict({"scale": "x", "mean": [0], "std": [1], "input_shape": [1, 2, 2]})
    with pytest.raises(DataError, match=r"scale and std must be > 0, got 1.0, \(0.0,\)"):
        Preprocessing(1, [0], [0], [1, 2, 2])


# ---- split and labels ------------------------------------------------------------------------


def test_train_val_split_is_a_seeded_partition_keeping_order():
    x = np.arange(100) * 10
    y = np.arange(100)
    x_tr, y_tr, x_val, y_val = train_val_split(x, y, 0.2, seed=5)
    assert len(x_val) == 20 and len(x_tr) == 80
    assert sorted(np.concatenate([y_tr, y_val])) == list(range(100))
    np.testing.assert_array_equal(x_tr, y_tr * 10)  # samples stay with their labels
    assert np.all(np.diff(y_tr) > 0) and np.all(np.diff(y_val) > 0)
    again = train_val_split(x, y, 0.2, seed=5)
    np.testing.assert_array_equal(again[3], y_val)
    assert not np.array_equal(train_val_split(x, y, 0.2, seed=6)[3], y_val)
    assert len(train_val_split(x, y, 0.0)[2]) == 0
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\), got 1"):
        train_val_split(x, y, 1)
    with pytest.raises(DataError, match=r"100 samples but 99 labels"):
        train_val_split(x, y[:99])


def test_one_hot():
    y = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(one_hot(y), np.eye(3)[y])
    assert one_hot(y, 5).shape == (4, 5) and one_hot(y).dtype == np.float32
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\), got \[0, 2\]"):
        one_hot(y, 2)
    with pytest.raises(DataError, match=r"expected integer class indices of shape \(N,\), "
                                        r"got float64"):
        one_hot(y.astype(float))


# ---- augmentation ----------------------------------------------------------------------------


def affine_loop(x, angle, dy, dx, flip, fill):
    """Reference: every output pixel by itself, the inverse map and bilinear weights written out."""
    n, _, height, width = x.shape
    cy, cx = (height - 1) / 2, (width - 1) / 2
    out = np.zeros(x.shape)
    for k in range(n):
        t = math.radians(angle[k])
        for i in range(height):
            for j in range(width):
                r, c = i - cy - dy[k], j - cx - dx[k]
                sy = math.cos(t) * r + math.sin(t) * c + cy
                sx = -math.sin(t) * r + math.cos(t) * c
                sx = (-sx if flip[k] else sx) + cx
                y0, x0 = math.floor(sy), math.floor(sx)
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    w = (1 - abs(sy - yy)) * (1 - abs(sx - xx))
                    inside = 0 <= yy < height and 0 <= xx < width
                    out[k, :, i, j] += w * (x[k, :, yy, xx] if inside else fill)
    return out


def test_affine_matches_a_per_pixel_loop():
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 7, 9)).astype(np.float32)
    angle = np.array([23.0, -140.0, 5.0])
    dy, dx = np.array([0.5, -1.0, 2.25]), np.array([1, 0, -1.5])
    flip = np.array([False, True, True])
    got = affine(x, angle, dy, dx, flip, fill=0.3)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, affine_loop(x, angle, dy, dx, flip, 0.3), atol=1e-5)


def test_affine_identity_is_exact():
    x = np.random.default_rng(1).integers(0, 256, (4, 3, 5, 6), dtype=np.uint8)
    zeros = np.zeros(4)
    out = affine(x, zeros, zeros, zeros, zeros.astype(bool))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(Augment(rotation=0, shift=0)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("degrees, k", [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_rotation_by_quarter_turns_equals_rot90(degrees, k):
    x = np.random.default_rng(2).random((2, 3, 6, 6))
    zeros = np.zeros(2)
    out = affine(x, np.full(2, degrees), zeros, zeros, zeros.astype(bool))
    np.testing.assert_allclose(out, np.rot90(x, k, axes=(2, 3)), atol=1e-12)


def test_flip_and_whole_pixel_shift():
    x = np.random.default_rng(3).random((2, 1, 5, 4)).astype(np.float32)
    zeros = np.zeros(2)
    np.testing.assert_array_equal(affine(x, zeros, zeros, zeros, np.ones(2, bool)), x[..., ::-1])
    shifted = affine(x, zeros, np.array([1, 0]), np.array([0, -2]), zeros.astype(bool))
    np.testing.assert_array_equal(shifted[0, :, 1:], x[0, :, :-1])  # down by one row
    np.testing.assert_array_equal(shifted[0, :, 0], 0)
    np.testing.assert_array_equal(shifted[1, :, :, :2], x[1, :, :, 2:])  # left by two columns
    np.testing.assert_array_equal(shifted[1, :, :, 2:], 0)


def test_augment_draws_one_map_per_image_from_the_generator():
    x = np.random.default_rng(4).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
    augment = Augment(rotation=15, shift=2, hflip=True)
    out = augment(x, np.random.default_rng(9))
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, augment(x, np.random.default_rng(9)))
    angle, dy, dx, flip = augment.sample(16, np.random.default_rng(9))
    assert np.all(np.abs(angle) <= 15) and np.ptp(angle) > 0
    assert set(dy) | set(dx) <= {-2, -1, 0, 1, 2} and dy.dtype.kind == "i"
    assert 0 < flip.sum() < 16
    for k in range(16):  # the batch result is each image under its own map
        alone = affine(x[k:k + 1], angle[k:k + 1], dy[k:k + 1], dx[k:k + 1], flip[k:k + 1])
        np.testing.assert_array_equal(out[k:k + 1], alone)
    assert not Augment().sample(64, np.random.default_rng(0))[3].any()  # no flips by default


def test_augment_defaults_to_numcnn_generator():
    x = np.random.default_rng(5).random((3, 1, 6, 6))
    numcnn.manual_seed(11)
    first = Augment()(x)
    numcnn.manual_seed(11)
    np.testing.assert_array_equal(Augment()(x), first)
    with pytest.raises(ValueError, match=r"shift a whole number >= 0, got 10.0, 1.5"):
        Augment(shift=1.5)


def test_compose_augments_then_normalises():
    x = np.random.default_rng(6).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    prep = Preprocessing.fit(x)
    augment = Augment()
    out = Compose([augment, prep])(x, np.random.default_rng(1))
    np.testing.assert_allclose(out, prep(augment(x, np.random.default_rng(1))), rtol=1e-6)


# ---- the loader ------------------------------------------------------------------------------


def test_loader_batches_in_order():
    x, y = np.arange(10)[:, None] * 1.0, np.arange(10)
    loader = DataLoader(x, y, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(yb) for _, yb in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), y)
    np.testing.assert_array_equal(batches[1][0][:, 0], [4, 5, 6, 7])
    dropped = DataLoader(x, y, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(yb) for _, yb in dropped] == [4, 4]
    assert len(DataLoader(x, y, batch_size=11, drop_last=True)) == 0


def test_loader_shuffles_each_epoch_reproducibly():
    x, y = np.arange(50) * 2, np.arange(50)
    loader = DataLoader(x, y, batch_size=8, shuffle=True, seed=3)
    epochs = [np.concatenate([yb for _, yb in loader]) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(50))  # each sample once
    for xb, yb in loader:
        np.testing.assert_array_equal(xb, yb * 2)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    same = DataLoader(x, y, batch_size=8, shuffle=True, seed=3)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in same]), epochs[0])
    resumed = DataLoader(x, y, batch_size=8, shuffle=True, seed=3)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in resumed]), epochs[2])
    assert resumed.epoch == 3
    other = DataLoader(x, y, batch_size=8, shuffle=True, seed=4)
    assert not np.array_equal(np.concatenate([yb for _, yb in other]), epochs[0])


def test_loader_seed_defaults_to_numcnn_generator_and_passes_rng_to_transform():
    x, y = np.arange(20), np.arange(20)
    numcnn.manual_seed(1)
    first = [yb for _, yb in DataLoader(x, y, batch_size=5, shuffle=True)]
    numcnn.manual_seed(1)
    second = [yb for _, yb in DataLoader(x, y, batch_size=5, shuffle=True)]
    np.testing.assert_array_equal(first, second)

    def noisy(xb, rng):
        return xb + rng.random(len(xb))

    runs = []
    for _ in range(2):
        loader = DataLoader(x.astype(float), y, batch_size=5, shuffle=True, seed=0, transform=noisy)
        runs.append(np.concatenate([xb - yb for xb, yb in loader]))
    np.testing.assert_array_equal(runs[0], runs[1])  # augmentation reproduced with the order
    assert np.all((runs[0] >= 0) & (runs[0] < 1))


def test_loader_errors():
    with pytest.raises(DataError, match=r"DataLoader: expected one label per sample, got 3 "
                                          r"samples but 2 labels"):
        DataLoader(np.zeros(3), np.zeros(2))
    with pytest.raises(DataError, match=r"batch_size must be a whole number >= 1, got 0"):
        DataLoader(np.zeros(3), np.zeros(3), batch_size=0)


# ---- prepare_image ---------------------------------------------------------------------------


def draw_digit(size, box, ink, paper, width=12):
    """A big '7'-like stroke shape (top bar and diagonal) inside ``box`` on a canvas of ``size``."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box
    draw.line([(left, top), (right, top)], fill=ink, width=width)
    draw.line([(right, top), (left + (right - left) // 3, bottom)], fill=ink, width=width)
    return image


def centre_of_mass(a):
    rows, cols = np.indices(a.shape)
    return (rows * a).sum() / a.sum(), (cols * a).sum() / a.sum()


def ink_box(a):
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_dark_digit_on_light_paper_becomes_mnist_style(tmp_path, suffix):
    # 300 x 400 photo, digit 160 tall and 80 wide in the upper left, on gray paper with noise.
    photo = np.asarray(draw_digit((300, 400), (30, 40, 110, 200), ink=40, paper=215), np.float64)
    photo += np.random.default_rng(0).normal(0, 6, photo.shape)
    path = tmp_path / ("photo" + suffix)
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path)
    out = prepare_image(path, IDENTITY)
    assert out.shape == (1, 1, 28, 28) and out.dtype == np.float32
    digit = out[0, 0]
    assert digit.max() == 1 and np.median(digit[digit > 0.5]) > 0.9  # the ink is bright ...
    assert np.median(digit) == 0 and digit[:4, :4].max() == digit[-4:, -4:].max() == 0  # on black
    height, width = ink_box(digit)
    assert height == 20 and 10 <= width <= 13  # fitted into 20x20, aspect kept (with stroke width)
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_light_on_dark_and_transparent_drawings_match_dark_on_light():
    dark_on_light = np.asarray(draw_digit((120, 90), (50, 10, 85, 100), ink=0, paper=255))
    light_on_dark = 255 - dark_on_light
    rgba = np.zeros(dark_on_light.shape + (4,), np.uint8)  # black strokes on transparent
    rgba[..., 3] = 255 - dark_on_light
    expected = prepare_image(dark_on_light, IDENTITY)
    np.testing.assert_allclose(prepare_image(light_on_dark, IDENTITY), expected, atol=1e-6)
    np.testing.assert_allclose(prepare_image(rgba, IDENTITY), expected, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(prepare_image(light_on_dark / 255.0, IDENTITY), expected, atol=1e-6)


def test_mnist_images_come_back_nearly_unchanged(mnist_small):
    for image in mnist_small[2][:40]:
        out = prepare_image(image, IDENTITY)[0, 0]
        # MNIST placed digits by its own rounding: allow a one-pixel offset.
        best = max(np.corrcoef(np.roll(image, (dy, dx), (0, 1)).ravel(), out.ravel())[0, 1]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert best > 0.97


def test_prepare_image_applies_the_model_preprocessing_and_other_shapes():
    prep = Preprocessing(scale=1 / 255, mean=(0.1307,), std=(0.3081,), input_shape=(1, 28, 28))
    drawing = np.asarray(draw_digit((60, 60), (10, 10, 50, 50), ink=0, paper=255))
    expected = (prepare_image(drawing, IDENTITY) - 0.1307) / 0.3081
    np.testing.assert_allclose(prepare_image(drawing, prep), expected, rtol=1e-5, atol=1e-5)
    colour = Preprocessing(1 / 255, (0, 0, 0), (1, 1, 1), (3, 8, 6))
    rgb = np.zeros((16, 12, 3), np.uint8)
    rgb[..., 2] = 255
    out = prepare_image(rgb, colour)
    assert out.shape == (1, 3, 8, 6)
    np.testing.assert_allclose(out[0, :, 4, 3], [0, 0, 1])


def test_prepare_image_errors(tmp_path):
    with pytest.raises(DataError, match=r"no digit found"):
        prepare_image(np.full((30, 30), 200, np.uint8), IDENTITY)
    with pytest.raises(DataError, match=r"cannot read image .*missing\.png"):
        prepare_image(tmp_path / "missing.png", IDENTITY)
    with pytest.raises(DataError, match=r"expected an image array .* got \(2, 3, 4, 5\)"):
        prepare_image(np.zeros((2, 3, 4, 5)), IDENTITY)


def test_floats_in_0_1_given_to_byte_statistics_are_refused():
    """Statistics fitted on 0-255 bytes (scale 1/255) applied to floats in [0, 1] would scale
    them twice: refused; the same pixels as bytes or as floats of 0-255 give the same result."""
    from numcnn.data import Preprocessing

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 1, 6, 6)).astype(np.uint8)
    prep = Preprocessing.fit(images)
    np.testing.assert_allclose(prep.apply(images), prep.apply(images.astype(np.float32)),
                               rtol=1e-6)
    with pytest.raises(DataError, match=r"expected pixels of 0-255 .* got floats in \[0, 1\]"):
        prep.apply(images.astype(np.float32) / 255)
