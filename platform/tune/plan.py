"""A sweep's plan: everything ``python -m platform.tune asl`` checks before Ray starts (tiers,
objectives, search space, budget) and the estimate its ``--dry-run`` prints.
"""

from __future__ import annotations

from platform import config as config_lib
from platform import registry
from platform.contract import Trainable
from platform.data import locations
from platform.errors import UserError
from platform.runs import storage as storage_lib
from platform.tune import space as space_lib


class Plan:
    """Everything checked before Ray starts: tiers, objectives, space, budget."""

    def __init__(self, trainable: Trainable, chosen: dict, storage: str):
        self.trainable, self.chosen, self.storage = trainable, chosen, storage
        self.stem = stem = trainable.stem
        self.tiers_root = storage_lib.tiers_root(storage, stem)  # the saved tiers and earlier runs' timings
        self.tiers = list(dict.fromkeys(t.strip() for t in chosen["tiers"].split(",") if t.strip()))
        if not self.tiers:
            raise UserError("--tiers names no tier")
        self.config_values = chosen.get("config_values") or {}
        if chosen.get("config"):  # an unknown key or a wrong type names the file
            config_lib.apply(self.trainable.Config(), self.config_values, f"--config {chosen['config']}")
        # Unknown tiers, bad --set and --data fail here, naming the culprit.
        self.tier_configs = {
            t: registry.resolve(stem, t, chosen["sets"], trial=self.config_values, data_dir=chosen["data"], storage=self.tiers_root)
            for t in self.tiers
        }
        if chosen["data"]:
            locations.check_data_folder(chosen["data"])
        if chosen["pareto"] and chosen["objective"]:
            raise UserError("give either --objective or --pareto, not both")
        if chosen["pareto"]:
            self.objectives = space_lib.parse_objectives(chosen["pareto"], self.trainable, "--pareto")
            if len(self.objectives) < 2:
                raise UserError("--pareto needs at least two metrics, e.g. val/acc:max,train_s:min")
        else:
            default = ":".join(self.trainable.METRIC)
            self.objectives = space_lib.parse_objectives(chosen["objective"] or default, self.trainable, "--objective")
        self.scheduler = chosen["scheduler"] or ("none" if chosen["pareto"] else "asha")
        self.space = space_lib.searched_space(trainable.space, trainable.Config, chosen["sets"])
        if not self.space and len(self.tiers) == 1:
            raise UserError(f"nothing to search: {trainable.space.name}.SPACE is empty (or fixed by --set) and there is one tier")
        for name, value in (
            ("--trials", chosen["trials"]),
            ("--keep-best", chosen["keep_best"]),
            ("--concurrent", chosen["concurrent"] or 1),
            ("--cpus-per-trial", chosen["cpus_per_trial"]),
        ):
            if value <= 0:
                raise UserError(f"{name} must be positive")
        if chosen["trials"] < len(self.tiers):
            raise UserError(
                f"--trials {chosen['trials']} is fewer than the {len(self.tiers)} tiers: each tier's own "
                "configuration is a trial, the sweep is judged against it"
            )
        self.budget = space_lib.parse_duration(chosen["time_budget"])
        self.estimates = {t: self._estimate(t) for t in self.tiers}
        cheapest = min(self.tiers, key=lambda t: self.estimates[t][0])
        if self.budget is not None and self.budget < self.estimates[cheapest][0]:
            raise UserError(
                f"--time-budget {chosen['time_budget']} is too small for one trial: the cheapest "
                f"(tier {cheapest}) takes about {space_lib.format_duration(self.estimates[cheapest][0])}"
            )

    def _estimate(self, tier: str) -> tuple[float, str]:
        epoch_s, source = space_lib.epoch_seconds(self.trainable, self.tiers_root, tier)
        epochs = self.tier_configs[tier].epochs
        return space_lib.trial_seconds(epochs, epoch_s), f"{epochs} epochs x {epoch_s:.2f}s ({source})"

    def describe(self, concurrent: int) -> str:
        trials = self.chosen["trials"]
        mean_s = sum(self.estimates[t][0] for t in self.tiers) / len(self.tiers)
        lines = [
            f"sweep {self.stem}: {trials} trials, {concurrent} at a time; objective "
            f"{', '.join(map(str, self.objectives))}; sampler {self.chosen.get('sampler', 'tpe')}; scheduler {self.scheduler}"
            + (f"; time budget {space_lib.format_duration(self.budget)}" if self.budget else ""),
            f"first {len(self.tiers)} trial(s): each tier's own configuration ({', '.join(self.tiers)}); a saved "
            "tier must beat its own on the first objective",
            "search space:",
            *space_lib.describe_space(self.tiers, self.space),
            "estimate:",
        ]
        lines += [
            f"  tier {t}: {space_lib.format_duration(s)} a trial = {space_lib.TRIAL_STARTUP_S:.0f}s start-up + {how}"
            for t, (s, how) in self.estimates.items()
        ]
        wall = mean_s * trials / concurrent
        lines.append(
            f"  {trials} trials: about {space_lib.format_duration(mean_s * trials)} of trial time, "
            f"{space_lib.format_duration(wall)} wall-clock at {concurrent} at a time"
            + (" (at most: ASHA stops poor trials early)" if self.scheduler == "asha" else "")
            + (f"; the time budget stops it at {space_lib.format_duration(self.budget)}" if self.budget and self.budget < wall else "")
        )
        return "\n".join(lines)
