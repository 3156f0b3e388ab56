"""The training loop without Ray: exact resume from a checkpoint, accumulation, early stopping.

.venv/bin/python -m pytest tests/test_loop.py
"""

from __future__ import annotations

import dataclasses
import io
import math
import types

import pytest
import torch

from platform import config as config_lib
from platform.errors import UserError
from platform.train.averaging import WeightAverage, evaluated_weights
from platform.train.exact import epoch_seed, seed_everything
from platform.train.loop import TrainState, new_state, run_epoch

CPU = torch.device("cpu")


@dataclasses.dataclass
class ToyConfig(config_lib.TrainConfig):
    epochs: int = 4
    lr: float = 0.05
    scheduler: str = "cosine_restarts"
    restart_period: int = 2


def _loss(model, batch, cfg):
    logits = model(batch["x"])
    loss = torch.nn.functional.cross_entropy(logits, batch["label"])
    return loss, {"loss": loss.item(), "acc": (logits.argmax(1) == batch["label"]).float().mean().item()}


def _evaluate(model, batches, cfg):
    correct = total = 0
    for batch in batches:
        correct += (model(batch["x"]).argmax(1) == batch["label"]).sum().item()
        total += len(batch["label"])
    return {"val/acc": correct / total, "confusion_matrix": [[correct, 0], [0, total - correct]]}


TOY = types.SimpleNamespace(loss=_loss, evaluate=_evaluate, METRIC=("val/acc", "max"))


def _toy_model(cfg):
    seed_everything(cfg.seed)
    # Dropout makes the run depend on the random stream, which a resume must reproduce.
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2))


def _batches(epoch_index: int, cfg) -> list[dict]:
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch_index))
    x = torch.randn(64, 6, generator=generator)
    label = (x[:, 0] + x[:, 1] > 0).long()
    return [{"x": x[i : i + 16], "label": label[i : i + 16]} for i in range(0, 64, 16)]


def _train(state: TrainState, cfg, until_epoch: int) -> list[dict]:
    while state.epoch < until_epoch:
        seed_everything(epoch_seed(cfg.seed, state.epoch))
        metrics, _extras = run_epoch(TOY, state, _batches(state.epoch, cfg), _batches(99, cfg), cfg, CPU)
        state.record(metrics, "val/acc", "max")
    return state.history


def _comparable(history):
    return [{k: v for k, v in row.items() if k != "epoch_s"} for row in history]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_from_a_saved_state_is_exact(ema_decay):
    cfg = ToyConfig(ema_decay=ema_decay)
    straight = new_state(_toy_model(cfg), cfg, CPU)
    _train(straight, cfg, cfg.epochs)

    first = new_state(_toy_model(cfg), cfg, CPU)
    _train(first, cfg, 2)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    # A different init proves the weights come from the checkpoint, not from the seed.
    resumed = new_state(_toy_model(dataclasses.replace(cfg, seed=123)), cfg, CPU)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    _train(resumed, cfg, cfg.epochs)

    assert _comparable(resumed.history) == _comparable(straight.history)
    assert resumed.step == straight.step == cfg.epochs * 4
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(weight, resumed.model.state_dict()[name]), name
    for name, weight in straight.evaluated().state_dict().items():
        assert torch.equal(weight, resumed.evaluated().state_dict()[name]), name


def test_the_weight_average_weighs_only_the_visited_weights():
    """Bias-corrected: after t updates, sum(decay**age * w) / sum(decay**age), nothing of the initial weights."""
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.5)
    visited = [torch.full_like(model.weight, value) for value in (4.0, 8.0, 2.0)]
    for weight in visited:
        with torch.no_grad():
            model.weight.copy_(weight)
        average.update(model)
    expected = (0.25 * 4.0 + 0.5 * 8.0 + 1.0 * 2.0) / (0.25 + 0.5 + 1.0)
    assert torch.allclose(average.module.weight, torch.full_like(model.weight, expected))


def test_the_average_is_what_is_validated_and_kept():
    cfg = ToyConfig(ema_decay=0.8, epochs=1)
    state = new_state(_toy_model(cfg), cfg, CPU)
    history = _train(state, cfg, 1)
    assert history[0]["val/acc"] == _evaluate(state.average.module, _batches(99, cfg), cfg)["val/acc"]
    averaged = state.average.module.state_dict()
    assert not all(torch.equal(weight, averaged[name]) for name, weight in state.model.state_dict().items())
    kept = evaluated_weights(state.state_dict())
    assert all(torch.equal(weight, averaged[name]) for name, weight in kept.items())


def test_gradient_accumulation_counts_optimizer_steps():
    cfg = ToyConfig(grad_accum_steps=3, epochs=1)
    state = new_state(_toy_model(cfg), cfg, CPU)
    _train(state, cfg, 1)
    assert state.step == 2  # 4 batches: one step after 3, one for the remainder


def test_early_stopping_waits_for_patience():
    cfg = ToyConfig(patience=2, epochs=50)
    state = new_state(_toy_model(cfg), cfg, CPU)
    for value in (0.5, 0.6, 0.6, 0.55):
        state.epoch += 1
        state.record({"val/acc": value}, "val/acc", "max")
    assert (state.best, state.best_epoch, state.bad_epochs) == (0.6, 2, 2)
    assert state.should_stop(cfg)


def test_learning_rate_follows_warm_restarts():
    cfg = ToyConfig(epochs=4, restart_period=2, restart_mult=1)
    state = new_state(_toy_model(cfg), cfg, CPU)
    history = _train(state, cfg, 4)
    lrs = [row["lr"] for row in history]
    assert lrs[0] == lrs[2] == cfg.lr and lrs[1] < cfg.lr


def test_linear_warmup_steps_every_optimizer_step_and_resumes_exactly():
    """4 optimizer steps an epoch over 4 epochs: lr rises over the first 4 steps (warmup_ratio
    0.25 of 16), peaks as epoch 2 starts and falls to min_lr_ratio; a resume from epoch 2 continues it."""
    cfg = ToyConfig(epochs=4, scheduler="linear_warmup", warmup_ratio=0.25, min_lr_ratio=0.0)
    straight = new_state(_toy_model(cfg), cfg, CPU, steps_per_epoch=4)
    assert straight.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr / 5)
    lrs = [row["lr"] for row in _train(straight, cfg, cfg.epochs)]
    assert lrs == pytest.approx([cfg.lr, cfg.lr * 8 / 12, cfg.lr * 4 / 12, 0.0])  # where each epoch ended

    first = new_state(_toy_model(cfg), cfg, CPU, steps_per_epoch=4)
    _train(first, cfg, 2)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed = new_state(_toy_model(dataclasses.replace(cfg, seed=123)), cfg, CPU, steps_per_epoch=4)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    _train(resumed, cfg, cfg.epochs)
    assert _comparable(resumed.history) == _comparable(straight.history)
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(weight, resumed.model.state_dict()[name]), name


def _ddp_rank(rank: int, world: int, folder: str) -> None:
    """One gloo rank: 3 batches of its own, accumulation 2, then its weights to a file."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = ToyConfig(grad_accum_steps=2, epochs=1)
    model = torch.nn.parallel.DistributedDataParallel(_toy_model(cfg))
    state = new_state(model, cfg, CPU)
    batches = _batches(rank, cfg)[:3]
    run_epoch(TOY, state, batches, _batches(99, cfg), cfg, CPU, rank=rank)
    torch.save(model.module.state_dict(), f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ranks_end_an_epoch_with_an_accumulation_remainder_in_agreement(tmp_path):
    """3 batches, accumulation 2: the epoch's last step (one batch) must all-reduce too."""
    torch.multiprocessing.spawn(_ddp_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_nan_loss_stops_the_run_naming_where():
    cfg = ToyConfig(epochs=1)
    state = new_state(_toy_model(cfg), cfg, CPU)
    batches = _batches(0, cfg)
    batches[2] = {**batches[2], "x": batches[2]["x"] * float("nan")}
    with pytest.raises(UserError, match=r"training loss is nan in epoch 1, batch 3 \(after 2 optimizer steps\)"):
        run_epoch(TOY, state, batches, _batches(99, cfg), cfg, CPU)
    assert not math.isnan(state.model[0].weight.sum().item()), "the weights never saw it"
