import numpy as np
import pytest
import torch

from climai.models.interpolate import upsample
from climai.models.unet import ResidualUNet
from climai.registry import method_kind


def test_bicubic_keeps_a_constant_field_constant():
    out = upsample(torch.full((1, 1, 4, 4), 3.5), 8)
    assert out.shape == (1, 1, 32, 32)
    torch.testing.assert_close(out, torch.full_like(out, 3.5))


def _ramp(scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    lr_x = (np.arange(8) + 0.5) * scale  # LR block centres in HR cell units
    lr = torch.tensor(np.tile(lr_x, (8, 1)), dtype=torch.float32)[None, None]
    return lr, torch.arange(8 * scale, dtype=torch.float32) + 0.5


def test_interpolation_is_cell_centred():
    """Bilinear reproduces a ramp exactly in the interior only if HR and LR cells are aligned."""
    lr, hr_x = _ramp(4)
    hr = upsample(lr, 4, "bilinear")[0, 0]
    torch.testing.assert_close(hr[8:24, 8:24], hr_x[8:24].expand(16, 16), atol=1e-4, rtol=0)


def test_bicubic_follows_a_ramp_closely():
    lr, hr_x = _ramp(4)
    hr = upsample(lr, 4)[0, 0]
    assert (hr[8:24, 8:24] - hr_x[8:24]).abs().max() < 0.05 * 4


def test_block_mean_of_nearest_upsampling_is_the_input():
    lr = torch.randn(2, 3, 5, 6)
    hr = upsample(lr, 4, "nearest")
    back = torch.nn.functional.avg_pool2d(hr, 4)
    torch.testing.assert_close(back, lr)


def test_missing_lr_cells_stay_missing_over_their_hr_footprint():
    lr = torch.ones(1, 1, 4, 4)
    lr[0, 0, 1, 2] = float("nan")
    hr = upsample(lr, 8)
    assert torch.isnan(hr[0, 0, 8:16, 16:24]).all()
    assert torch.isfinite(hr).sum() == 32 * 32 - 64


def test_untrained_unet_returns_its_base_exactly():
    model = ResidualUNet(5, 2, [8, 16, 32])
    x, base = torch.randn(3, 5, 32, 32), torch.randn(3, 2, 32, 32)
    torch.testing.assert_close(model(x, base), base, rtol=0, atol=0)


def test_unet_output_shape_and_multiple():
    model = ResidualUNet(4, 1, [8, 16, 32, 64])
    assert model.multiple == 8
    assert model(torch.randn(2, 4, 24, 40), torch.zeros(2, 1, 24, 40)).shape == (2, 1, 24, 40)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(
        KeyError, match="valid methods: bicubic, nearest, quantile-mapping, qdm, unet"
    ):
        method_kind("unett")
