"""Convolutions' weight gradient on the CPU where oneDNN is slow: the kernel larger than the feature map.

oneDNN (PyTorch 2.14, AVX2) computes the weight gradient of a convolution whose kernel is larger than its feature
map, the last stages of every backbone here on small crops, very slowly: 69 ms for a ResNet-18 3x3 layer of 512
channels on 1x1 maps (batch 32, one thread; its forward takes 4), 23 ms for an EfficientNet-B0 5x5 depthwise layer
of 1152 channels on 1x1 maps, against 0.3 and 0.15 tap by tap below (on a 1x1 map only the centre tap sees the
image). The input gradient, and both gradients where the map is as large as the kernel, are fast and stay
oneDNN's. A training step at 32 px on the CPU (batch 32, one thread, AdamW): EfficientNet-B0 ~185 ms instead of
~355, MobileNetV3-Large ~140 instead of ~220, ResNet-18 ~235 instead of ~425, ConvNeXt-Tiny ~610 instead of ~870
(tests/test_trainers_units.py checks the gradients against PyTorch's own).

``cpu_conv_grads(model)`` switches the class of every plain or depthwise ``nn.Conv2d`` to ``TapConv2d``, which has
the same parameters and state dict and computes the same forward; on CUDA, under autocast, without grad and where
the map is as large as the kernel, it is plain ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def overhangs(shape, kernel, dilation) -> bool:
    """The case oneDNN is slow at: the kernel's reach larger than the map in height or width. Measured (batch 32):
    depthwise 5x5 on 4x4 maps 8.3 ms native against 1.8 tap by tap, on 5x5 maps about even, from 6x6 oneDNN is
    faster; depthwise 3x3 on 2x2 maps 7.0 against 0.4, on 3x3 maps 0.17 native; plain 3x3, 256 channels, on 2x2
    maps 7.3 native, on 4x4 maps (128 channels) 2.8, as fast as its forward."""
    return any(size < d * (k - 1) + 1 for size, k, d in zip(shape[-2:], kernel, dilation))


def weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, stride, padding, dilation,
                groups: int) -> torch.Tensor:
    """The gradient of a convolution's ``weight`` (out, in / groups, kh, kw), plain (groups 1) or depthwise (groups =
    channels), in the weight's memory layout (DDP's buckets and the gradient layout contract ask for it), one tap
    at a time: the sum over the batch and the output positions of the input that tap saw times the output's
    gradient. Taps that see only padding are 0 without being computed (on a 1x1 map, all but the centre)."""
    height, width = x.shape[-2:]
    out_h, out_w = grad.shape[-2:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = weight.shape[-2:], stride, padding, dilation
    padded = F.pad(x, (pw, pw, ph, ph))
    result = torch.zeros_like(weight, memory_format=torch.preserve_format)
    plain = groups == 1
    if plain:
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # (positions, out)
    for i in range(kh):
        top = i * dh
        if top + sh * (out_h - 1) < ph or top >= ph + height:  # every row this tap reads is padding
            continue
        for j in range(kw):
            left = j * dw
            if left + sw * (out_w - 1) < pw or left >= pw + width:
                continue
            seen = padded[:, :, top:top + sh * (out_h - 1) + 1:sh, left:left + sw * (out_w - 1) + 1:sw]
            if plain:
                result[:, :, i, j] = grad_rows.T @ seen.permute(0, 2, 3, 1).reshape(-1, seen.shape[1])
            else:
                result[:, 0, i, j] = (seen * grad).sum((0, 2, 3))
    return result


class _TapConv(torch.autograd.Function):
    """conv2d; backward: oneDNN's input gradient, ``weight_grad`` for the weight."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, list(stride), list(padding), list(dilation),
                                                         False, [0, 0], groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x, grad, weight, stride, padding, dilation, groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


class TapConv2d(nn.Conv2d):
    """A plain or depthwise ``nn.Conv2d`` whose weight gradient on the CPU, where the kernel is larger than the map,
    is ``weight_grad``'s; everything else (parameters, state dict, forward) is nn.Conv2d's."""

    def _conv_forward(self, input, weight, bias):
        if (input.is_cpu and input.dim() == 4 and torch.is_grad_enabled() and weight.requires_grad and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and not torch.is_autocast_enabled("cpu")
                and overhangs(input.shape, self.kernel_size, self.dilation)):
            return _TapConv.apply(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def covered(module: nn.Module) -> bool:
    """An ``nn.Conv2d`` itself (not a subclass) that is plain (groups 1) or depthwise (groups = in = out channels)."""
    return type(module) is nn.Conv2d and (module.groups == 1 or module.groups == module.in_channels == module.out_channels)


def cpu_conv_grads(model: nn.Module) -> nn.Module:
    """``model`` with every plain or depthwise ``nn.Conv2d`` made a ``TapConv2d`` in place (same parameters)."""
    for module in model.modules():
        if covered(module):
            module.__class__ = TapConv2d
    return model
