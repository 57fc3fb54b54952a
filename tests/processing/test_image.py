"""Image preprocessing: pad to square, HD crops, normalisation, limits, persistence."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from llava_mini.processing.image import (
    CLIP_MEAN,
    CLIP_STD,
    LlavaMiniImageProcessor,
    PictureTooLarge,
    expand_to_square,
    load_image,
    split_into_crops,
)


def test_expand_to_square_centres_the_image_on_the_background():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand_to_square(image, (1, 2, 3))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (1, 2, 3) and square.getpixel((20, 20)) == (255, 0, 0)
    assert square.getpixel((20, 9)) == (1, 2, 3) and square.getpixel((20, 10)) == (255, 0, 0)


def test_hd_views_are_row_major_crops_then_the_global_image():
    image = Image.new("RGB", (64, 32))
    image.paste((255, 0, 0), (32, 0, 64, 16))  # top-right quarter is red
    crops = split_into_crops(image, 2)
    assert [c.size for c in crops] == [(32, 16)] * 4
    assert crops[1].getpixel((5, 5)) == (255, 0, 0) and crops[0].getpixel((5, 5)) == (0, 0, 0)
    views = LlavaMiniImageProcessor(size=16, resolution_ratio=2).preprocess_image(image)
    assert views.shape == (5, 3, 16, 16)
    assert split_into_crops(image, 1) == []


def test_constant_image_normalises_to_the_expected_values():
    processor = LlavaMiniImageProcessor(size=8)
    pixels = processor.preprocess_image(Image.new("RGB", (8, 8), (255, 255, 255)))
    expected = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)])
    torch.testing.assert_close(pixels[0, :, 3, 3], expected)


def test_padding_uses_the_mean_colour_which_normalises_to_about_zero():
    processor = LlavaMiniImageProcessor(size=8)
    pixels = processor.preprocess_image(Image.new("RGB", (8, 2), (255, 255, 255)))
    assert pixels[0, :, 0, 0].abs().max() < 0.02


def test_frames_are_resized_straight_without_padding():
    frames = [Image.new("RGB", (32, 8), (255, 255, 255))] * 3
    pixels = LlavaMiniImageProcessor(size=8).preprocess_frames(frames)
    assert pixels.shape == (3, 1, 3, 8, 8)
    assert (pixels[:, :, 0] > 1).all()  # no mean-colour rows: the whole frame is white


def test_rgba_and_grayscale_inputs(tmp_path):
    processor = LlavaMiniImageProcessor(size=8)
    assert processor.preprocess_image(Image.new("RGBA", (5, 5))).shape == (1, 3, 8, 8)
    assert processor.preprocess_image(Image.new("L", (5, 5))).shape == (1, 3, 8, 8)
    Image.new("P", (4, 4)).save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").mode == "RGB"


def test_errors_name_the_file_and_the_limit(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="limit of 100 pixels"):
        load_image(Image.new("RGB", (20, 20)), max_pixels=100)


def test_save_and_load(tmp_path):
    processor = LlavaMiniImageProcessor(size=24, resolution_ratio=2)
    processor.save_pretrained(tmp_path)
    loaded = LlavaMiniImageProcessor.from_pretrained(tmp_path)
    assert loaded == processor
    image = Image.fromarray(np.arange(300, dtype=np.uint8).reshape(10, 10, 3))
    torch.testing.assert_close(loaded.preprocess_image(image), processor.preprocess_image(image))


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_strip_is_limited_by_its_padded_square_before_it_is_decoded(tmp_path):
    (tmp_path / "strip.png").write_bytes(png_bytes(20_000, 1))  # 140 bytes; once padded: 400 M pixels
    assert (tmp_path / "strip.png").stat().st_size < 200
    with pytest.raises(PictureTooLarge, match=r"strip.png: image of 20000x1 pixels exceeds the limit of 16384 pixels per"):
        load_image(tmp_path / "strip.png")
    (tmp_path / "strip.png").write_bytes(png_bytes(10_000, 1))
    with pytest.raises(PictureTooLarge, match=r"strip.png: image of 10000x1 pixels is padded to 10000x10000, over"):
        load_image(tmp_path / "strip.png")
    with pytest.raises(PictureTooLarge, match="limit of 64 pixels per side"):
        load_image(Image.new("RGB", (65, 2)), max_pixels=10**9, max_side=64)
    processor = LlavaMiniImageProcessor(size=8, max_pixels=400)
    assert processor.preprocess_image(Image.new("RGB", (20, 10))).shape == (1, 3, 8, 8)  # 20 x 20 = 400
    with pytest.raises(PictureTooLarge, match="padded to 21x21, over the limit of 400 pixels"):
        processor.preprocess_image(Image.new("RGB", (21, 1)))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:8] + b"\xff" * 8 + data[16:],  # a broken IHDR chunk
        lambda data: b"GIF89a" + data[6:],  # another format's magic
        lambda data: b"BM" + data[2:],  # a bitmap header Pillow parses, then cannot read
        lambda data: data[:16] + (2**31 - 1).to_bytes(4, "big") * 2 + data[24:],  # huge declared size
    ],
)
def test_corrupt_images_are_value_errors_naming_the_file(tmp_path, mutate):
    path = tmp_path / "broken.png"
    path.write_bytes(mutate(png_bytes(40, 30)))
    with pytest.raises(ValueError, match="broken.png"):
        LlavaMiniImageProcessor(size=8).preprocess_image(load_image(path))
