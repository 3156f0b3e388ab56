"""What is being labeled: a task the labeler reads from a trainable (or any module), never its own.

Used by ``python -m platform.label posts.csv --task gender_bias``. ``--task`` names a trainable
stem, whose ``trainables/<stem>/labeling.py`` is the task, or a module of the user's
(``--task mytasks.toxicity``, importable where the command runs: the Ray actors get the task by
value, so it need not be installed on the nodes). Without
``--task``, the one trainable that has a ``labeling`` module. A task module holds:

- ``VERSION``: part of every cache key: bump it whenever the request or the reply schema changes;
- ``SYSTEM``: the system prompt;
- ``Reply``: a pydantic model of the reply, with the label field and a ``reason`` (one short sentence);
- ``LABEL``: the name of ``Reply``'s label field, also the label's column in labels.csv;
- ``COLUMNS``: the input table's ``id``, ``image`` and ``text`` column names;
- ``TEXT_PREFIX``: put before the row's text in the request (``"Caption: "``);
- ``GENERATION``: ``temperature``, ``max_tokens`` and ``image_detail`` (part of every cache key);
- ``INPUT_FILE``: the table's file name when the source is a folder (``posts.csv``).
"""

from __future__ import annotations

import base64
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from platform.errors import UserError
from platform.label import prompt, reply

REQUIRED = ("VERSION", "SYSTEM", "Reply", "LABEL", "COLUMNS", "TEXT_PREFIX", "GENERATION", "INPUT_FILE")
COLUMN_ROLES = ("id", "image", "text")
GENERATION_KEYS = ("temperature", "max_tokens", "image_detail")


@dataclass(frozen=True)
class Task:
    module: str  # the task module's name: the ledger's ``task``; pickled by value for the actors (platform/label/cli.py)
    version: str
    system: str
    reply: Any  # the pydantic model class
    label: str
    columns: dict[str, str]
    text_prefix: str
    generation: dict[str, Any]
    input_file: str

    def messages(self, image: bytes, mime: str, text: str) -> list[dict[str, Any]]:
        """The chat messages for one row; its text is the last part (the test server relies on it)."""
        data_url = f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"
        return [
            {"role": "system", "content": self.system},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url, "detail": self.generation["image_detail"]}},
                    {"type": "text", "text": f"{self.text_prefix}{text}"},
                ],
            },
        ]

    def request(self, model: str, image: bytes, mime: str, text: str, structured: bool) -> dict[str, Any]:
        """The body of one chat completion, online or as a line of a batch file."""
        body = {
            "model": model,
            "messages": self.messages(image, mime, text),
            "temperature": self.generation["temperature"],
            "max_tokens": self.generation["max_tokens"],
        }
        if structured:
            body["response_format"] = reply.response_format(self.reply)
        return body

    def parse(self, text: str | None) -> tuple[Any, str]:
        """``(label, reason)`` from a reply; raises ``reply.ReplyError`` with a specific reason."""
        return reply.validate(self.reply, self.label, prompt.decode(text), text or "")

    def prompt_tokens(self, text: str, image_tokens: int) -> int:
        chars = len(self.system) + len(self.text_prefix) + len(text)
        return math.ceil(chars / prompt.CHARS_PER_TOKEN) + image_tokens

    def request_tokens(self, text: str, image_tokens: int) -> int:
        """What one request counts against a tokens-per-minute limit before it runs: its prompt and the
        most it may write (``max_tokens``), as OpenAI counts it."""
        return self.prompt_tokens(text, image_tokens) + self.generation["max_tokens"]


def load(name: str | None) -> Task:
    """The task ``--task`` names (a trainable stem or a dotted module), or the only one there is."""
    module = _module(name or _only_task())
    missing = [attribute for attribute in REQUIRED if not hasattr(module, attribute)]
    if missing:
        raise UserError(
            f"labeling task {module.__name__} lacks {', '.join(missing)} (see platform/label/task.py for what a task module holds)"
        )
    columns, generation = dict(module.COLUMNS), dict(module.GENERATION)
    if sorted(columns) != sorted(COLUMN_ROLES) or sorted(generation) != sorted(GENERATION_KEYS):
        raise UserError(
            f"labeling task {module.__name__}: COLUMNS needs exactly {', '.join(COLUMN_ROLES)} and "
            f"GENERATION exactly {', '.join(GENERATION_KEYS)}"
        )
    fields = getattr(module.Reply, "model_fields", {})
    if module.LABEL not in fields or "reason" not in fields:
        raise UserError(
            f"labeling task {module.__name__}: Reply must be a pydantic model with the fields {module.LABEL!r} (LABEL) and 'reason'"
        )
    return Task(
        module.__name__,
        module.VERSION,
        module.SYSTEM,
        module.Reply,
        module.LABEL,
        columns,
        module.TEXT_PREFIX,
        generation,
        module.INPUT_FILE,
    )


def _module(name: str) -> ModuleType:
    path = _trainables_dir() / name / "labeling.py"
    if not path.is_file():
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # the task itself is missing, not one of its imports
                raise UserError(
                    f"no labeling task {name!r}: choose from {', '.join(stems()) or 'none'}, "
                    "or give an importable module like mytasks.toxicity"
                ) from None
            raise
    # Loaded by its file, not as a submodule: importing the trainable's package would import torch and
    # its model, for a prompt and a schema.
    full_name = f"trainables.{name}.labeling"
    if full_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(full_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[full_name] = module
        spec.loader.exec_module(module)
    return sys.modules[full_name]


def _trainables_dir() -> Path:
    return Path(importlib.util.find_spec("trainables").submodule_search_locations[0])


def stems() -> list[str]:
    """The trainables that have a labeling task."""
    return sorted(path.parent.name for path in _trainables_dir().glob("*/labeling.py"))


def _only_task() -> str:
    found = stems()
    if len(found) != 1:
        have = f"the trainables {', '.join(found)} have" if found else "no trainable has"
        raise UserError(f"give --task: {have} a labeling task")
    return found[0]
