"""The reply a labeling model must give, as a pydantic model, and how the API is asked for it.

Used by ``python -m platform.label posts.csv``: platform/labeling/worker.py sends
``response_format()`` (the API's structured-output mode: OpenAI-compatible ``json_schema``, strict)
until the API refuses it (``refused``), and every reply, structured or found by the tolerant parser
in platform/labeling/prompt.py, is validated by ``Reply`` (``validate``) with a specific reason.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

SCHEMA_NAME = "gender_bias_label"
SCORE_MIN, SCORE_MAX = 0, 10
MAX_REASON_CHARS = 300
# What a provider without structured outputs says in its 400 ("Invalid parameter: response_format",
# "response_format is not supported", "json_schema is not supported for this model"): the request
# shape, not the row, is wrong.
_REFUSAL = re.compile(r"response_format|json_schema|structured output", re.IGNORECASE)


class ReplyError(ValueError):
    """The model answered, but not with a usable label."""


def _number(value: Any) -> Any:
    # pydantic would read true as 1.0: a model that says true has not scored the post.
    if isinstance(value, bool):
        raise ValueError("a boolean is no score")
    return value.strip() if isinstance(value, str) else value


class Reply(BaseModel):
    # Strict structured outputs need additionalProperties false; extra keys a tolerant reply carries
    # are still ignored when validating.
    model_config = ConfigDict(title=SCHEMA_NAME, json_schema_extra={"additionalProperties": False})

    score: Annotated[float, BeforeValidator(_number)] = Field(
        ge=SCORE_MIN, le=SCORE_MAX, allow_inf_nan=False,
        description=f"how strongly the post expresses gender bias, {SCORE_MIN} (none) to {SCORE_MAX} (extreme)")
    reason: str = Field(description="one short sentence")

    @field_validator("reason")
    @classmethod
    def _one_line(cls, value: str) -> str:
        flat = " ".join(value.split())
        if not flat:
            raise ValueError("blank reason")
        return flat[:MAX_REASON_CHARS]


def response_format() -> dict[str, Any]:
    """The ``response_format`` that asks for exactly ``Reply``'s JSON."""
    return {"type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": Reply.model_json_schema(), "strict": True}}


def validate(data: Any, text: str) -> tuple[float, str]:
    """``(score, reason)`` from a decoded reply; ``text``, the raw reply, is quoted in the error."""
    if not isinstance(data, dict):
        raise ReplyError(f"not a JSON object: {clip(text)}")
    try:
        reply = Reply.model_validate(data)
    except ValidationError as err:
        raise ReplyError(_why(err.errors()[0], text)) from None
    return reply.score, reply.reason


def _why(error: dict[str, Any], text: str) -> str:
    """The quarantine reason for pydantic's first error, in the words a ledger groups by."""
    if error["loc"][:1] == ("reason",):
        return "no reason given"
    if error["type"] in ("greater_than_equal", "less_than_equal"):
        return f"score {float(error['input']):g} out of range {SCORE_MIN}..{SCORE_MAX}"
    return f"no numeric score: {clip(text)}"


def refused(status: int, message: str) -> bool:
    """Whether an HTTP error says the API does not take ``response_format`` (asking again without it
    will do), rather than that this row's request is wrong."""
    return status in (400, 422) and bool(_REFUSAL.search(message))


def clip(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
