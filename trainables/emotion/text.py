"""Token ids of an utterance and its dialogue context, with the mask of the utterance's own tokens.

Used by ``trainables.emotion.features`` in the preprocessing of ``python -m platform.run emotion``
(``--set context_turns=K``) and in ``python -m platform.predict``. A row is
``[CLS] context [SEP] target [SEP]`` (``[CLS] target [SEP]`` without context), padded to
``max_tokens``. When it is too long the context loses its oldest tokens first, down to none; only
a target longer than ``max_tokens - 2`` tokens is cut itself (its end). ``target_mask`` marks the
target's tokens: the model pools those, so the context informs the target's tokens through
attention but the vector is the target's, and the model knows which utterance to classify.
"""

from __future__ import annotations

import numpy as np


def encode(tokenizer, targets: list[str], contexts: list[str], max_tokens: int) -> dict[str, np.ndarray]:
    """input_ids, attention_mask and target_mask, each [rows, max_tokens] int64."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    target_ids = _pieces(tokenizer, targets)
    context_ids = _pieces(tokenizer, contexts)
    ids = np.full((len(targets), max_tokens), pad, dtype=np.int64)
    attention, target_mask = np.zeros_like(ids), np.zeros_like(ids)
    for row, (target, context) in enumerate(zip(target_ids, context_ids)):
        target = target[: max_tokens - 2]
        room = max_tokens - 3 - len(target)  # [CLS], [SEP] after the context, [SEP] after the target
        context = context[len(context) - room :] if room > 0 and context else []
        head = [cls, *context, sep] if context else [cls]
        tokens = [*head, *target, sep]
        ids[row, : len(tokens)] = tokens
        attention[row, : len(tokens)] = 1
        target_mask[row, len(head) : len(head) + len(target)] = 1
    return {"input_ids": ids, "attention_mask": attention, "target_mask": target_mask}


def _pieces(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer([str(text) for text in texts], add_special_tokens=False, truncation=False)["input_ids"]
