"""Checking a labeling model's reply against its task's pydantic model, and asking the API for it.

Used by ``python -m platform.label posts.csv``: platform/label/labeler.py sends
``response_format(task.reply)`` (the API's structured-output mode: OpenAI-compatible
``json_schema``, strict) until the API refuses it (``refused``), and every reply, structured or found
by the tolerant parser (platform/label/prompt.py), is validated by ``validate`` with a specific
reason. The reply model itself is the task's (platform/label/task.py).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

MAX_REASON_CHARS = 300
# What a provider without structured outputs says in its 400 ("Invalid parameter: response_format",
# "response_format is not supported", "json_schema is not supported for this model"): the request
# shape, not the row, is wrong.
_REFUSAL = re.compile(r"response_format|json_schema|structured output", re.IGNORECASE)


class ReplyError(ValueError):
    """The model answered, but not with a usable label."""


def response_format(model: Any) -> dict[str, Any]:
    """The ``response_format`` that asks for exactly ``model``'s JSON."""
    schema = model.model_json_schema()
    return {"type": "json_schema", "json_schema": {"name": schema["title"], "schema": schema, "strict": True}}


def validate(model: Any, label: str, data: Any, text: str) -> tuple[Any, str]:
    """``(label, reason)`` from a decoded reply, the reason on one line; ``text``, the raw reply, is
    quoted in the error."""
    if not isinstance(data, dict):
        raise ReplyError(f"not a JSON object: {clip(text)}")
    try:
        checked = model.model_validate(data)
    except ValidationError as err:
        raise ReplyError(_why(model, label, err.errors()[0], text)) from None
    reason = " ".join(str(checked.reason).split())
    if not reason:
        raise ReplyError("no reason given")
    return getattr(checked, label), reason[:MAX_REASON_CHARS]


def _why(model: Any, label: str, error: dict[str, Any], text: str) -> str:
    """The quarantine reason for pydantic's first error, in the words a ledger groups by."""
    if error["loc"][:1] == ("reason",):
        return "no reason given"
    field = model.model_json_schema()["properties"][label]
    if error["type"] in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low = field.get("minimum", field.get("exclusiveMinimum"))
        high = field.get("maximum", field.get("exclusiveMaximum"))
        return f"{label} {float(error['input']):g} out of range {low:g}..{high:g}"
    kind = "numeric" if field.get("type") in ("number", "integer") else "valid"
    return f"no {kind} {label}: {clip(text)}"


def refused(status: int, message: str) -> bool:
    """Whether an HTTP error says the API does not take ``response_format`` (asking again without it
    will do), rather than that this row's request is wrong."""
    return status in (400, 422) and bool(_REFUSAL.search(message))


def clip(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
