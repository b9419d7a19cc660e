"""An inference copy of G, the decoder: BatchNorm folded into the convolutions, the stride-1 3×3 transposed
convolutions turned into plain ones, weights in the rendering dtype and channels-last memory.

Same function as the trained G in eval mode (fp32: equal to ~1e-6; the tests check it), faster on the CPU: the
folded BatchNorms and the transposed convolutions (a slow path in oneDNN, especially under bf16) were ~25 % of G's
time in a 256 px render. With ``dtype=torch.bfloat16`` the weights are cast once here instead of by autocast at
every call. Folding is ``torch.nn.utils.fusion.fuse_conv_bn_weights``; only the transposed → plain rewrite is
ours.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from davs_model.networks.decoder import CONV_BLOCKS, Decoder


def as_plain_conv(t: nn.ConvTranspose2d) -> nn.Conv2d:
    """A stride-1 transposed convolution as the plain one it equals: kernel flipped, in/out channels swapped,
    padding k − 1 − p."""
    if t.stride != (1, 1) or t.dilation != (1, 1) or t.groups != 1 or t.output_padding != (0, 0):
        raise ValueError(f"only stride-1, undilated, ungrouped transposed convolutions convert: {t}")
    k = t.kernel_size
    padding = (k[0] - 1 - t.padding[0], k[1] - 1 - t.padding[1])
    conv = nn.Conv2d(t.in_channels, t.out_channels, k, 1, padding, bias=t.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(t.weight.flip(2, 3).transpose(0, 1))
        if t.bias is not None:
            conv.bias.copy_(t.bias)
    return conv


def _fold(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Conv2d | nn.ConvTranspose2d:
    """``bn(conv(x))`` (eval mode) as one convolution: ``conv`` gets the folded weights (no copy of the module)."""
    transpose = isinstance(conv, nn.ConvTranspose2d)
    conv.weight, conv.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, transpose
    )
    return conv


def inference_decoder(decoder: Decoder, dtype: torch.dtype = torch.float32, *, in_place: bool = False) -> Decoder:
    """A folded, eval-mode copy of ``decoder`` in ``dtype`` and channels-last; ``decoder`` is left unchanged
    unless ``in_place`` (for a caller that owns it: saves a copy of G's 22 M parameters)."""
    g = (decoder if in_place else copy.deepcopy(decoder)).eval()
    for i in range(1, len(CONV_BLOCKS) + 1):
        block = getattr(g, f"convblock{i}")
        for conv, bn in block.layer_names:
            _fold(getattr(block, conv), getattr(block, bn))
            setattr(block, bn, nn.Identity())
    _fold(g.deconv1_1_new, g.deconv1_1_bn)
    g.deconv1_1_bn = nn.Identity()
    g.conv7_1 = as_plain_conv(_fold(g.conv7_1, g.conv7_1_bn))
    g.conv7_1_bn = nn.Identity()
    g.conv7_2 = as_plain_conv(g.conv7_2)
    return g.to(dtype=dtype, memory_format=torch.channels_last).requires_grad_(False)


def decode_with(g: Decoder, pid: list[Tensor], wid: Tensor) -> Tensor:
    """``g(pid, wid)`` with the inputs cast to ``g``'s dtype; frames (B, 3, S, S) float32 in [0, 1]."""
    dtype = g.conv7_2.weight.dtype
    return g([p.to(dtype) for p in pid], wid.to(dtype)).float()
