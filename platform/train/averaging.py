"""An exponential moving average of the weights (``--set ema_decay=0.998``), kept by the loop.

Used by any run with ``--set ema_decay=D`` (``python -m platform.run emotion --tier fast_text
--set ema_decay=0.998``): ``platform/train/loop.py`` updates it after every optimizer step, validates it
instead of the weights being trained, and checkpoints it, so the best model and the test split are
the average's. Fine-tuning on a small, noisy set moves the weights between minibatches more than
it improves them, and the average of the last few hundred steps often generalises better than any
one of them (Polyak averaging; timm's and Composer's EMA).

The average is bias-corrected: it starts from nothing, not from the initial weights, so after
``t`` steps it is the average of the ``t`` weights the run visited, weighted by ``decay**age``
and normalised. A freshly initialised head therefore never leaks into it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class WeightAverage:
    """A copy of the model whose floating-point weights and buffers follow the trained model's
    average; integer buffers (counters, position ids) are copied as they are."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        # The weight of the newest step among all t of them: 1 at the first, then towards 1 - decay.
        share = (1 - self.decay) / (1 - self.decay**self.updates)
        for averaged, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if averaged.is_floating_point():
                averaged.lerp_(current.detach().to(averaged.dtype), share)
            else:
                averaged.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = state["updates"]


def evaluated_weights(saved: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint was validated with: the average's when the run kept one."""
    averaged = saved.get("average")
    return averaged["weights"] if averaged else saved["model"]
