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
DDPG: its output) to the logged actions by mean squared error in the agent's ``[-1, 1]`` action
scale. SAC's spread is set apart from the mean: the logged actions' standard deviation around
the clone, per action feature, floored at ``min_std`` (a deterministic behaviour policy leaves
none, and a Gaussian of no spread has no entropy for SAC to tune).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from learned_envs.data.transitions import Transitions


class BehaviourStart(BaseCallback):
    """Clone ``logged``'s actions into the agent's actor before training, then hold the actor.

    Args:
        logged: the logged transitions (a Box action space matching the agent's).
        clone_steps: gradient steps of the clone (Adam, ``batch_size`` rows each, drawn with ``seed``).
        hold_steps: environment steps for which the actor takes no gradient (its critic learns the
            clone's values meanwhile); 0 releases it at once.
        batch_size, learning_rate: the clone's minibatch size and Adam step size.
        min_std: SAC only: the least standard deviation (pre-``tanh``) the cloned Gaussian keeps.
        seed: seed of the generator drawing the clone's minibatches.
        progress: show a progress bar over the clone's steps.

    ``clone_loss`` holds the clone's mean squared error at its first and last step.
    """

    def __init__(self, logged: Transitions, clone_steps: int = 20_000, hold_steps: int = 50_000, batch_size: int = 256,
                 learning_rate: float = 1e-3, min_std: float = 0.1, seed: int = 0, progress: bool = True):
        super().__init__()
        if clone_steps < 1 or hold_steps < 0 or batch_size < 1 or not learning_rate > 0 or not min_std > 0:
            raise ValueError(f"BehaviourStart needs clone_steps >= 1, hold_steps >= 0, batch_size >= 1 and positive "
                             f"learning_rate and min_std; got {clone_steps}, {hold_steps}, {batch_size}, {learning_rate}, {min_std}")
        if not isinstance(logged.action_space, spaces.Box):
            raise ValueError(f"behaviour cloning here needs a Box action space, not {logged.action_space}")
        if len(logged) == 0:
            raise ValueError("logged holds no transitions to clone")
        self.logged, self.clone_steps, self.hold_steps = logged, clone_steps, hold_steps
        self.batch_size, self.learning_rate, self.min_std = batch_size, learning_rate, min_std
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
        self._clone(policy.actor, obs, actions.reshape(len(self.logged), -1).clamp(-1.0, 1.0))
        if getattr(policy, "actor_target", None) is not None:  # TD3 and DDPG
            policy.actor_target.load_state_dict(policy.actor.state_dict())
        self._hold(self.hold_steps > 0)

    def _clone(self, actor: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> None:
        """Fit ``actor``'s deterministic action to ``actions [N, A]`` given ``obs [N, D]``; SAC's spread after."""
        sac = hasattr(actor, "get_action_dist_params")
        device = next(actor.parameters()).device
        mean_params = [p for name, p in actor.named_parameters() if not name.startswith("log_std")]
        optimizer = torch.optim.Adam(mean_params, lr=self.learning_rate)
        losses = []
        for step in tqdm(range(self.clone_steps), desc="clone the behaviour", unit="update", disable=not self.progress):
            rows = torch.as_tensor(self.rng.integers(len(obs), size=self.batch_size))
            batch_obs, batch_actions = obs[rows].to(device), actions[rows].to(device)
            predicted = torch.tanh(actor.get_action_dist_params(batch_obs)[0]) if sac else actor(batch_obs)
            loss = F.mse_loss(predicted, batch_actions)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in (0, self.clone_steps - 1):
                losses.append(loss.item())
        self.clone_loss = (losses[0], losses[-1])
        if sac and not actor.use_sde:
            self._fit_spread(actor, obs, actions, device)

    def _fit_spread(self, actor: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor, device: torch.device) -> None:
        """Set SAC's log-std head to the logged actions' spread around the clone (floored at ``min_std``)."""
        with torch.no_grad():
            sample = torch.as_tensor(self.rng.choice(len(obs), size=min(len(obs), 100_000), replace=False))
            predicted = torch.tanh(actor.get_action_dist_params(obs[sample].to(device))[0])
            spread = (actions[sample].to(device) - predicted).std(0).clamp(min=self.min_std)
            # The head is linear in the latent: zero weights and the log-spread as bias give that
            # spread in every state, which SAC's updates then shape.
            actor.log_std.weight.zero_()
            actor.log_std.bias.copy_(spread.log())

    def _hold(self, held: bool) -> None:
        self.model.policy.actor.requires_grad_(not held)
        self.held = held

    def _on_step(self) -> bool:
        if self.held and self.num_timesteps >= self.hold_steps:
            self._hold(False)
        return True
