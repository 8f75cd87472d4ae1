"""Convolutions' gradients on the CPU where oneDNN is slow: the kernel larger than the feature map, and 1x1
convolutions on maps of a few pixels.

oneDNN (PyTorch 2.14, AVX2) computes the weight gradient of a convolution whose kernel is larger than its feature
map, the last stages of every backbone here on small crops, very slowly: 69 ms for a ResNet-18 3x3 layer of 512
channels on 1x1 maps (batch 32, one thread; its forward takes 4), 23 ms for an EfficientNet-B0 5x5 depthwise layer
of 1152 channels on 1x1 maps, against 0.3 and 0.15 tap by tap below (on a 1x1 map only the centre tap sees the
image). The input gradient, and both gradients where the map is as large as the kernel, are fast and stay
oneDNN's. A training step at 32 px on the CPU (batch 32, one thread, AdamW): EfficientNet-B0 ~185 ms instead of
~355, MobileNetV3-Large ~140 instead of ~220, ResNet-18 ~235 instead of ~425, ConvNeXt-Tiny ~610 instead of ~870
(tests/test_trainers_units.py checks the gradients against PyTorch's own).

A 1x1 convolution (stride 1, no padding) on a map of at most ``POINTWISE_MAX_POSITIONS`` pixels is a matrix
product, and oneDNN's backward of it is 1.4-4.7 times slower than the two products that give its gradients (batch
32, one thread: 1152 -> 192 channels on 1x1 maps 2.26 ms against 0.48, on 2x2 maps 2.34 against 1.57; from 4x4 maps
even): every squeeze-and-excitation layer (EfficientNet, MobileNetV3) works on 1x1 maps whatever the crop, and the
last stages' expansions and projections do on small crops. Its forward stays oneDNN's, so training and evaluation
compute the same outputs. A step at 32 px (same setting, docs/performance.md): EfficientNet-B0 125.6 ms instead of
151.6 tap by tap alone, MobileNetV3-Large 85.6 instead of 98.5.

``cpu_conv_grads(model)`` switches the class of every plain or depthwise ``nn.Conv2d`` to ``TapConv2d``, which has
the same parameters and state dict and computes the same forward; on CUDA, under autocast, without grad and
elsewhere (the map as large as the kernel; a 1x1 convolution on a larger map) it is plain ``nn.Conv2d``.
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


POINTWISE_MAX_POSITIONS = 4  # pixels of the map (2x2) up to which a 1x1 convolution's backward is a matrix product


def pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1 convolution that is a matrix product over the pixels: stride 1, no padding, groups 1."""
    return (tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1) and conv.groups == 1
            and not isinstance(conv.padding, str) and tuple(conv.padding) == (0, 0))


def weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, stride, padding, dilation,
                groups: int) -> torch.Tensor:
    """The gradient of a convolution's ``weight`` (out, in / groups, kh, kw), plain (groups 1) or depthwise (groups =
    channels), in the weight's memory layout (DDP's buckets and the gradient layout contract ask for it), one tap
    at a time: the sum over the batch and the output positions of the input that tap saw times the output's
    gradient. Taps that see only padding are 0 without being computed (on a 1x1 map, all but the centre)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = weight.shape[-2:], stride, padding, dilation
    result = torch.zeros_like(weight, memory_format=torch.preserve_format)
    plain = groups == 1
    rows = [_seen(i * dh - ph, sh, x.shape[-2], grad.shape[-2]) for i in range(kh)]
    columns = [_seen(j * dw - pw, sw, x.shape[-1], grad.shape[-1]) for j in range(kw)]
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            if row is None or column is None:  # every position this tap reads is padding
                continue
            (y0, y1, oy0, oy1), (x0, x1, ox0, ox1) = row, column
            seen = x[:, :, y0:y1:sh, x0:x1:sw]  # the input this tap saw at the output positions below
            out = grad[:, :, oy0:oy1, ox0:ox1]
            if plain:
                result[:, :, i, j] = (out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).T
                                      @ seen.permute(0, 2, 3, 1).reshape(-1, seen.shape[1]))
            else:
                result[:, 0, i, j] = (seen * out).sum((0, 2, 3))
    return result


def _seen(offset: int, stride: int, size: int, out_size: int):
    """Along one axis, for a tap that reads input ``offset + stride * o`` at output position ``o``: the input slice
    (start, stop) and the output positions (start, stop) where it reads the image and not the padding; None where
    it reads only padding."""
    first = -(offset // stride) if offset < 0 else 0  # ceil(-offset / stride): the first o inside the image
    last = min(out_size - 1, (size - 1 - offset) // stride)
    if last < first:
        return None
    start = offset + stride * first
    return start, start + stride * (last - first) + 1, first, last + 1


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


def pointwise_grads(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, want_x: bool = True,
                    want_weight: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input and weight gradients of a 1x1 convolution (``pointwise``) as matrix products over the pixels
    (batch x height x width rows, channels as columns); the weight's in the weight's own memory layout (the
    gradient layout contract: DDP's buckets), the input's channels last (on a 1x1 map NCHW's strides too)."""
    n, _, height, width = x.shape
    rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # (positions, out)
    grad_x = grad_w = None
    if want_x:
        out_channels, in_channels = weight.shape[:2]
        grad_x = (rows @ weight.reshape(out_channels, in_channels)).reshape(n, height, width, in_channels).permute(0, 3, 1, 2)
    if want_weight:
        grad_w = torch.empty_like(weight, memory_format=torch.preserve_format)
        grad_w.copy_((rows.T @ x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])).reshape(weight.shape))
    return grad_x, grad_w


class _PointwiseConv(torch.autograd.Function):
    """A 1x1 convolution (``pointwise``): oneDNN's forward, ``pointwise_grads``'s backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x, grad_w = pointwise_grads(x, grad, weight, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad_b = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class TapConv2d(nn.Conv2d):
    """A plain or depthwise ``nn.Conv2d`` whose gradients on the CPU, where the kernel is larger than the map or a
    1x1 convolution's map has a few pixels, are computed here; everything else (parameters, state dict, forward)
    is nn.Conv2d's."""

    def _conv_forward(self, input, weight, bias):
        if (input.is_cpu and input.dim() == 4 and torch.is_grad_enabled() and weight.requires_grad and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and not torch.is_autocast_enabled("cpu")):
            if pointwise(self):
                if input.shape[-2] * input.shape[-1] <= POINTWISE_MAX_POSITIONS:
                    return _PointwiseConv.apply(input, weight, bias)
            elif overhangs(input.shape, self.kernel_size, self.dilation):
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
