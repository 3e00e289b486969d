"""save_grid writes a PNG of originals and augmented rows (synthetic images)."""

import numpy as np

import jaxreg.augment as A


def test_save_grid_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    for c, spec in ((1, "digits"), (3, "cifar")):
        imgs = rng.random((5, 12, 12, c), dtype=np.float32)
        path = A.save_grid(spec, imgs, tmp_path / f"sub/grid{c}.png", num=4, rows=2)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
