"""Safe image decoding: modes, orientation, hostile files, limits, and the real shared images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vlfuse.data.images import load_image, load_image_bytes, to_rgb
from vlfuse.errors import DataError, ImageError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    return image.getpixel(xy)


# --- modes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_each_supported_format_decodes_to_rgb(tmp_path, fmt):
    path = write(tmp_path, f"img.{fmt.lower()}", encode(Image.new("RGB", (16, 8), (200, 30, 30)), fmt))
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (16, 8)
    # JPEG/WebP are lossy and GIF is palettised: allow a little slack on the colour.
    assert np.allclose(pixel(image), (200, 30, 30), atol=12)


def test_gray_l_becomes_equal_rgb_channels(tmp_path):
    path = write(tmp_path, "gray.png", encode(Image.new("L", (4, 4), 77), "PNG"))
    assert pixel(load_image(path)) == (77, 77, 77)


def test_one_bit_maps_to_black_and_white(tmp_path):
    image = Image.new("1", (4, 1), 0)
    image.putpixel((1, 0), 1)
    rgb = load_image(write(tmp_path, "bits.png", encode(image, "PNG")))
    assert pixel(rgb, (0, 0)) == (0, 0, 0) and pixel(rgb, (1, 0)) == (255, 255, 255)


def test_rgba_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((1, 0), (0, 0, 255, 128))  # half-transparent blue
    rgb = load_image(write(tmp_path, "alpha.png", encode(image, "PNG")))
    assert pixel(rgb, (0, 0)) == (255, 255, 255)
    assert np.allclose(pixel(rgb, (1, 0)), (127, 127, 255), atol=1)


def test_la_is_composited_on_white(tmp_path):
    image = Image.new("LA", (1, 1), (0, 0))  # transparent black
    assert pixel(load_image(write(tmp_path, "la.png", encode(image, "PNG")))) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    data = encode(image, "PNG", transparency=0)  # index 0 (red) is transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    rgb = load_image(write(tmp_path, "pal.png", data))
    assert pixel(rgb, (0, 0)) == (255, 255, 255)
    assert pixel(rgb, (1, 0)) == (0, 255, 0)


def test_palette_without_transparency_keeps_colours(tmp_path):
    image = Image.new("P", (1, 1), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    assert pixel(load_image(write(tmp_path, "pal.png", encode(image, "PNG")))) == (10, 20, 30)


def test_gif_first_frame_is_used(tmp_path):
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert np.allclose(pixel(load_image(write(tmp_path, "anim.gif", data))), (255, 0, 0), atol=4)


@pytest.mark.parametrize("value, expected", [(65535, 255), (0, 0), (257 * 100, 100), (32768, 128)])
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, value, expected):
    data = encode(Image.new("I;16", (3, 3), value), "PNG")
    assert pixel(load_image(write(tmp_path, "deep.png", data))) == (expected,) * 3


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_modes_in_memory(mode):
    assert pixel(to_rgb(Image.new(mode, (1, 1), 65535))) == (255, 255, 255)


def test_float_mode_follows_pillow_scale_and_clips():
    image = Image.new("F", (2, 1), 100.4)
    image.putpixel((1, 0), 999.0)
    rgb = to_rgb(image)
    assert pixel(rgb, (0, 0)) == (100, 100, 100) and pixel(rgb, (1, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    data = encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=95)  # pure cyan
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = load_image(write(tmp_path, "cmyk.jpg", data))
    assert rgb.mode == "RGB"
    assert np.allclose(pixel(rgb), (0, 255, 255), atol=6)


def test_exif_orientation_6_rotates_and_swaps_size(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rgb = load_image(write(tmp_path, "rotated.jpg", encode(image, "JPEG", exif=exif.tobytes())))
    assert rgb.size == (20, 40)
    # After a clockwise turn the stored left half is on top.
    assert np.mean(np.asarray(rgb)[:20]) > 200 and np.mean(np.asarray(rgb)[20:]) < 50


# --- refusals ----------------------------------------------------------------------------------

def assert_refused(path: Path, match: str):
    with pytest.raises(ImageError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DataError)  # callers may catch the broader data family


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "nope.jpg", "not found")


def test_directory_is_refused(tmp_path):
    assert_refused(tmp_path, "directory")


def test_empty_file(tmp_path):
    assert_refused(write(tmp_path, "empty.png", b""), "empty")


def test_text_file_named_png(tmp_path):
    assert_refused(write(tmp_path, "notes.png", b"just some text\n"), "not an image")


def test_random_bytes_are_not_an_image(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert_refused(write(tmp_path, "noise.jpg", noise), "not an image")


def test_truncated_png(tmp_path):
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    assert_refused(write(tmp_path, "cut.png", data[: len(data) // 2]), "truncated")


def test_truncated_jpeg(tmp_path):
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    assert_refused(write(tmp_path, "cut.jpg", data[: len(data) // 2]), "truncated")


def test_corrupt_png_payload(tmp_path):
    data = bytearray(encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG"))
    data[100:400] = b"\x00" * 300  # smash compressed pixel data after the header
    assert_refused(write(tmp_path, "smashed.png", bytes(data)), "corrupt")


def test_unsupported_format_is_refused(tmp_path):
    assert_refused(write(tmp_path, "scan.tif", encode(Image.new("RGB", (4, 4)), "TIFF")), "unsupported")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (100, 100)), "PNG"))
    with pytest.raises(ImageError, match="decompression bomb.*10000 pixels exceeds max_pixels=9999"):
        load_image(path, max_pixels=9_999)
    assert load_image(path, max_pixels=10_000).size == (100, 100)


def test_pil_bomb_warning_becomes_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # PIL warns above this, errors above 2x
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (80, 80)), "PNG"))
    assert_refused(path, "decompression bomb")


def test_max_bytes_refused(tmp_path):
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    path = write(tmp_path, "small.png", data)
    with pytest.raises(ImageError, match=f"{len(data)} bytes exceeds max_bytes=10"):
        load_image(path, max_bytes=10)
    with pytest.raises(ImageError, match="max_bytes"):
        load_image_bytes(data, max_bytes=10)


# --- uploads -----------------------------------------------------------------------------------

def test_bytes_are_sniffed_not_named():
    data = encode(Image.new("RGB", (3, 2), (1, 2, 3)), "PNG")
    image = load_image_bytes(data, name="photo.jpg")  # the name lies; the content wins
    assert image.size == (3, 2) and pixel(image) == (1, 2, 3)


def test_bad_upload_error_names_the_upload():
    with pytest.raises(ImageError, match="^<upload>: not an image"):
        load_image_bytes(b"GIF89a but not really")
    with pytest.raises(ImageError, match="^cat.png: empty"):
        load_image_bytes(b"", name="cat.png")


# --- real data ---------------------------------------------------------------------------------

def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared real data not found at {path} (only present in the dev/CI checkout)")
    return path


@pytest.mark.parametrize("name", ["png_example.png", "jpeg_example.jpeg", "jpg_example.jpg"])
def test_real_vision_reader_images(name):
    # The PNG is RGBA on disk; all three come back 224x224 RGB.
    image = load_image(shared("formats", "images", "vision_reader", name))
    assert image.mode == "RGB" and image.size == (224, 224)
    assert np.asarray(image).std() > 10  # a real picture, not a blank


def test_real_vqav2_and_coco_photos():
    paths = sorted(shared("formats", "images", "vqav2").glob("*.jpg"))
    paths += sorted(shared("coco-mini", "val2017").glob("*.jpg"))[:5]
    assert len(paths) == 8
    for path in paths:
        image = load_image(path)
        assert image.mode == "RGB" and min(image.size) >= 100
    assert load_image(paths[0]).size == (640, 480)  # COCO_train2014_000000458752.jpg


# --- fuzzing -----------------------------------------------------------------------------------

SEEDS = [encode(Image.new("RGB", (6, 5), (9, 99, 199)), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")]


@settings(max_examples=50, deadline=None)
@given(seed=st.sampled_from(SEEDS), cuts=st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=8)),
                                                   max_size=4))
def test_fuzz_mutated_images_decode_or_raise_image_error(seed, cuts):
    data = bytearray(seed)
    for position, junk in cuts:  # overwrite a few spans anywhere, header included
        data[position:position + len(junk)] = junk
    try:
        image = load_image_bytes(bytes(data), max_pixels=1_000_000)
    except ImageError:
        return
    assert image.mode == "RGB"
