"""SEMANTICS 4: to tensor, bilinear resize of the tensor without antialiasing, centre crop, normalise."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from frameexit.preprocess import (
    DEFAULT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    crop_offsets,
    preprocess_image,
    resized_size,
)
from jobs.frames import read_frame
from jobs.process import one_thread


def test_two_pixel_image_pinned_to_hand_computed_values():
    # A 2x1 image: left pixel (0, 255, 51), right pixel (255, 0, 204), i.e. (0, 1, .2) and (1, 0, .8).
    # Shorter side h=1 -> size (224, int(224 * 2 / 1)) = (224, 448). Bilinear, align_corners=False:
    # source x = (x' + .5) * 2/448 - .5. Crop left = round((448 - 224) / 2) = 112, so output column x
    # samples source (x + 112.5) / 224 - .5 = (x + .5) / 224, a weight of (x + .5) / 224 on the right pixel.
    img = Image.fromarray(np.array([[[0, 255, 51], [255, 0, 204]]], dtype=np.uint8))
    out = preprocess_image(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # column 0: red = .5/224 = 0.00223214; (0.00223214 - .485) / .229 = -2.10815658
    assert out[0, 0, 0].item() == pytest.approx(-2.10815658, abs=1e-6)
    # column 111: red = 111.5/224 = 0.49776786; (0.49776786 - .485) / .229 = 0.05575483
    assert out[0, 0, 111].item() == pytest.approx(0.05575483, abs=1e-6)
    # column 223, green: 1 - 223.5/224 = 0.00223214; (0.00223214 - .456) / .224 = -2.02574937
    assert out[1, 0, 223].item() == pytest.approx(-2.02574937, abs=1e-6)
    # blue at column 0: .2 + .6 * .5/224 = 0.20133929; (0.20133929 - .406) / .225 = -0.90960317
    assert out[2, 0, 0].item() == pytest.approx(-0.90960317, abs=1e-6)
    # every row is the same (height 1 upsampled), and the whole pattern follows the rule
    weight = (np.arange(224) + 0.5) / 224
    for c, (lo, hi) in enumerate([(0.0, 1.0), (1.0, 0.0), (0.2, 0.8)]):
        expected = ((lo + weight * (hi - lo)) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(out[c].numpy(), np.broadcast_to(expected, (224, 224)), atol=2e-6)


@pytest.mark.parametrize(
    "h, w, size",
    [
        (466, 350, (298, 224)),  # w < h: (int(224 * 466 / 350) = int(298.24), 224)
        (350, 520, (224, 332)),  # (224, int(224 * 520 / 350) = int(332.8))
        (300, 300, (224, 224)),  # square: the else branch
        (350, 351, (224, 224)),  # int(224.64) truncates
    ],
)
def test_resized_size(h, w, size):
    assert resized_size(h, w, 224) == size


def test_crop_offsets_round_half_to_even():
    assert crop_offsets(298, 224, 224) == (37, 0)
    assert crop_offsets(225, 226, 224) == (0, 1)  # round(0.5) = 0, round(1.0) = 1
    assert crop_offsets(227, 229, 224) == (2, 2)  # round(1.5) = 2, round(2.5) = 2


def test_shorter_side_already_224_is_not_resized():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(224, 260, 3), dtype=np.uint8)
    out = preprocess_image(Image.fromarray(arr))
    left = crop_offsets(224, 260, 224)[1]  # round(18.0) = 18
    raw = torch.from_numpy(arr[:, left : left + 224]).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.equal(out, expected)


def test_equals_torchvision_tensor_transforms_bit_for_bit_and_differs_from_pil_resize():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, size=(350, 466, 3), dtype=np.uint8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # preprocessing runs on one thread (see test_same_frame_whatever_the_thread_count)
    try:
        ours = preprocess_image(img)
        t = TF.to_tensor(img)
        t = TF.resize(t, [224, int(224 * 466 / 350)], antialias=False)
        t = TF.normalize(TF.center_crop(t, [224, 224]), IMAGENET_MEAN, IMAGENET_STD)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(ours, t)
    pil = TF.normalize(TF.to_tensor(TF.center_crop(TF.resize(img, 224), 224)), IMAGENET_MEAN, IMAGENET_STD)
    assert (ours - pil).abs().max().item() > 0.1  # a PIL (antialiased) resize is not equivalent


@pytest.mark.parametrize("mode", ["L", "CMYK", "P"])
def test_non_rgb_images_are_converted(mode):
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, size=(240, 300, 3), dtype=np.uint8))
    img = rgb.convert(mode)
    out = preprocess_image(img)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, preprocess_image(img.convert("RGB")))


def test_other_sizes():
    img = Image.new("RGB", (400, 300), (10, 20, 30))
    out = preprocess_image(img, Preprocessing(resize=256, crop=240))
    assert out.shape == (3, 240, 240)
    assert out[0, 0, 0].item() == pytest.approx((10 / 255 - 0.485) / 0.229, abs=1e-6)


def test_same_frame_whatever_the_thread_count(tmp_path):
    # CPU bilinear interpolation rounds differently on several threads: the jobs layer reads frames on one
    # (jobs.process.one_thread), so that every process (main, DataLoader or dask worker) gets the same tensor
    path = str(tmp_path / "frame.png")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, size=(350, 466, 3), dtype=np.uint8)).save(path)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(read_frame(path, DEFAULT))
            assert torch.get_num_threads() == n  # left as it was
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def _pytorchvideo_eval_transform(images, size):
    """pytorchvideo's evaluation transform (``create_video_transform(mode='val')``) on a clip of ``images``, as its
    source defines it: ConvertUint8ToFloat, Normalize, ShortSideScale (floor of (long / short) * size, bilinear,
    no antialiasing, on the (C, T, H, W) clip), torchvision CenterCrop. Written out here: pytorchvideo.transforms
    does not import with torchvision 0.29 (it needs the removed torchvision.transforms.functional_tensor)."""
    x = torch.stack([torch.from_numpy(np.array(img)).permute(2, 0, 1) for img in images], 1).float() / 255
    x = (x - torch.tensor(KINETICS_MEAN)[:, None, None, None]) / torch.tensor(KINETICS_STD)[:, None, None, None]
    _, _, h, w = x.shape
    new = (math.floor(h / w * size), size) if w < h else (size, math.floor(w / h * size))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ours resizes on one thread (see test_same_frame_whatever_the_thread_count)
    try:
        x = torch.nn.functional.interpolate(x, size=new, mode="bilinear", align_corners=False)
    finally:
        torch.set_num_threads(threads)
    return TF.center_crop(x, [size, size])  # (C, T, size, size)


@pytest.mark.parametrize("height, width", [(350, 622), (213, 160), (161, 211)])
def test_normalize_first_is_pytorchvideos_evaluation_transform_bit_for_bit(height, width):
    rng = np.random.default_rng(4)
    images = [Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)) for _ in range(4)]
    params = Preprocessing(resize=160, crop=160, mean=KINETICS_MEAN, std=KINETICS_STD, normalize_first=True)
    with one_thread():  # as the jobs layer preprocesses (see test_same_frame_whatever_the_thread_count)
        ours = torch.stack([preprocess_image(img, params) for img in images], 1)
    assert ours.shape == (3, 4, 160, 160)
    assert torch.equal(ours, _pytorchvideo_eval_transform(images, 160))
    official = torch.stack(
        [preprocess_image(img, Preprocessing(160, 160, KINETICS_MEAN, KINETICS_STD)) for img in images], 1
    )
    if min(height, width) == 160:  # nothing to resize: normalising before or after cropping is the same
        assert torch.equal(ours, official)
    else:  # the same operations in the official order round differently: the order is part of the pipeline
        assert not torch.equal(ours, official) and (ours - official).abs().max().item() < 1e-5


def test_shorter_side_160_resizes_to_pytorchvideos_size():
    # ours truncates size * long / short (the official rule), pytorchvideo floors (long / short) * size: the float
    # rounding of the two differs for some sizes at 182, 224 or 300 pixels, never at 160 for frames up to 1200 px
    short = np.arange(160, 1201)[:, None]
    long = short + np.arange(0, 2401)[None, :]
    ours = np.trunc(160 * long / short)
    theirs = np.floor(long / short * 160)
    assert np.array_equal(ours, theirs)
    assert resized_size(622, 350, 160) == (284, 160) and resized_size(350, 622, 160) == (160, 284)
