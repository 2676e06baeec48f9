"""Start an SB3 off-policy agent from the logged behaviour: clone it, then hold the clone while the critic learns.

MOReL starts its policy as a behaviour-cloned copy of the logged one. On good (medium) data that
start is worth most of the score: an agent that begins at the behaviour policy only has to
improve on it inside the part of the dream the data covers, where one that begins at random has
to find a gait through the dream's least trusted states first. A cloned actor released at once
to a critic that knows nothing is pulled off its start by that critic's noise within a few
hundred updates, so the actor is held (its parameters take no gradient) for the first
``hold_steps`` environment steps, while the critic learns the clone's values; then SAC (or TD3,
DDPG) trains as usual. A callback, so SB3's agents stay unchanged::

    from learned_envs.behaviour_start import BehaviourStart
    model = SAC("MlpPolicy", dream_venv)
    model.learn(600_000, callback=BehaviourStart(transitions, clone_steps=20_000, hold_steps=50_000))

The clone fits the actor's deterministic action (SAC: ``tanh`` of its Gaussian's mean; TD3 and
DDPG: its output) to the logged actions in the agent's ``[-1, 1]`` action scale, by mean squared
error (SAC's before its ``tanh``). SAC's spread is set apart from the mean: the logged actions' standard deviation around
the clone, per action feature, raised where needed so that the clone's entropy meets SAC's
target (a deterministic behaviour policy leaves almost no spread; see ``_fit_spread``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
from tqdm.auto import tqdm

from learned_envs.data.transitions import Transitions

ACTION_LIMIT = 0.99  # the clone's targets, in the agent's [-1, 1] action scale
MAX_ROW_WEIGHT = 100.0  # the largest advantage weight of a logged row (IQL's and AWAC's clip)


class BehaviourStart(BaseCallback):
    """Clone ``logged``'s actions into the agent's actor before training, then hold the actor.

    Args:
        logged: the logged transitions (a Box action space matching the agent's).
        clone_steps: gradient steps of the clone (Adam, ``batch_size`` rows each, drawn with ``seed``).
        hold_steps: environment steps for which the actor takes no gradient (its critic learns the
            clone's values meanwhile); 0 releases it at once.
        batch_size, learning_rate: the clone's minibatch size and Adam step size.
        min_std: SAC only: the least standard deviation (pre-``tanh``) the cloned Gaussian keeps
            (with ``ent_coef="auto"``, the entropy target may raise it further).
        anchor: after the hold, keep the actor near the behaviour as TD3+BC does: each vector
            step it also takes one step of the clone's loss weighted ``gradient_steps x mean|Q| /
            anchor`` (Q the agent's critic at the actor's actions on logged states; TD3+BC's
            alpha, 2.5 there); 0 (the default) lets it go.
        anchor_beta: with ``anchor``, weight each logged row's pull by ``exp(anchor_beta x A)``
            (at most ``MAX_ROW_WEIGHT``), ``A = Q(s, a_logged) - Q(s, actor(s))`` by the agent's
            smaller critic: the advantage-weighted imitation of AWAC and IQL's actor, so the actor is
            held to the logged actions its critic rates above its own and let go of the others
            (IQL's 3.0 on hopper); 0 (the default) pulls every row alike, as TD3+BC. The weights
            are divided by their batch mean: ``anchor`` alone sets the pull's size, and
            ``anchor_beta`` only shares it out among the rows (unnormalised, the pull also grew as
            the critic came to rate the logged actions higher, which on Hopper medium left the
            seeds' last policies far apart; see the README's stop-37 note).
        actor_every: after the hold, the actor learns (SAC's steps and the anchor's) on one vector step
            in ``actor_every``, the critic on every one: TD3's delayed policy updates, so that the critic
            tracks the actor it values (1, the default: every step).
        seed: seed of the generator drawing the clone's minibatches.
        progress: show a progress bar over the clone's steps.

    ``clone_loss`` holds the clone's mean squared error at its first and last step (SAC's before ``tanh``).
    """

    def __init__(self, logged: Transitions, clone_steps: int = 20_000, hold_steps: int = 50_000, batch_size: int = 256,
                 learning_rate: float = 1e-3, min_std: float = 0.1, anchor: float = 0.0, anchor_beta: float = 0.0,
                 actor_every: int = 1, seed: int = 0, progress: bool = True):
        super().__init__()
        if (clone_steps < 1 or hold_steps < 0 or batch_size < 1 or not learning_rate > 0 or not min_std > 0
                or not anchor >= 0 or not anchor_beta >= 0 or actor_every < 1):
            raise ValueError(f"BehaviourStart needs clone_steps >= 1, hold_steps >= 0, batch_size >= 1, positive learning_rate "
                             f"and min_std, anchor >= 0, anchor_beta >= 0 and actor_every >= 1; got {clone_steps}, {hold_steps}, "
                             f"{batch_size}, {learning_rate}, {min_std}, {anchor}, {anchor_beta}, {actor_every}")
        if anchor_beta > 0 and anchor == 0:
            raise ValueError("anchor_beta weights the anchor's pull: give an anchor too")
        if not isinstance(logged.action_space, spaces.Box):
            raise ValueError(f"behaviour cloning here needs a Box action space, not {logged.action_space}")
        if len(logged) == 0:
            raise ValueError("logged holds no transitions to clone")
        self.logged, self.clone_steps, self.hold_steps = logged, clone_steps, hold_steps
        self.batch_size, self.learning_rate, self.min_std, self.anchor = batch_size, learning_rate, min_std, anchor
        self.anchor_beta, self.actor_every = anchor_beta, int(actor_every)
        self.row_weights: tuple[float, float] | None = None  # the last anchor step's mean and largest row weight, undivided
        self.rng, self.progress = np.random.default_rng(seed), progress
        self.clone_loss: tuple[float, float] | None = None
        self.held = False

    def _on_training_start(self) -> None:
        policy = self.model.policy
        if not hasattr(policy, "actor"):
            raise ValueError(f"BehaviourStart clones into an actor; {type(self.model).__name__} has none (SAC, TD3 or DDPG)")
        for name in ("observation", "action"):
            logged, agent = getattr(self.logged, f"{name}_space"), getattr(policy, f"{name}_space")
            if logged.shape != agent.shape:
                raise ValueError(f"the logged data's {name} space {logged} does not match the agent's {agent}")
        obs = torch.as_tensor(self.logged.observations.reshape(len(self.logged), -1), dtype=torch.float32)
        actions = torch.as_tensor(policy.scale_action(np.asarray(self.logged.actions, dtype=np.float32)), dtype=torch.float32)
        # Targets 1% inside the bounds: a saturated behaviour (bang-bang actions, common in
        # locomotion) would otherwise drive SAC's pre-tanh means without bound, where no spread
        # can give the clone the entropy SAC tunes towards.
        actions = actions.reshape(len(self.logged), -1).clamp(-ACTION_LIMIT, ACTION_LIMIT)
        self._sac = hasattr(policy.actor, "get_action_dist_params")
        self._obs, self._actions = obs, actions  # [N, D], [N, A] in the agent's scale
        self._targets = torch.atanh(actions) if self._sac else actions
        self._clone(policy.actor)
        if self._sac and not policy.actor.use_sde:
            self._fit_spread(policy.actor, obs, actions)
        if getattr(policy, "actor_target", None) is not None:  # TD3 and DDPG
            policy.actor_target.load_state_dict(policy.actor.state_dict())
        self._hold(self.hold_steps > 0)

    def _clone(self, actor: torch.nn.Module) -> None:
        """Fit ``actor``'s deterministic action to the logged actions (``clone_steps`` Adam steps).

        SAC's pre-``tanh`` mean is fitted to ``atanh`` of the actions: a squared error taken after
        the ``tanh`` has no gradient once a mean overshoots into saturation, where it then stays.
        """
        mean_params = [p for name, p in actor.named_parameters() if not name.startswith("log_std")]
        optimizer = torch.optim.Adam(mean_params, lr=self.learning_rate)
        losses = []
        for step in tqdm(range(self.clone_steps), desc="clone the behaviour", unit="update", disable=not self.progress):
            loss, _, _ = self._clone_loss(actor)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in (0, self.clone_steps - 1):
                losses.append(loss.item())
        self.clone_loss = (losses[0], losses[-1])

    def _clone_loss(self, actor: torch.nn.Module, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The clone's mean squared error on ``batch_size`` logged rows (``per_row``: each row's ``[B]``),
        those rows' observations ``[B, D]`` and logged actions ``[B, A]`` (the agent's scale)."""
        rows = torch.as_tensor(self.rng.integers(len(self._obs), size=self.batch_size))
        device = next(actor.parameters()).device
        obs, targets = self._obs[rows].to(device), self._targets[rows].to(device)
        predicted = actor.get_action_dist_params(obs)[0] if self._sac else actor(obs)
        loss = (predicted - targets).pow(2).mean(-1) if per_row else F.mse_loss(predicted, targets)
        return loss, obs, self._actions[rows].to(device)

    def _fit_spread(self, actor: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> None:
        """Set SAC's log-std head to the logged actions' spread around the clone, per action feature,
        raised where needed to SAC's entropy target (auto entropy) or else to ``min_std``.

        A deterministic behaviour leaves almost no spread, and a clone of no spread sits far below
        SAC's target entropy: its tuned coefficient would then grow all through the hold and,
        once the actor is released, push it off the clone towards randomness. Raising every
        feature's log-std to at least one common level, the lowest at which the clone's entropy
        on the logged states meets the target, starts the coefficient where SAC wants it (a
        behaviour saturated at its bounds may allow no such level: then the level of most entropy).
        """
        device = next(actor.parameters()).device
        with torch.no_grad():
            sample = torch.as_tensor(self.rng.choice(len(obs), size=min(len(obs), 20_000), replace=False))
            mean = actor.get_action_dist_params(obs[sample].to(device))[0]  # [S, A] pre-tanh
            log_spread = (actions[sample].to(device) - torch.tanh(mean)).std(0).clamp(min=self.min_std).log()  # [A]
            target = self.target_entropy()
            if target is not None and squashed_entropy(mean, log_spread, noise := self._noise(mean)) < target:
                # The squashed Gaussian's entropy is not monotone in its spread (a wide one piles
                # up at the bounds), so a grid, not a bisection: the lowest level that meets the
                # target, else the level of most entropy.
                levels = torch.arange(float(LOG_STD_MIN) / 4, float(LOG_STD_MAX) + 1e-6, 0.05).tolist()
                entropies = [squashed_entropy(mean, log_spread.clamp(min=level), noise) for level in levels]
                meeting = [level for level, entropy in zip(levels, entropies) if entropy >= target]
                log_spread = log_spread.clamp(min=meeting[0] if meeting else levels[int(np.argmax(entropies))])
            # The head is linear in the latent: zero weights and the log-spread as bias give that
            # spread in every state, which SAC's updates then shape.
            actor.log_std.weight.zero_()
            actor.log_std.bias.copy_(log_spread)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws shaped like ``like``, from the callback's seeded generator."""
        return torch.as_tensor(self.rng.standard_normal(tuple(like.shape)), dtype=like.dtype, device=like.device)

    def target_entropy(self) -> float | None:
        """SAC's entropy target where it tunes its coefficient (``ent_coef="auto"``), else ``None``."""
        if getattr(self.model, "log_ent_coef", None) is None:
            return None
        return float(self.model.target_entropy)

    def _hold(self, held: bool) -> None:
        self.model.policy.actor.requires_grad_(not held)
        self.held = held

    def _on_step(self) -> bool:
        # SB3 calls this after each vector step, before the updates that follow it.
        if self.num_timesteps >= self.hold_steps and (self.held or self.actor_every > 1):
            self._hold(self.n_calls % self.actor_every != 0)
        if self.anchor > 0 and not self.held and self.num_timesteps >= self.model.learning_starts:
            self._anchor_step()
        return True

    def _anchor_step(self) -> None:
        """One step of the clone's loss on the actor, with the actor's own optimizer, weighted as
        TD3+BC weighs it against the critic's values (and for the ``gradient_steps`` critic-driven
        updates each vector step makes)."""
        actor, critic = self.model.actor, self.model.critic
        weighted = self.anchor_beta > 0
        loss, obs, logged = self._clone_loss(actor, per_row=weighted)
        with torch.no_grad():
            acting = actor(obs, deterministic=True) if self._sac else actor(obs)
            q_acting = torch.cat(critic(obs, acting), dim=1)  # [B, critics]
            q_scale = q_acting.abs().mean()
            if weighted:
                advantage = torch.cat(critic(obs, logged), dim=1).min(1).values - q_acting.min(1).values  # [B]
                rows = torch.exp(self.anchor_beta * advantage).clamp(max=MAX_ROW_WEIGHT)
                mean = rows.mean()
                self.row_weights = (float(mean), float(rows.max()))
                rows = rows / mean.clamp(min=1e-8)
        if weighted:
            loss = (rows * loss).mean()
        weight = max(self.model.gradient_steps, 1) * float(q_scale) / self.anchor
        actor.optimizer.zero_grad()
        (weight * loss).backward()
        actor.optimizer.step()


def squashed_entropy(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> float:
    """Monte-Carlo entropy of SB3's squashed Gaussian policy: ``-E[log pi(a|s)]`` over the rows
    of ``mean [S, A]`` (pre-``tanh``) with ``log_std [A]``, using the standard normal draws
    ``noise [S, A]`` (SB3's ``tanh`` correction, epsilon included)."""
    z = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_prob = log_prob - torch.log(1 - torch.tanh(z).pow(2) + 1e-6).sum(-1)
    return float(-log_prob.mean())
