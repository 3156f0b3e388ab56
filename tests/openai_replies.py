"""What the loopback OpenAI-compatible server (tests/openai_server.py) answers: the deterministic
score of a caption, the body of a chat completion for each scripted behaviour, and where a request
carries its caption and image.

    .venv/bin/python -m pytest tests/test_label.py
"""

from __future__ import annotations

import json
import time

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 20


def expected_score(caption: str) -> int:
    """The score this server gives a caption: deterministic, so tests can check the labels."""
    return sum(caption.encode("utf-8")) % 11


def chat_answer(body: dict, caption: str, behaviour: str, index: int) -> tuple[dict, int]:
    """The JSON body and HTTP status a chat completion gets for ``behaviour`` (one that has a body)."""
    if behaviour == "429":
        return {"error": {"message": "rate limited", "code": 429}}, 429
    if behaviour in ("500", "malformed"):  # a batch line cannot be malformed: it fails as a 500
        return {"error": {"message": "upstream failed", "code": 500}}, 500
    score = expected_score(caption)
    name, field = label_field(body.get("response_format"))
    label = field["enum"][score % len(field["enum"])] if field.get("enum") else score
    reply = {name: 42 if behaviour == "out_of_range" else label, "reason": f"caption checksum {score}"}
    content = json.dumps(reply)
    if behaviour == "not_json":
        content = "I would say this post is about a five."
    elif score % 2 == 0 and not body.get("response_format"):  # structured output: exactly the JSON
        content = f"```json\n{content}\n```"
    return {
        "id": f"chatcmpl-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }, 200


def label_field(response_format: dict | None) -> tuple[str, dict]:
    """The reply's label property (name, schema): a structured request's first that is not ``reason``
    (a number gets ``expected_score``, an enum its member at that index); ``score`` without one."""
    schema = ((response_format or {}).get("json_schema") or {}).get("schema") or {}
    return next(((name, spec) for name, spec in (schema.get("properties") or {}).items() if name != "reason"), ("score", {}))


def caption_and_image(body: dict) -> tuple[str, bool]:
    messages = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = messages[-1].get("content", "") if messages else ""
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    texts = [p.get("text", "") for p in parts if p.get("type") == "text"]
    has_image = any(p.get("type") == "image_url" and str(p.get("image_url", {}).get("url", "")).startswith("data:image/") for p in parts)
    caption = texts[-1] if texts else ""
    return (caption[len("Caption:") :].strip() if caption.startswith("Caption:") else caption), has_image
