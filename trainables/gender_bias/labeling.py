"""The gender-bias labeling task: what ``python -m platform.label posts.csv --task gender_bias`` asks.

The platform's labeler is generic (platform/label/task.py says what a task module holds); this
module is everything it knows about gender bias: the prompt, the reply schema with its 0-10 score,
and the columns of the seed's posts.csv. Its labels.csv is what ``python -m platform.run gender_bias
--data DIR`` reads (trainables/gender_bias/data.py). No torch here: the labeler's driver and its Ray
actors load this file alone.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# v2: requests carry response_format (Reply's JSON schema) where the API takes it.
VERSION = "gender-bias-v2"
SCORE_RANGE = (0, 10)
LABEL = "score"
COLUMNS = {"id": "post_id", "image": "image_path", "text": "caption"}
INPUT_FILE = "posts.csv"
TEXT_PREFIX = "Caption: "
GENERATION = {"temperature": 0.0, "max_tokens": 150, "image_detail": "low"}
SYSTEM = (
    "You review Instagram posts for gender bias. Look at the image and read the caption, then rate "
    "how strongly the post expresses or reinforces gender stereotypes or bias, from 0 (none at all) "
    "to 10 (extreme). Answer with one JSON object and nothing else: "
    '{"score": <number 0-10>, "reason": "<one short sentence>"}'
)


def _number(value: Any) -> Any:
    # pydantic would read true as 1.0: a model that says true has not scored the post.
    if isinstance(value, bool):
        raise ValueError("a boolean is no score")
    return value.strip() if isinstance(value, str) else value


class Reply(BaseModel):
    # Strict structured outputs need additionalProperties false; extra keys a tolerant reply carries
    # are still ignored when validating.
    model_config = ConfigDict(title="gender_bias_label", json_schema_extra={"additionalProperties": False})

    score: Annotated[float, BeforeValidator(_number)] = Field(
        ge=SCORE_RANGE[0],
        le=SCORE_RANGE[1],
        allow_inf_nan=False,
        description=f"how strongly the post expresses gender bias, {SCORE_RANGE[0]} (none) to {SCORE_RANGE[1]} (extreme)",
    )
    reason: str = Field(description="one short sentence")
