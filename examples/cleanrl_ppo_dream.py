"""PPO in one file, CleanRL style, trained only in a dream and scored in the real env.

    python examples/cleanrl_ppo_dream.py                       # Dream-CartPole-v0 -> CartPole-v1
    python examples/cleanrl_ppo_dream.py --temperature 0.5 --total-steps 150000

Read it top to bottom: the dream is ``gym.make_vec("Dream-CartPole-v0", num_envs=8)``, one
batched world model stepping all eight envs in one forward call, with no Python loop over envs.
The loop is CleanRL's ``ppo.py`` (rollout, GAE, clipped surrogate over minibatches), with
rl-baselines3-zoo's CartPole hyperparameters (short rollouts, many epochs, a decaying learning
rate). Nothing in it knows it is talking to a dream; at the end the same policy acts greedily in
the real env.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

import learned_envs  # noqa: F401  (registers the dreams)
from learned_envs.checkpoint import read_metadata
from learned_envs.training import score_in_real


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dream", default="Dream-CartPole-v0", help="a registered dream with discrete actions")
    parser.add_argument("--temperature", type=float, help="dream knob, a gym.make_vec kwarg (default: the dream's)")
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=32, help="steps per env per rollout")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--minibatch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3, help="decays linearly to 0")
    parser.add_argument("--gamma", type=float, default=0.98)
    parser.add_argument("--gae-lambda", type=float, default=0.8)
    parser.add_argument("--clip", type=float, default=0.2, help="decays linearly to 0, as the zoo's")
    parser.add_argument("--vf-coef", type=float, default=0.5)
    parser.add_argument("--max-grad-norm", type=float, default=0.5)
    parser.add_argument("--episodes", type=int, default=20, help="real episodes scoring the trained policy")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


class Agent(nn.Module):
    """Separate actor and critic MLPs (64 x 64, tanh), orthogonal init, as CleanRL's."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()

        def mlp(out: int, gain: float) -> nn.Sequential:
            layers = [nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out)]
            for layer, g in zip(layers[::2], (np.sqrt(2), np.sqrt(2), gain)):
                nn.init.orthogonal_(layer.weight, g)
                nn.init.zeros_(layer.bias)
            return nn.Sequential(*layers)

        self.critic = mlp(1, 1.0)
        self.actor = mlp(n_actions, 0.01)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """A sampled (or the given) action, its log-probability, the entropy and the value."""
        dist = Categorical(logits=self.actor(obs))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.value(obs)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # small networks: one thread is faster than two that sync
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    # --- the dream: a Gymnasium vector env; same-step autoreset, so a done row's next obs is a fresh start
    dream_kwargs = {} if args.temperature is None else {"temperature": args.temperature}
    envs = gym.make_vec(args.dream, num_envs=args.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **dream_kwargs)
    obs_dim, n_actions = envs.single_observation_space.shape[0], int(envs.single_action_space.n)
    agent = Agent(obs_dim, n_actions)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)

    # --- rollout storage, one row per step, one column per env
    shape = (args.num_steps, args.num_envs)
    obs_buf = torch.zeros(shape + (obs_dim,))
    actions, logprobs = torch.zeros(shape, dtype=torch.long), torch.zeros(shape)
    rewards, dones, values = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)

    next_obs = torch.as_tensor(envs.reset(seed=args.seed)[0])
    next_done = torch.zeros(args.num_envs)
    episode_return, finished_returns = np.zeros(args.num_envs), []
    batch = args.num_steps * args.num_envs
    updates = args.total_steps // batch

    for update in range(1, updates + 1):
        progress_left = 1.0 - (update - 1) / updates
        for group in optimizer.param_groups:
            group["lr"] = args.lr * progress_left
        clip = args.clip * progress_left

        # --- collect num_steps from every env at once
        for step in range(args.num_steps):
            obs_buf[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.act(next_obs)
            actions[step], logprobs[step], values[step] = action, logprob, value
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            done = np.logical_or(terminated, truncated)  # CleanRL treats a time limit as an end, too
            next_obs, next_done = torch.as_tensor(obs), torch.as_tensor(done, dtype=torch.float32)
            episode_return += reward
            finished_returns.extend(episode_return[done].tolist())
            episode_return[done] = 0.0

        # --- generalised advantage estimation, backwards through the rollout
        with torch.no_grad():
            next_value = agent.value(next_obs)
        advantages, last = torch.zeros(shape), torch.zeros(args.num_envs)
        for t in reversed(range(args.num_steps)):
            not_done = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
            following = next_value if t == args.num_steps - 1 else values[t + 1]
            delta = rewards[t] + args.gamma * following * not_done - values[t]
            last = delta + args.gamma * args.gae_lambda * not_done * last
            advantages[t] = last
        returns = advantages + values

        # --- clipped-surrogate PPO epochs over shuffled minibatches of the flattened rollout
        b_obs, b_actions, b_logprobs = obs_buf.reshape(batch, obs_dim), actions.reshape(batch), logprobs.reshape(batch)
        b_adv, b_returns = advantages.reshape(batch), returns.reshape(batch)
        for _ in range(args.epochs):
            for idx in torch.randperm(batch).split(args.minibatch_size):
                _, new_logprob, entropy, new_value = agent.act(b_obs[idx], b_actions[idx])
                ratio = (new_logprob - b_logprobs[idx]).exp()
                adv = (b_adv[idx] - b_adv[idx].mean()) / (b_adv[idx].std() + 1e-8)
                policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
                value_loss = 0.5 * (new_value - b_returns[idx]).pow(2).mean()
                loss = policy_loss + args.vf_coef * value_loss  # the zoo's CartPole entropy bonus is 0
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        if update % 50 == 0 or update == updates:
            recent = np.mean(finished_returns[-20:]) if finished_returns else float("nan")
            print(f"steps {update * batch:>7,}: dream return (last 20 episodes) {recent:6.1f}", flush=True)
    envs.close()
    train_s = time.perf_counter() - start

    # --- the same policy, greedy, in the real env the dream was fitted on
    real_env_id = read_metadata(gym.spec(args.dream).kwargs["checkpoint"])["source_env_id"]
    with torch.no_grad():
        mean, std = score_in_real(lambda obs: int(agent.actor(torch.as_tensor(obs)).argmax()), real_env_id, args.episodes,
                                  seed=10_000 + args.seed)
    print(f"PPO trained only in {args.dream} ({updates * batch:,} dream steps, {train_s:.0f} s): "
          f"real {real_env_id} return {mean:.1f} +- {std:.1f} over {args.episodes} episodes")


if __name__ == "__main__":
    main()
