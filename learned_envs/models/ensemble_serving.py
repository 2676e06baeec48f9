"""The ensemble's step, written once against :mod:`learned_envs.models.array_ops`: torch for
batches on any device (and for fitting, under autograd), numpy for a single dream on the CPU.

Shapes: B = batch, E = members, D = flat observation size, A = action features (one-hot width
for Discrete, flat size for Box), T = D + 1 targets ``[Δobs, reward]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from learned_envs.models.array_ops import Draws, TorchOps
from learned_envs.models.base import Prediction

if TYPE_CHECKING:
    from learned_envs.models.ensemble import EnsembleConfig


# An end rule's place when no rule stands: no float32 feature passes it (float32's largest value).
RULE_OFF = 3.4028234663852886e38
# Added to the classifier's logit where an end rule holds: an end beyond doubt (sigmoid = 1 in float32).
RULED_END_LOGIT = 1000.0


def bound_logvar(logvar: Any, max_logvar: Any, min_logvar: Any, ops: type = TorchOps) -> Any:
    """Soft bounds (PETS): smooth everywhere, so the NLL cannot push the variance to 0 or infinity."""
    logvar = max_logvar - ops.softplus(max_logvar - logvar)
    return min_logvar + ops.softplus(logvar - min_logvar)


def rule_holds(state: Any, below: Any, above: Any) -> Any:
    """``[*B, D] -> [*B]`` bool: some feature of ``state`` lies below ``below [D]`` or above
    ``above [D]`` (an end rule holds; see EnsembleWorldModel's end_rules)."""
    return ((state < below) | (state > above)).any(-1)


def mlp(h: Any, layers: Sequence[tuple[Any, Any]], ops: type) -> Any:
    """``h [..., in]`` through ``(weight [..., in, out], bias)`` layers, SiLU between them (not after the last)."""
    *hidden, last = layers
    for weight, bias in hidden:
        h = ops.silu(ops.affine(h, weight, bias))
    return ops.dense(ops.affine(h, *last))


@dataclass
class ServingWeights:
    """The arrays one model step reads, all torch tensors or all numpy views of them; the step's
    math is written once here, against ``ops``, and runs on either.

    Shapes: E members, D observation size, A action features, T = D + 1 targets.
    """

    ops: type  # TorchOps or NumpyOps
    config: EnsembleConfig
    input_mean: Any  # [D + A]
    input_std: Any  # [D + A]
    target_mean: Any  # [T]
    target_std: Any  # [T]
    support_low: Any  # [D]
    support_high: Any  # [D]
    dynamics: list[tuple[Any, Any]]  # hidden layers then head: (weight [E, in, out], bias [E, 1, out])
    max_logvar: Any  # [E, 1, T]
    min_logvar: Any  # [E, 1, T]
    termination: list[tuple[Any, Any]]  # (weight [in, out], bias [out])
    terminal_bonus: Any = None  # [1], added to the reward where the termination head ends the episode; None: no bonus
    end_below: Any = None  # [D] the end rules (EnsembleWorldModel's end_rules); None: no rules
    end_above: Any = None  # [D]
    # False where the classifier's weights are all zero (data without ends, or ends the rules all
    # explain): its logit is then its last bias for every state, and the step skips the network.
    classifier: bool = True
    # The observation part of the input normaliser ([D] views, sharing memory like the rest): sliced
    # once here, not twice a step.
    obs_mean: Any = field(init=False)
    obs_std: Any = field(init=False)
    _views: dict[int, tuple[list[tuple[Any, Any]], Any, Any]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        d = self.config.obs_dim
        self.obs_mean, self.obs_std = self.input_mean[:d], self.input_std[:d]
        if self.end_below is not None and not bool((self.end_below > -RULE_OFF).any() or (self.end_above < RULE_OFF).any()):
            # No rule stands (data without ends, or none found): the step skips the comparisons.
            # The model drops its cached weights whenever it sets rules, so this cannot go stale.
            self.end_below = self.end_above = None
        if not self.classifier:
            # Read once (no device sync a step), and its probability as float32's sigmoid gives it.
            bias = self.termination[-1][1][:1]
            self._classifier_bias = float(bias[0])
            self._classifier_prob = float(self.ops.sigmoid(bias)[0])

    def inside(self, state: Any) -> Any:
        """``state [*B, D]`` moved to the nearest point of the training data's box: beyond its data
        the model answers as at the data's edge rather than extrapolating a trend it never saw."""
        return self.ops.clip(state, self.support_low, self.support_high)

    def inputs(self, state: Any, action: Any) -> Any:
        """Normalised network inputs ``[*B, D + A]`` from ``state [*B, D]`` and ``action`` (``[*B]``
        indices for Discrete, ``[*B, A]`` for Box)."""
        c, ops = self.config, self.ops
        features = ops.one_hot(action, c.action_dim, self.input_mean) if c.discrete_actions else ops.as_dtype(action, self.input_mean)
        return (ops.cat([self.inside(state), features]) - self.input_mean) / self.input_std

    def members(self, h: Any, member: int | None = None) -> tuple[Any, Any]:
        """``[E, B, in]`` (or ``[1, B, in]``, broadcast) normalised inputs -> means and soft-bounded
        log-variances ``[E, B, T]``; with ``member``, ``[B, in] -> [B, T]`` through that member alone
        (its weights are views, so a single dream's step is a chain of plain matrix products)."""
        if member is None:
            layers, max_logvar, min_logvar = self.dynamics, self.max_logvar, self.min_logvar
        else:
            layers, max_logvar, min_logvar = self._member_views(member)
        mean, raw_logvar = self.ops.split(mlp(h, layers, self.ops))
        return mean, bound_logvar(raw_logvar, max_logvar, min_logvar, self.ops)

    def _member_views(self, member: int) -> tuple[list[tuple[Any, Any]], Any, Any]:
        """Member ``member``'s layers and log-variance bounds, as views taken once: slicing ~10
        arrays a step cost a tenth of a single dream's step. Views share memory with the weights,
        so they stay current under in-place training, like the rest of these arrays."""
        views = self._views.get(member)
        if views is None:
            views = ([(w[member], b[member]) for w, b in self.dynamics], self.max_logvar[member], self.min_logvar[member])
            self._views[member] = views
        return views

    def termination_logit(self, next_state: Any) -> Any:
        """``[*B, D] -> [*B]`` logit that the episode ends in ``next_state``."""
        if self.classifier:
            obs_norm = (self.inside(next_state) - self.obs_mean) / self.obs_std
            logit = mlp(obs_norm, self.termination, self.ops)[..., 0]
        else:
            logit = self.ops.full_rows(next_state, self._classifier_bias)
        if self.end_below is None:
            return logit
        return logit + RULED_END_LOGIT * self.ops.as_dtype(self._ruled(next_state), logit)

    def _ruled(self, next_state: Any) -> Any:
        """``[*B, D] -> [*B]`` bool: an end rule holds. The rules read the state itself, not the
        classifier's clipped one: they hold beyond the data."""
        return rule_holds(next_state, self.end_below, self.end_above)

    def termination_prob(self, next_state: Any) -> Any:
        """``[*B, D] -> [*B]``: ``sigmoid(termination_logit)``. With the classifier off that is its
        bias's probability (everywhere, for data without ends), or 1 where a rule holds (as the sigmoid of the ruled logit rounds): a
        selection instead of a dozen operations on a single dream's step of a few microseconds each."""
        if self.classifier:
            return self.ops.sigmoid(self.termination_logit(next_state))
        if self.end_below is None:  # data without ends: a constant
            return self.ops.full_rows(next_state, self._classifier_prob)
        return self.ops.select(self._ruled(next_state), 1.0, self._classifier_prob, like=next_state)

    def one_member_per_row(self, x: Any, draws: Draws) -> tuple[Any, Any]:
        """Mean and log-variance ``[B, T]`` with each of the B rows sent through one random member.

        The rows land in random slots of an ``[E, k]`` grid (k = ceil(B / E)), one slice per
        member, so every row's member is uniform and the forward costs k rows per member.
        """
        batch, E = x.shape[0], self.max_logvar.shape[0]
        if batch == 1:
            return self.members(x, member=draws.integer(E))
        k = -(-batch // E)
        slots = draws.permutation(E * k)[:batch]
        grid = self.ops.zeros(E * k, x.shape[1], like=x)
        grid[slots] = x
        mean, logvar = self.members(grid.reshape(E, k, -1))
        return self.ops.take_rows(mean.reshape(E * k, -1), slots), self.ops.take_rows(logvar.reshape(E * k, -1), slots)

    def step(self, state: Any, action: Any, draws: Draws, temperature: float, members: Any, uncertainty: bool) -> Prediction:
        """One model step of ``state [B, D]`` (see :meth:`EnsembleWorldModel.predict`)."""
        ops, d = self.ops, self.config.obs_dim
        x = self.inputs(state, action)
        if members is None and not uncertainty:
            mean, logvar = self.one_member_per_row(x, draws)
            disagreement = model_std = None
        else:
            all_mean, all_logvar = self.members(x[None])
            norm = lambda v: ops.sqrt((v * v).sum(-1))  # noqa: E731
            disagreement = norm(ops.std0(all_mean[:, :, :d]))
            model_std = ops.amax0(norm(ops.exp(0.5 * all_logvar[:, :, :d])))
            if isinstance(members, str):
                if members == "all":
                    mean, logvar = all_mean, all_logvar
                elif members == "mean":
                    mean, logvar = all_mean.mean(0), ops.log(ops.exp(all_logvar).mean(0))
                else:
                    raise ValueError(f"members must be a tensor, None, 'mean' or 'all', not {members!r}")
            else:
                if members is None:
                    members = draws.integers(self.max_logvar.shape[0], state.shape[0])
                rows = draws.arange(state.shape[0])
                mean, logvar = all_mean[members, rows], all_logvar[members, rows]
        if temperature > 0:
            # mean + (temperature * std) * noise; at temperature 1 that product is std itself (exactly),
            # so the pass that would multiply by 1 is skipped.
            scale = ops.exp(0.5 * logvar)
            if temperature != 1:
                scale = temperature * scale
            mean = mean + scale * draws.normal(mean)
        target = mean * self.target_std + self.target_mean  # [B, T], or [E, B, T] for members="all"
        next_state = state + target[..., :d]
        reward, termination_prob = target[..., d], self.termination_prob(next_state)
        if self.terminal_bonus is not None:
            reward = ops.where(termination_prob > 0.5, reward + self.terminal_bonus, reward)
        return Prediction(
            next_state=next_state,
            reward=reward,
            termination_prob=termination_prob,
            disagreement=disagreement,
            model_std=model_std,
        )
