"""Probabilistic MLP ensemble world model (the PETS / MBPO family), the first :class:`WorldModel`.

E members share one set of batched weights ``[E, in, out]``, so a forward call over all members
and any batch size B is a handful of batched matrix products (the step's math is in
:mod:`learned_envs.models.ensemble_serving`, written once for torch and numpy). Each member outputs a Gaussian over the
normalised target ``[Δobs, reward]``; a separate classifier reads the *next* observation and
gives the probability that the episode terminates there (Gymnasium envs decide termination from
the state they reach), and per-feature end rules carry the logged ends past the data (see
:func:`end_rules`).

Stepping sends each row through one member (a random member per row, as mbrl-lib's
``random_model`` propagation: rows are scattered over E equal slices, one per member), so a step
costs one member's forward per row; asking for uncertainty (disagreement, MOPO's std) runs every
member on every row.

Tensor shapes: B = batch, E = members, D = flat observation size, A = action features
(one-hot width for Discrete, flat size for Box), T = D + 1 targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from learned_envs.models.array_ops import NumpyDraws, NumpyOps, TorchDraws, TorchOps
from learned_envs.models.base import Batch, ModelConfig, Prediction, WorldModel, register_family
from learned_envs.models.ensemble_serving import RULE_OFF, ServingWeights, rule_holds
from learned_envs.models.normalizer import Normalizer

DYNAMICS, TERMINATION = "dynamics", "termination"


@dataclass
class EnsembleConfig(ModelConfig):
    """Everything needed to rebuild the network; stored in the checkpoint's metadata.

    ``obs_dim``, ``action_dim`` and ``discrete_actions`` default to 0/False: ``fit`` fills
    them from the data, so a config can name only the sizes.
    """

    obs_dim: int = 0
    action_dim: int = 0
    discrete_actions: bool = False
    ensemble_size: int = 7
    hidden_size: int = 200
    num_layers: int = 4
    termination_hidden_size: int = 64
    # The reward of a transition the termination head ends is the dynamics' reward plus one fitted
    # bonus (the ``terminal_bonus`` tensor), and the dynamics learn reward from the other rows only.
    # False in checkpoints written before this field (they hold no such tensor).
    terminal_bonus: bool = True
    # Per-feature end rules beside the termination classifier (the ``end_below``/``end_above``
    # tensors, see :func:`end_rules`). False in checkpoints written before this field.
    end_rules: bool = True


class EnsembleLinear(nn.Module):
    """E independent linear layers applied at once: ``[E, B, in] -> [E, B, out]``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        bound = 1.0 / in_features**0.5
        nn.init.trunc_normal_(self.weight, std=bound, a=-2 * bound, b=2 * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return TorchOps.affine(x, self.weight, self.bias)


@register_family
class EnsembleWorldModel(WorldModel):
    """State-space ensemble: ``encode``/``decode`` are the identity; ``predict`` steps a batch of states.

    Fitting stages: ``"dynamics"`` (E members, Gaussian NLL on their own bootstraps, soft-bounded
    log-variance) then ``"termination"`` (one classifier, class-balanced BCE on next observations).
    """

    family: ClassVar[str] = "ensemble"
    Config: ClassVar[type[ModelConfig]] = EnsembleConfig
    # An untrusted checkpoint's sizes stay below these (a 1024x16 ensemble of 64 members is
    # already far past anything fit builds), so building the model can never exhaust memory.
    size_limits: ClassVar[dict[str, int]] = {
        "obs_dim": 100_000, "action_dim": 100_000, "ensemble_size": 64, "hidden_size": 4096,
        "num_layers": 16, "termination_hidden_size": 4096,
    }
    stages: ClassVar[tuple[str, ...]] = (DYNAMICS, TERMINATION)
    # Config fields that older checkpoints' metadata lacks, and what their absence meant then.
    legacy_defaults: ClassVar[dict[str, Any]] = {"terminal_bonus": False, "end_rules": False}

    # Weight of PETS's penalty on the log-variance bounds, which keeps them from drifting apart.
    LOGVAR_BOUND_WEIGHT: ClassVar[float] = 0.01

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        self.config = config
        c = config
        in_dim, out_dim = c.obs_dim + c.action_dim, c.obs_dim + 1
        self.input_norm = Normalizer(in_dim)
        self.target_norm = Normalizer(out_dim)
        sizes = [in_dim] + [c.hidden_size] * c.num_layers
        self.hidden = nn.ModuleList(EnsembleLinear(c.ensemble_size, i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.head = EnsembleLinear(c.ensemble_size, c.hidden_size, 2 * out_dim)
        self.max_logvar = nn.Parameter(torch.full((c.ensemble_size, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((c.ensemble_size, 1, out_dim), -10.0))
        # The box of every training observation ([D] each): the termination head answers for a
        # state beyond it as for the nearest point of the box, so it never invents ends (or their
        # absence) where it has seen no data.
        self.register_buffer("support_low", torch.full((c.obs_dim,), -torch.inf))
        self.register_buffer("support_high", torch.full((c.obs_dim,), torch.inf))
        self.termination = termination_head(c)
        # [D] each: the episode ends where a feature is below end_below or above end_above (see
        # end_rules); RULE_OFF, beyond any float32 value, where no rule stands.
        if c.end_rules:
            self.register_buffer("end_below", torch.full((c.obs_dim,), -RULE_OFF))
            self.register_buffer("end_above", torch.full((c.obs_dim,), RULE_OFF))
        else:
            self.end_below = self.end_above = None
        # [1] reward added where the termination head ends an episode: an end's reward beyond what the
        # dynamics predict (a goal's +100), which one Gaussian head would smear over the states near it.
        if c.terminal_bonus:
            self.register_buffer("terminal_bonus", torch.zeros(1))
        else:
            self.terminal_bonus = None
        self._serving_cache: dict[bool, ServingWeights] = {}  # by host: see serving_weights
        # Weights loaded in place may change what the cache read of them once (its flags).
        self.register_load_state_dict_post_hook(lambda module, keys: module._serving_cache.clear())
        self._snapshots: dict[str, dict[str, torch.Tensor]] = {}

    @classmethod
    def tensor_shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        c = config
        assert isinstance(c, EnsembleConfig)
        E, H, in_dim, out_dim = c.ensemble_size, c.hidden_size, c.obs_dim + c.action_dim, c.obs_dim + 1
        shapes: dict[str, tuple[int, ...]] = {
            "input_norm.mean": (in_dim,), "input_norm.std": (in_dim,),
            "target_norm.mean": (out_dim,), "target_norm.std": (out_dim,),
            "support_low": (c.obs_dim,), "support_high": (c.obs_dim,),
        }
        sizes = [in_dim] + [H] * c.num_layers
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"hidden.{i}.weight"], shapes[f"hidden.{i}.bias"] = (E, a, b), (E, 1, b)
        shapes["head.weight"], shapes["head.bias"] = (E, H, 2 * out_dim), (E, 1, 2 * out_dim)
        shapes["max_logvar"] = shapes["min_logvar"] = (E, 1, out_dim)
        th = c.termination_hidden_size
        for i, (a, b) in zip((0, 2, 4), ((c.obs_dim, th), (th, th), (th, 1))):
            shapes[f"termination.{i}.weight"], shapes[f"termination.{i}.bias"] = (b, a), (b,)
        if c.terminal_bonus:
            shapes["terminal_bonus"] = (1,)
        if c.end_rules:
            shapes["end_below"] = shapes["end_above"] = (c.obs_dim,)
        return shapes

    @property
    def num_members(self) -> int:
        return self.head.weight.shape[0]

    # -- serving -------------------------------------------------------------------------
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, D]``: state-space models use the observation as the state."""
        return obs

    def decode(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def action_features(self, action: torch.Tensor) -> torch.Tensor:
        """``[*B]`` indices (Discrete) or ``[*B, A]`` floats (Box) -> ``[*B, A]`` floats."""
        if self.config.discrete_actions:
            return F.one_hot(action.long(), self.config.action_dim).to(self.head.weight.dtype)
        return action.to(self.head.weight.dtype)

    def serving_weights(self, host: bool = False) -> ServingWeights:
        """The weights as the step's math reads them: the module's own tensors, or with ``host``
        numpy views of them (CPU only).

        Outside autograd both are cached (gathering ~30 tensors from the module costs more than a
        small batch's step): they share memory with the parameters, so in-place training shows
        through, until ``.to()`` or ``keep_members`` put new tensors in place. Under autograd the
        tensors are gathered afresh, so that the graph reaches the parameters.
        """
        cacheable = host or not torch.is_grad_enabled()
        if cacheable and self._serving_cache.get(host) is not None:
            return self._serving_cache[host]
        view: Callable[[torch.Tensor], Any] = (lambda t: t.detach().numpy()) if host else (lambda t: t)
        weights = ServingWeights(
            ops=NumpyOps if host else TorchOps,
            config=self.config,
            input_mean=view(self.input_norm.mean), input_std=view(self.input_norm.std),
            target_mean=view(self.target_norm.mean), target_std=view(self.target_norm.std),
            support_low=view(self.support_low), support_high=view(self.support_high),
            dynamics=[(view(layer.weight), view(layer.bias)) for layer in [*self.hidden, self.head]],
            max_logvar=view(self.max_logvar), min_logvar=view(self.min_logvar),
            # nn.Linear keeps [out, in]; the shared math multiplies by [in, out] (a view).
            termination=[(view(self.termination[i].weight).T, view(self.termination[i].bias)) for i in (0, 2, 4)],
            terminal_bonus=None if self.terminal_bonus is None else view(self.terminal_bonus),
            end_below=None if self.end_below is None else view(self.end_below),
            end_above=None if self.end_above is None else view(self.end_above),
            # Under autograd the network always runs: its gradients are what trains it.
            classifier=not cacheable or not self._classifier_switched_off(),
        )
        if cacheable:
            self._serving_cache[host] = weights
        return weights

    def _classifier_switched_off(self) -> bool:
        """True where :func:`_switch_off` left the classifier: every weight zero."""
        return not any(bool(self.termination[i].weight.any()) for i in (0, 2, 4))

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "EnsembleWorldModel":
        # .to()/.cuda()/.double() may put new tensors in place of the ones the cached weights share.
        self._serving_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def _inputs(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Normalised network inputs ``[*B, D + A]``, the state held inside the data's support."""
        return self.serving_weights().inputs(state, action)

    def _members(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[E, B, in]`` normalised inputs -> means and soft-bounded log-variances ``[E, B, T]``."""
        return self.serving_weights().members(h)

    def termination_logit(self, next_state: torch.Tensor) -> torch.Tensor:
        """``[*B, D] -> [*B]`` logit that the episode ends in ``next_state``."""
        return self.serving_weights().termination_logit(next_state)

    @torch.inference_mode()
    def predict(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        members: torch.Tensor | str | None = None,
        uncertainty: bool = False,
    ) -> Prediction:
        """Step ``state [B, D]`` with ``action [B]`` / ``[B, A]`` (see :meth:`WorldModel.predict`).

        ``disagreement [B]`` is the norm of the std between members' predicted Δobs and
        ``model_std [B]`` the largest member's predicted std norm, both in data std units.
        """
        return self.serving_weights().step(state, action, TorchDraws(generator, state.device), temperature, members, uncertainty)

    def predict_host(self, state: np.ndarray, action: np.ndarray, *, generator: np.random.Generator | None = None,
                     temperature: float = 1.0, members: np.ndarray | str | None = None, uncertainty: bool = False) -> Prediction:
        """:meth:`predict` on numpy arrays (float32 ``state [B, D]``), computed by numpy: the same
        math (:class:`ServingWeights`) without torch's per-operation overhead, which dominates a
        step of one dream. Draws come from the numpy ``generator``; the fields are numpy arrays."""
        draws = NumpyDraws(generator if generator is not None else np.random.default_rng())
        return self.serving_weights(host=True).step(state, action, draws, temperature, members, uncertainty)

    # -- fitting -------------------------------------------------------------------------
    def prepare(self, train: Batch, *, keep_normalizers: bool = False) -> frozenset[str]:
        """Normalisers and the support box from the training rows.
        Returns ``{"termination"}`` where it drew that head afresh (see below), else nothing."""
        if not keep_normalizers:
            self.input_norm.fit(torch.cat([train.obs, self.action_features(train.action)], dim=-1))
            targets = self._targets(train)
            ongoing = train.terminated < 0.5
            if self.terminal_bonus is not None and int(ongoing.sum()) >= 2:
                # The reward column's scale from the rows it is learned on: a goal's +100 among
                # rewards of -0.1 would otherwise shrink every ordinary reward difference to noise.
                reward_norm = Normalizer(1)
                reward_norm.fit(targets[ongoing][:, -1:])
                self.target_norm.fit(targets)
                with torch.no_grad():
                    self.target_norm.mean[-1:] = reward_norm.mean
                    self.target_norm.std[-1:] = reward_norm.std
            else:
                self.target_norm.fit(targets)
        seen = torch.cat([train.obs, train.next_obs])
        low, high = seen.min(0).values, seen.max(0).values
        if keep_normalizers:  # a warm start widens the support to the new data
            low, high = torch.minimum(self.support_low, low), torch.maximum(self.support_high, high)
        with torch.no_grad():
            self.support_low.copy_(low)
            self.support_high.copy_(high)
        if not bool(train.terminated.any()):
            # Data with no terminal row: never terminate, and nothing to train.
            _switch_off(self.termination)
        elif self._classifier_switched_off():
            # A warm start from a dream whose data had no ends, meeting its first ones: the head
            # above was zeroed, and zero weights get zero gradients (every hidden unit alike), so it
            # would learn a constant. Fresh weights, drawn on the CPU from the fit's seeded generator.
            self.termination.load_state_dict(termination_head(self.config).state_dict())
            return frozenset({TERMINATION})
        return frozenset()

    def fit_stages(self, train: Batch) -> tuple[str, ...]:
        """The stages worth training on ``train``: termination only if the data has terminal rows."""
        return self.stages if bool(train.terminated.any()) else (DYNAMICS,)

    def _targets(self, batch: Batch) -> torch.Tensor:
        """``[*B, T]``: Δobs and reward."""
        return torch.cat([batch.next_obs - batch.obs, batch.reward.unsqueeze(-1)], dim=-1)

    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        return iter(self._stage_tensors(stage).values())

    def stage_members(self, stage: str) -> int:
        return self.num_members if stage == DYNAMICS else 1

    def loss(self, batch: Batch, stage: str) -> torch.Tensor:
        """Dynamics: ``[E]`` Gaussian NLL per member plus the log-variance bound term
        (``batch`` fields ``[E, b, ...]``). Termination: ``[1]`` class-balanced BCE (fields ``[1, b, ...]``, see :meth:`strata`)."""
        if stage == TERMINATION:
            return self._balanced_bce(batch)
        mean, logvar = self._members(self._inputs(batch.obs, batch.action))
        target = self.target_norm.normalize(self._targets(batch))
        weight = self._target_weight(batch)
        nll = (((mean - target) ** 2 * torch.exp(-logvar) + logvar) * weight).sum(dim=(1, 2)) / weight.sum(dim=(1, 2))
        bound = self.LOGVAR_BOUND_WEIGHT * (self.max_logvar.sum(dim=(1, 2)) - self.min_logvar.sum(dim=(1, 2)))
        return nll + bound

    def strata(self, train: Batch, stage: str) -> list[torch.Tensor] | None:
        """Termination: the terminal rows and the others, half of each minibatch from each. Ends
        are rare (15 flag arrivals in 10,000 MountainCarContinuous rows): drawn uniformly, a
        batch of 256 held one every other update, weighted ~600 times a common row, and the head
        trained on that noise scored the logged arrivals 0.25-0.84 where it should say 1."""
        if stage != TERMINATION:
            return None
        ends = train.terminated > 0.5
        if not bool(ends.any()) or bool(ends.all()):
            return None
        return [torch.nonzero(ends).squeeze(-1), torch.nonzero(~ends).squeeze(-1)]

    def _balanced_bce(self, batch: Batch) -> torch.Tensor:
        """``[1]``: mean BCE over the batch's terminal rows plus mean BCE over the others (a class
        absent from the batch adds 0): both classes count alike however rare ends are."""
        bce = F.binary_cross_entropy_with_logits(self.termination_logit(batch.next_obs), batch.terminated, reduction="none")
        ends = batch.terminated
        per_class = [(bce * w).sum() / w.sum().clamp(min=1.0) for w in (ends, 1.0 - ends)]
        return (per_class[0] + per_class[1]).reshape(1)

    def _target_weight(self, batch: Batch) -> torch.Tensor:
        """``[*B, T]`` weight of each target in the dynamics loss: 1, except the reward of a
        terminal row (0) when that reward is the terminal bonus's to learn."""
        weight = torch.ones(*batch.terminated.shape, self.config.obs_dim + 1, device=batch.terminated.device)
        if self.terminal_bonus is not None:
            weight[..., -1] = 1.0 - batch.terminated
        return weight

    # Share of the worst-predicted holdout rows the dynamics score leaves out (see score()).
    SCORE_TRIM: ClassVar[float] = 0.05

    @torch.no_grad()
    def score(self, holdout: Batch, stage: str) -> torch.Tensor:
        """Dynamics: ``[E]`` holdout MSE of each member's mean (normalised targets) over all but the
        worst-predicted 5% of rows. Termination: ``[1]`` class-balanced BCE.

        The trim is what lets early stopping see the fit improving. On 100,000 random HalfCheetah
        rows the plain MSE rose from 0.087 at 500 updates to 0.27 at 1,750 and was back at 0.089
        only at 5,000, while the median row's error fell all along (0.036 -> 0.007): a few held-out
        episodes visit states the training rows barely do (a flipped body), and at 2,000 updates
        1% of the rows carried 68% of the MSE. A stop judged on them kept a net four times worse on
        typical states. Without the worst 5% the score falls steadily (0.050 -> 0.015); on CartPole
        every variant falls alike. Rows beyond the data are the ensemble's disagreement's job.
        """
        if stage == TERMINATION:
            return self.loss(holdout, stage)
        x = self._inputs(holdout.obs, holdout.action)
        mean, _ = self._members(x.unsqueeze(0).expand(self.num_members, -1, -1))
        weight = self._target_weight(holdout)
        row_error = ((mean - self.target_norm.normalize(self._targets(holdout))) ** 2 * weight).sum(dim=-1) / weight.sum(dim=-1)  # [E, B]
        kept = row_error.shape[1] - int(row_error.shape[1] * self.SCORE_TRIM)
        return torch.topk(row_error, kept, dim=1, largest=False, sorted=False).values.mean(dim=1)

    def _stage_tensors(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's parameters by name; dynamics ones all have the member dimension first."""
        prefix = "termination."
        return {name: p for name, p in self.named_parameters() if name.startswith(prefix) == (stage == TERMINATION)}

    @torch.no_grad()
    def snapshot(self, stage: str, members: torch.Tensor) -> None:
        current = self._stage_tensors(stage)
        saved = self._snapshots.setdefault(stage, {name: p.detach().clone() for name, p in current.items()})
        if stage == TERMINATION:
            if bool(members.any()):
                for name, p in current.items():
                    saved[name].copy_(p)
            return
        index = members.nonzero().squeeze(-1).to(self.head.weight.device)
        for name, p in current.items():
            saved[name][index] = p[index]

    @torch.no_grad()
    def restore(self, stage: str) -> None:
        saved = self._snapshots.pop(stage, None)
        if saved is None:
            return
        for name, p in self._stage_tensors(stage).items():
            p.copy_(saved[name])

    @torch.no_grad()
    def finish_stage(self, stage: str, logged: Sequence[Batch]) -> None:
        """Termination: move the classifier's decision threshold to where it ends as many logged
        episodes as it should (the best F1 on ``logged``), folded into the last bias.

        The class-balanced loss learns where ends are, from a handful of terminal rows, but its
        0.5 threshold sits on the cautious side: on 1,000 random CartPole rows it ended episodes
        at |angle| ~0.14 where CartPole ends at 0.21, in 8% of a balancing agent's states.

        The end rules are found first (:func:`end_rules`).

        Then the terminal bonus: the logged ends' mean reward beyond the dynamics' reward for them
        (MountainCarContinuous's +100 at the flag; 0 where an end pays like any other step).
        """
        terminated = torch.cat([batch.terminated for batch in logged])
        if stage != TERMINATION or not bool(terminated.any()):
            return
        self._serving_cache.clear()
        if self.end_below is not None:
            ends = terminated > 0.5
            next_obs = torch.cat([batch.next_obs for batch in logged])
            below, above = end_rules(next_obs, ends)
            self.end_below.copy_(below)
            self.end_above.copy_(above)
            if bool(rule_holds(next_obs[ends], below, above).all()):
                # Every logged end is the rules': the classifier, cut to end no more rows than they do,
                # would never fire. Switched off, as for data without ends, and skipped at each step.
                _switch_off(self.termination)
        if self.serving_weights().classifier:
            self._cut_at_best_f1(logged, terminated > 0.5)
        if self.terminal_bonus is not None:
            # The logged ends' mean reward beyond what the dynamics' reward head (the bonus at 0) says of them.
            self.terminal_bonus.zero_()
            ends = [batch.index(torch.nonzero(batch.terminated > 0.5).squeeze(-1)) for batch in logged]
            residual = torch.cat([b.reward - self.predict(b.obs, b.action, temperature=0.0, members="mean").reward
                                  for b in ends if len(b)])
            self.terminal_bonus.copy_(residual.mean().reshape(1))

    @torch.no_grad()
    def declare_end_limits(self, limits: Sequence[tuple[int, str, float]]) -> None:
        """Tighten the end rules with ``(feature, "<" or ">", value)`` limits the user declared:
        an episode ends where the feature is below (``"<"``) or above (``">"``) the value."""
        if self.end_below is None or self.end_above is None:
            raise ValueError("this model was built without end rules (EnsembleConfig.end_rules=False)")
        for feature, side, value in limits:
            if side == "<":
                self.end_below[feature] = max(float(self.end_below[feature]), value)
            else:
                self.end_above[feature] = min(float(self.end_above[feature]), value)
        self._serving_cache.clear()

    def _cut_at_best_f1(self, logged: Sequence[Batch], ends: torch.Tensor) -> None:
        """Shift the classifier's last bias so that it ends the logged rows (``ends [N]``) at its best F1.

        The rules' ends count as predicted ends (true on every logged row, their logits raised by
        RULED_END_LOGIT), so the cut is placed for the ends they leave to the classifier."""
        logits = torch.cat([self.termination_logit(chunk) for batch in logged for chunk in batch.next_obs.split(65_536)])
        order = torch.argsort(logits, descending=True)
        ranked, truth = logits[order], ends[order]
        true_positives = torch.cumsum(truth.float(), 0)
        predicted = torch.arange(1, len(ranked) + 1, device=ranked.device, dtype=torch.float32)
        f1 = 2 * true_positives / (predicted + truth.sum())
        k = int(torch.argmax(f1))  # predict an end for the k + 1 highest logits
        cut = ranked[k] if k + 1 == len(ranked) else (ranked[k] + ranked[k + 1]) / 2
        self.termination[-1].bias.sub_(cut)
        self._serving_cache.clear()

    def keep_members(self, index: torch.Tensor) -> None:
        """Drop every member not in ``index [K]`` (e.g. keep the elites) in place."""
        with torch.no_grad():
            for module in [*self.hidden, self.head]:
                module.weight = nn.Parameter(module.weight[index].clone())
                module.bias = nn.Parameter(module.bias[index].clone())
            self.max_logvar = nn.Parameter(self.max_logvar[index].clone())
            self.min_logvar = nn.Parameter(self.min_logvar[index].clone())
        self.config.ensemble_size = int(len(index))
        self._snapshots.pop(DYNAMICS, None)
        self._serving_cache.clear()  # its tensors were the replaced ones


def end_rules(next_obs: torch.Tensor, terminated: torch.Tensor, min_share: float = 0.02,
              min_rows: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature end rules from logged next observations ``[N, D]`` and their ``terminated [N]`` (bool).

    Returns ``end_below, end_above [D]``: an episode ends where feature d is below ``end_below[d]``
    or above ``end_above[d]``; ``-RULE_OFF``/``RULE_OFF`` where no rule stands.

    Gymnasium's envs end episodes by per-feature limits (Hopper below a height of 0.7 or past an
    angle of 0.2, CartPole past 12 degrees), and a classifier learns such a limit only where the
    logs show ends, never beyond: on a medium Hopper dataset, whose 159 ends were all falls below
    the height limit, the head gave 0.000 to an agent sinking slowly to 0.694. A rule here is "beyond
    every non-terminal row's value of one feature": true of every logged row by construction, it
    carries the ends the logs show past them. Rules are taken greedily, the one that explains the
    most ends first, each kept only if it explains ``min_share`` of the ends (and ``min_rows``)
    that no kept rule explains: the ends' other extremes (a fall's downward speed, beyond any
    ongoing row's in 9 of those 159) explain nothing the height rule has not.
    """
    ongoing, ends = next_obs[~terminated], next_obs[terminated]
    below = torch.full((next_obs.shape[1],), -RULE_OFF, dtype=next_obs.dtype, device=next_obs.device)
    above = torch.full_like(below, RULE_OFF)
    if len(ongoing) == 0 or len(ends) == 0:
        return below, above
    low, high = ongoing.min(0).values, ongoing.max(0).values
    # [2, n_ends, D]: which ends each candidate rule (feature below its low, feature above its high) explains.
    explains = torch.stack([ends < low, ends > high])
    unexplained = torch.ones(len(ends), dtype=torch.bool, device=ends.device)
    needed = max(min_rows, int(np.ceil(min_share * len(ends))))
    while True:
        counts = (explains & unexplained[None, :, None]).sum(1)  # [2, D]
        best = int(torch.argmax(counts))
        side, feature = divmod(best, counts.shape[1])
        if int(counts[side, feature]) < needed:
            return below, above
        if side == 0:
            below[feature] = low[feature]
        else:
            above[feature] = high[feature]
        unexplained &= ~explains[side, :, feature]


@torch.no_grad()
def _switch_off(head: nn.Sequential) -> None:
    """The classifier never ends an episode: zero weights and a large negative bias."""
    for p in head.parameters():
        p.zero_()
    head[-1].bias.fill_(-20.0)


def termination_head(c: EnsembleConfig) -> nn.Sequential:
    """The termination classifier, freshly initialised: next observation ``[*B, D] -> [*B, 1]`` logit."""
    return nn.Sequential(
        nn.Linear(c.obs_dim, c.termination_hidden_size),
        nn.SiLU(),
        nn.Linear(c.termination_hidden_size, c.termination_hidden_size),
        nn.SiLU(),
        nn.Linear(c.termination_hidden_size, 1),
    )


def default_model_config(rows: int) -> EnsembleConfig:
    """The ensemble's sizes for ``rows`` training transitions: PETS/MBPO's 7 members x 4 layers
    x 200 units from 20,000 rows, 7 x 3 x 128 below. On a few thousand CartPole rows the smaller
    net fits the holdout better in a third of the time per update (benchmarks/fit_speed.py), and
    a single dream steps three times faster."""
    if rows >= 20_000:
        return EnsembleConfig(hidden_size=200, num_layers=4)
    return EnsembleConfig(hidden_size=128, num_layers=3)
