"""The X-ray report generator's config, read without torch or the model by
``python -m platform.run xr2text --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses

from platform.config import TrainConfig, limited
from platform.errors import UserError

METRIC = ("val/bleu4_rouge_l", "max")
PREPROCESS_KEYS = ("image_size",)


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/xr2text.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    grad_accum_steps: int = 8
    grad_clip: float = 1.0
    patience: int = 999
    checkpoint_every: int = 5
    keep_checkpoints: int = 0
    image_size: int = limited(224, low=16)  # the encoders downsample 32x; smaller images leave them nothing to see
    """Images are resized to this many pixels square (grayscale)."""
    image_weights: str = "auto"
    """Image encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    encoder_stages: int = limited(4, low=1, high=4)  # both encoders have four (trainables/image_encoders.py)
    """Encoder stages kept (1-4, ending at strides 4-32; channels ResNet18 64-512, EfficientNet-Lite0 24/40/112/1280): fewer is a smaller encoder with a finer grid of visual tokens."""
    d_model: int = limited(512, low=1)
    """Width of the visual tokens and of the decoder."""
    heads: int = limited(8, low=1)
    """Attention heads of the decoder (d_model must be divisible by it)."""
    decoder_layers: int = limited(3, low=1)
    """Transformer decoder layers."""
    dropout: float = limited(0.1, low=0, high=0.99)
    """Dropout inside the decoder."""
    label_smoothing: float = limited(0.0, low=0, high=0.99)
    """Label smoothing of the training cross-entropy."""
    max_tokens: int = limited(60, low=1)
    """Report words kept as the target (longer reports are cut) and the longest generated report."""
    vocab_size: int = limited(2000, low=5)  # the 4 special tokens and at least one word
    """Largest vocabulary (specials included), the most frequent training words."""
    min_word_count: int = limited(3, low=1)
    """Training words seen fewer times become <unk>."""
    beam_width: int = limited(3, low=1)
    """Beam search width in evaluation (1: greedy); predict's --beam overrides it."""
    length_penalty: float = limited(1.0, low=0, high=5)
    """GNMT length penalty alpha of beam search: scores are divided by ((5 + length) / 6) ** alpha; 0 favours short reports."""
    curriculum: bool = True
    """Curriculum learning: train on the unlocked stages only; off trains on every study from epoch 0."""
    curriculum_epochs: tuple[int, ...] = limited((5, 15, 30), low=0)
    """Epochs (from 0) at which stages 1 (one finding), 2 (several) and 3 (complex) unlock."""
    complex_min_findings: int = limited(3, low=1)
    """Findings from which a study is stage 3 (complex multi-pathology)."""
    val_fraction: float = limited(0.1, low=0.01, high=0.9)
    """Share of the studies held out for validation when the data has no split (a seeded shuffle)."""
    test_fraction: float = limited(0.2, low=0, high=0.9)  # val must not be empty; test may be
    """Share held out for the test split (scored once after training) when the data has no split."""
    max_studies: int = limited(0, low=0)
    """Studies used, a seeded sample taken before the split; 0: all."""
    synthetic_studies: int = limited(1000, low=2, synthetic=True)  # a train and a val study
    """Synthetic set (no data_dir): number of studies."""
    synthetic_image_size: int = limited(224, low=16, synthetic=True)
    """Synthetic set: image side in pixels."""

    def validate(self) -> None:
        if self.d_model % self.heads:
            raise UserError(f"config key 'd_model' ({self.d_model}) must be divisible by heads ({self.heads})")
        if len(self.curriculum_epochs) != 3 or list(self.curriculum_epochs) != sorted(self.curriculum_epochs):
            raise UserError(
                f"config key 'curriculum_epochs' must be 3 epochs in order (stages 1, 2, 3), not {list(self.curriculum_epochs)}"
            )
