"""Token counts of a labeling request, and the tolerant reading of a model's reply as JSON.

Used by ``python -m platform.label posts.csv``; what is asked and the reply's schema are the task's
(platform/label/task.py), checking a reply against it is platform/label/reply.py.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from platform.label.reply import ReplyError, clip

# Token counts for --dry-run and --tpm: OpenAI's rule for images on gpt-4o-class models (a "low"
# detail image costs a fixed 85 tokens; "high" adds 170 a 512 px tile); others differ (see --image-tokens).
IMAGE_TOKENS_LOW_DETAIL = 85
IMAGE_TOKENS_A_TILE = 170
EXPECTED_COMPLETION_TOKENS = 60
CHARS_PER_TOKEN = 4


def image_tokens(width: int, height: int, detail: str) -> int:
    """OpenAI's rule: 85 tokens at "low" detail; at "high" (and "auto", counted as high: the most it
    may cost) 85 plus 170 a 512 px tile, once the image is fitted into 2048x2048 and then its short
    side into 768 px."""
    if detail == "low":
        return IMAGE_TOKENS_LOW_DETAIL
    scale = min(1.0, 2048 / max(width, height, 1))
    scale *= min(1.0, 768 / max(min(width, height) * scale, 1))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return IMAGE_TOKENS_LOW_DETAIL + IMAGE_TOKENS_A_TILE * tiles


_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def decode(text: str | None) -> Any:
    """The JSON a reply holds: a structured reply is plain JSON, others often wrap it in code fences
    or add prose."""
    if not text or not text.strip():
        raise ReplyError("empty reply")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        decoded = json.loads(body, strict=False)  # models put raw newlines in strings
    except ValueError:
        found = _OBJECT.search(body)
        try:
            decoded = json.loads(found.group(0), strict=False) if found else None
        except ValueError:
            decoded = None
        if decoded is None:
            raise ReplyError(f"not JSON: {clip(text)}") from None
    return decoded
