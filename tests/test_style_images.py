"""Style images: sample photos by name (gray ones as 3 channels), files, side-by-side strips."""

import numpy as np
import pytest

from jaxreg import style


def test_sample_photos_load_by_name_as_rgb_in_unit_range():
    brick = style.load_image("brick", 40)  # a gray photo
    assert brick.shape == (40, 40, 3) and brick.dtype == np.float32
    np.testing.assert_array_equal(brick[..., 0], brick[..., 2])
    cat = style.load_image("chelsea", 45)  # 300 x 451: the longer side becomes 45
    assert cat.shape == (30, 45, 3) and 0.0 <= cat.min() and cat.max() <= 1.0
    assert style.sample_photo("logo").shape[-1] == 3  # RGBA composited onto white
    for name in style.SAMPLE_PHOTOS:
        assert style.sample_photo(name).ndim == 3, name


def test_files_load_and_bad_sources_are_named(tmp_path):
    cat = style.load_image("chelsea", 45)
    path = style.save_image(cat, tmp_path / "cat.png")
    np.testing.assert_allclose(style.load_image(str(path)), cat, atol=0.5 / 255)
    assert style.load_image(str(path), 20).shape == (13, 20, 3)
    with pytest.raises(ValueError, match="neither a scikit-image sample photo"):
        style.load_image("no_such_photo")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image file"):
        style.load_image(str(tmp_path / "text.png"))
    with pytest.raises(ValueError, match="size must be >= 1"):
        style.load_image("brick", 0)


def test_side_by_side_puts_images_in_a_row_at_one_height(tmp_path):
    from PIL import Image

    a, b = np.zeros((20, 30, 3)), np.ones((10, 10, 3))
    path = style.side_by_side([a, b], tmp_path / "s.png", gap=2)
    strip = np.asarray(Image.open(path))
    assert strip.shape == (20, 30 + 2 + 20, 3)
    assert strip[:, :30].max() == 0 and strip[:, 32:].min() == 255
