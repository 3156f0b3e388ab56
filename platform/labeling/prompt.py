"""The gender-bias prompt, its version, and the tolerant reading of a model's reply.

Used by ``python -m platform.label posts.csv``. Bump ``PROMPT_VERSION`` whenever the request (its
messages, ``response_format``) or the parsing change: it is part of every cache key, so old answers
are then asked again. The reply schema itself is platform/labeling/reply.py.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

# ReplyError stays importable from here (the worker, bench/label_throughput.py and tests catch it).
from platform.labeling.reply import ReplyError, clip, validate

# v2: requests carry response_format (reply.Reply's JSON schema) where the API takes it.
PROMPT_VERSION = "gender-bias-v2"
# Part of the cache key: a different temperature or token cap is a different question.
GENERATION = {"temperature": 0.0, "max_tokens": 150, "image_detail": "low"}
# Token counts for --dry-run and --tpm: OpenAI's rule for images on gpt-4o-class models (a "low"
# detail image costs a fixed 85 tokens; "high" adds 170 a 512 px tile); others differ (see --image-tokens).
IMAGE_TOKENS_LOW_DETAIL = 85
IMAGE_TOKENS_A_TILE = 170
EXPECTED_COMPLETION_TOKENS = 60
CHARS_PER_TOKEN = 4

SYSTEM = (
    "You review Instagram posts for gender bias. Look at the image and read the caption, then rate "
    "how strongly the post expresses or reinforces gender stereotypes or bias, from 0 (none at all) "
    "to 10 (extreme). Answer with one JSON object and nothing else: "
    '{"score": <number 0-10>, "reason": "<one short sentence>"}'
)


def messages(image: bytes, mime: str, caption: str) -> list[dict[str, Any]]:
    """The chat messages for one post; the caption is the last text part (the test server relies on it)."""
    data_url = f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url, "detail": GENERATION["image_detail"]}},
            {"type": "text", "text": f"Caption: {caption}"},
        ]},
    ]


def estimate_prompt_tokens(caption: str, image_tokens: int = IMAGE_TOKENS_LOW_DETAIL) -> int:
    text = len(SYSTEM) + len("Caption: ") + len(caption)
    return math.ceil(text / CHARS_PER_TOKEN) + image_tokens


def request_tokens(caption: str, image_tokens: int) -> int:
    """What one request counts against a tokens-per-minute limit before it runs: its prompt and the
    most it may write (``max_tokens``), as OpenAI counts it."""
    return estimate_prompt_tokens(caption, image_tokens) + GENERATION["max_tokens"]


def image_tokens(width: int, height: int, detail: str = GENERATION["image_detail"]) -> int:
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


def parse_reply(text: str | None) -> tuple[float, str]:
    """``(score, reason)`` from a reply, validated by ``reply.Reply``; a structured reply is plain
    JSON, others often wrap it in code fences or add prose."""
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
    return validate(decoded, text)
