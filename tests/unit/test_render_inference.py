"""G's inference copy (BatchNorm folded, transposed convolutions made plain, dtype, channels-last) computes G."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from davs_model.networks.decoder import Decoder
from davs_model.rendering.inference import as_plain_conv, decode_with, inference_decoder


def trained_like_decoder(size: int = 64, width: float = 0.125) -> Decoder:
    """A decoder whose BatchNorms have non-trivial running statistics and affine terms, as after training."""
    torch.manual_seed(0)
    g = Decoder(width=width, image_size=size, pid_dim=32, wid_dim=256)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return g.eval()


def inputs_for(g: Decoder, batch: int = 3) -> tuple[list[torch.Tensor], torch.Tensor]:
    s = g.image_size // 8
    unused = torch.zeros(batch, 1)  # net4, net3, net1: G reads only the pid vector and net2
    pid = [torch.randn(batch, g.pid_dim), unused, unused, torch.rand(batch, g.skip_channels, s, s), unused]
    return pid, torch.randn(batch, g.wid_dim)


@pytest.mark.parametrize(("kernel", "padding"), [(3, 1), (4, 0), (5, 1)])
def test_a_stride_one_transposed_convolution_equals_its_plain_form(kernel: int, padding: int) -> None:
    torch.manual_seed(1)
    t = nn.ConvTranspose2d(5, 7, kernel, 1, padding)
    x = torch.randn(2, 5, 9, 11)
    torch.testing.assert_close(as_plain_conv(t)(x), t(x), atol=1e-5, rtol=1e-5)


def test_strided_transposed_convolutions_are_refused() -> None:
    with pytest.raises(ValueError, match="stride-1"):
        as_plain_conv(nn.ConvTranspose2d(4, 4, 3, 2, 1))


def test_the_fp32_inference_copy_computes_g_and_leaves_g_unchanged() -> None:
    g = trained_like_decoder()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    pid, wid = inputs_for(g)
    with torch.no_grad():
        expected = g(pid, wid)
        fast = inference_decoder(g)
        got = decode_with(fast, pid, wid)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)
    left = [m for m in fast.modules() if isinstance(m, (nn.BatchNorm2d, nn.ConvTranspose2d))]
    assert left == [fast.deconv1_1_new], left  # the 1×1 → 4×4 one stays transposed; every BatchNorm is folded
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items()), "G itself was changed"
    assert g.training is False and any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


def test_the_bf16_inference_copy_is_within_a_grey_level() -> None:
    g = trained_like_decoder()
    pid, wid = inputs_for(g)
    with torch.no_grad():
        expected = g(pid, wid)
        got = decode_with(inference_decoder(g, torch.bfloat16), pid, wid)
    assert got.dtype == torch.float32
    err = (got - expected).abs()
    assert err.max().item() * 255 < 2.0 and err.mean().item() * 255 < 0.5, (err.max(), err.mean())


def test_in_place_conversion_returns_the_same_decoder_folded() -> None:
    g = trained_like_decoder()
    pid, wid = inputs_for(g)
    with torch.no_grad():
        expected = g(pid, wid)
        assert inference_decoder(g, in_place=True) is g
        torch.testing.assert_close(g(pid, wid), expected, atol=2e-6, rtol=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
