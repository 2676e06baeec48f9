"""The DayDreamer loop: learn online by alternating real experience, refits and training in the dream.

    learned-envs loop Pendulum-v1 --agent SAC --real-steps 3000 --out runs/loop_pendulum

1. ``initial_steps`` random real steps (pink noise for Box actions, uniform for Discrete:
   ``noise``), then a first fit;
2. each iteration: ``steps_per_iteration`` real steps, the first ``explore_fraction`` (half) of
   them with the explorer (``explorer``: random actions of the same noise, or a second SB3 agent)
   and the rest with the acting agent (its own exploration: SAC/PPO sample their policy with the
   same noise, DQN its epsilon), appended
   with episode boundaries kept (each run's last episode is cut as a truncation); a refit
   warm-started from the previous dream; the same SB3 learner trained further, only in the
   dream (episodes start from any logged real state, MBPO's branching), which becomes the acting agent if it does at
   least as well in the newest dream (``dream_check_episodes``, see :func:`_train`); with
   ``explorer="disagreement"``, an SB3 explorer trained further in the same dream on the
   members' disagreement alone (see :func:`_train_explorer`); the acting agent scored over
   ``eval_episodes`` real episodes;
3. until ``real_steps`` real transitions are spent.

The defaults are one setting for every env of ``benchmarks/online.py`` (CartPole-v1, Pendulum-v1,
InvertedPendulum-v5, MountainCarContinuous-v0), none tuned per env: half of each round's real
steps random, pink for Box actions, so that a sparse reward behind a hill is found (uniform
random steps never reached MountainCar's flag; the disagreement explorer reached it on one seed
of three), and training in the dream branching from every logged state.

Everything lives in ``out``: ``real.npz`` (every real transition the loop trained on, and no
other), ``dream.safetensors``, ``agent.zip`` (the acting agent), ``learner.zip``, ``explorer.zip``,
``curve.json`` (real return against real steps, per iteration) and ``curve.png``. Each phase of an
iteration is recorded in ``state.json`` after its
files are written, so a loop killed at any point and started again with the same command goes
on from the last finished phase: real transitions already written are neither lost nor
collected twice. Evaluation episodes are measurement, not training data: they are counted in
``curve.json`` (``eval_steps``) but never enter ``real.npz``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from tqdm.auto import tqdm

from learned_envs.atomic import atomic_path
from learned_envs.training import OFF_POLICY


def pessimistic_bounds(rewards: np.ndarray) -> str:
    """How a loop's dream treats a step beyond the data's support: the choice an agent cannot profit from.

    Ending the episode there (``"halt"``) forfeits what is left, the worst outcome where rewards
    are never negative (CartPole, InvertedPendulum: with ``"clip"`` the loop's PPO learned to
    drift the cart, which the dream held at the edge of its data while the real track ended
    beyond it). Where rewards are negative (Pendulum, MountainCarContinuous) ending pays, so the
    dream goes on at the support's edge (``"clip"``): on Pendulum-v1 a halting dream taught SAC
    to leave its data (real return -1,536 after 1,080 real steps; -123 after 840 with clip). The
    data grows every iteration, so the support grows with it.
    """
    return "halt" if float(np.min(rewards)) >= 0.0 else "clip"


NOISES = ("auto", "white", "pink")
# Stored in every refit under the user's dream_kwargs: MBPO's branching, dream episodes starting
# from any logged real state, so the agent also trains from the states the latest real steps reached;
# the support widened by the data's own range (1), where the loop's targets were met (the knob's
# default is now 2).
LOOP_DREAM_DEFAULTS: dict[str, Any] = {"reset_from": "logged", "bounds_margin": 1.0}
# A state.json written before a knob existed ran with the knob's value then, not today's default.
BEFORE_KNOBS: dict[str, Any] = {"fit_options": {}, "dream_check_episodes": 0, "explore_fraction": 0.0,
                                "explorer_steps_per_iteration": None, "noise": "white", "explorer": "disagreement"}


@dataclass
class LoopConfig:
    """Knobs of :func:`run_loop`. ``None`` means scaled to ``real_steps`` (the same rule for every env)."""

    env_id: str
    agent: str = "SAC"
    real_steps: int = 3000
    seed: int = 0
    initial_steps: int | None = None  # None: a fifth of real_steps, at most 1,000
    noise: str = "auto"  # the real steps' exploration noise: "white", "pink" (Box actions; see _collect), "auto": pink for Box
    iterations: int = 10  # the rest of the budget in this many equal slices
    agent_steps_per_iteration: int | None = None  # None: 3,000 off-policy, 25,000 on-policy (PPO/A2C)
    explorer_steps_per_iteration: int | None = None  # None: the agent's (explorer="disagreement" only)
    eval_episodes: int = 5
    dream_check_episodes: int = 10  # dream episodes judging each iteration's training (0: keep it unjudged)
    explore_fraction: float = 0.5  # share of each iteration's real steps taken by the explorer (0: the agent takes all)
    explorer: str = "random"  # "random": random actions of `noise`; "disagreement": an SB3 agent trained on it (see _train_explorer)
    dream_kwargs: dict[str, Any] = field(default_factory=dict)  # over LOOP_DREAM_DEFAULTS in every refit (and see pessimistic_bounds)
    fit_options: dict[str, Any] = field(default_factory=dict)  # FitConfig fields for every refit (e.g. max_seconds)

    def resolved(self) -> "LoopConfig":
        initial = self.initial_steps if self.initial_steps is not None else min(1000, max(1, self.real_steps // 5))
        agent_steps = self.agent_steps_per_iteration or (3000 if self.agent.upper() in OFF_POLICY else 25_000)
        return dataclasses.replace(self, agent=self.agent.upper(), initial_steps=min(initial, self.real_steps),
                                   agent_steps_per_iteration=agent_steps,
                                   explorer_steps_per_iteration=self.explorer_steps_per_iteration or agent_steps)

    def validate(self) -> None:
        if self.real_steps < 2:
            raise ValueError(f"real_steps must be at least 2, got {self.real_steps}")
        if self.iterations < 1 or self.eval_episodes < 1:
            raise ValueError("iterations and eval_episodes must be at least 1")
        if not 0.0 <= self.explore_fraction <= 1.0:
            raise ValueError(f"explore_fraction must be in [0, 1], got {self.explore_fraction}")
        if self.explorer not in ("disagreement", "random"):
            raise ValueError(f"explorer must be 'disagreement' or 'random', got {self.explorer!r}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {self.noise!r}")
        if self.dream_check_episodes < 0:
            raise ValueError(f"dream_check_episodes must be 0 or more, got {self.dream_check_episodes}")
        if self.initial_steps is not None and not 1 <= self.initial_steps <= self.real_steps:
            raise ValueError(f"initial_steps must be in [1, real_steps], got {self.initial_steps}")


def resolve_noise(noise: str, action_space: gym.Space) -> str:
    """``"auto"``: pink where actions are a Box (a push held for a while travels), white where they are not."""
    if noise != "auto":
        return noise
    return "pink" if isinstance(action_space, gym.spaces.Box) else "white"


class LoopState:
    """``state.json``: where the loop stands, written atomically after each finished phase."""

    def __init__(self, out: Path, config: LoopConfig):
        self.path = out / "state.json"
        self.data: dict[str, Any] = {"config": _jsonable(dataclasses.asdict(config)), "iteration": 0, "phase": "start",
                                     "real_steps": 0, "curve": []}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if {**BEFORE_KNOBS, **(saved.get("config") or {})} != self.data["config"]:
                raise ValueError(f"{out} holds a loop with other settings ({saved.get('config')}); use another --out or the same options")
            self.data = saved

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def advance(self, **changes: Any) -> None:
        self.data.update(changes)
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.data, indent=2))


def run_loop(config: LoopConfig, out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the loop in ``out``; returns the curve ``[{real_steps, return, ...}]`` and paths."""
    from learned_envs.data import concatenate, load, save

    config.validate()
    cfg = config.resolved()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = LoopState(out, config)
    real_path, dream_path, agent_path = out / "real.npz", out / "dream.safetensors", out / "agent.zip"
    explorer_path = out / "explorer.zip"
    env = gym.make(cfg.env_id)
    cfg = dataclasses.replace(cfg, noise=resolve_noise(cfg.noise, env.action_space))
    slice_steps = max(1, -(-(cfg.real_steps - cfg.initial_steps) // cfg.iterations))
    bar = tqdm(total=cfg.real_steps, initial=state["real_steps"], desc=f"loop {cfg.env_id}", unit="real step", disable=not progress)
    agent = learner = explorer = None  # the acting agent, the one that trains on, the explorer
    while True:
        phase, iteration = state["phase"], state["iteration"]
        if phase in ("start", "evaluated"):
            spent = state["real_steps"]
            if spent >= cfg.real_steps:
                break
            steps = cfg.initial_steps if spent == 0 else min(slice_steps, cfg.real_steps - spent)
            if spent > 0 and agent is None:
                agent = _load_agent(cfg, agent_path)
            if spent > 0 and explorer is None:
                explorer = _load_agent(cfg, explorer_path)
            seed = cfg.seed * 100_003 + iteration
            # The trained explorer acts once it exists; random actions from the first round on.
            exploring = explorer is not None or (cfg.explorer == "random" and spent > 0)
            explored = round(cfg.explore_fraction * steps) if exploring else 0
            runs = ([_collect(env, explorer, explored, seed=seed + 50_000, kind="explorer", noise=cfg.noise)] if explored else [])
            runs += [_collect(env, agent, steps - explored, seed=seed, noise=cfg.noise)] if steps > explored else []
            data = concatenate([load(real_path), *runs] if spent else runs, source=str(real_path))
            save(data, real_path)
            bar.update(steps)
            state.advance(phase="collected", real_steps=spent + steps)
        elif phase == "collected":
            _refit(cfg, real_path, dream_path, warm=dream_path.exists(), progress=progress)
            state.advance(phase="fitted")
        elif phase == "fitted":
            learner, check = _train(cfg, learner, agent_path, dream_path, progress, seed=20_000 + 1000 * cfg.seed + iteration)
            agent = _load_agent(cfg, agent_path)
            state.advance(phase="trained", dream_check=check)
        elif phase == "trained":
            if cfg.explore_fraction > 0 and cfg.explorer == "disagreement":
                explorer = _train_explorer(cfg, explorer, explorer_path, dream_path, progress)
            state.advance(phase="explored")
        elif phase == "explored":
            if agent is None:
                agent = _load_agent(cfg, agent_path)
            mean, std, eval_steps = _evaluate(agent, cfg.env_id, cfg.eval_episodes, seed=10_000 + 1000 * cfg.seed + iteration)
            point = {"iteration": iteration, "real_steps": state["real_steps"], "return": mean, "return_std": std,
                     "eval_episodes": cfg.eval_episodes, "eval_steps": eval_steps, "dream_check": state.data.get("dream_check")}
            state.advance(phase="evaluated", iteration=iteration + 1, curve=[*state["curve"], point])
            _write_curve(out, cfg, state["curve"])
            bar.set_postfix(real_return=f"{mean:.1f}")
    bar.close()
    env.close()
    return {"curve": state["curve"], "real": str(real_path), "dream": str(dream_path), "agent": str(agent_path)}


def _collect(env: gym.Env, agent, steps: int, seed: int, kind: str = "agent", noise: str = "white"):
    """``steps`` real transitions: without an agent, random actions, else the agent's (or the
    explorer's) exploring policy.

    ``noise="pink"`` (Box actions) makes that randomness pink, correlated in time: random actions
    are :class:`~learned_envs.data.collecting.PinkNoise`, and the agent's exploring actions are
    drawn from its own distribution with pink noise for its standard normal draws
    (:func:`pink_exploration`). A run of one-way pushes travels further than white noise, which
    averages out within a few steps: on MountainCarContinuous-v0, 1,000 pink random steps reached
    the flag on 23 seeds of 30, uniform ones on none (``benchmarks/exploration_noise.py``).
    """
    from learned_envs.data.collecting import PinkNoise, PinkNoiseStream, require_box, rollout

    if agent is None:
        if noise == "pink":
            return rollout(env, PinkNoise(env.action_space, np.random.default_rng(seed)), steps, seed, {"kind": "pink", "exponent": 1.0})
        env.action_space.seed(seed)
        return rollout(env, lambda obs: env.action_space.sample(), steps, seed, {"kind": "random"})
    behaviour = {"kind": "sb3", "algo": type(agent).__name__, "exploring": True, "online_loop": True, "role": kind}
    if noise == "pink":
        require_box(env.action_space, "pink exploration noise")
        stream = PinkNoiseStream(np.random.default_rng(seed), int(np.prod(env.action_space.shape)))
        return rollout(env, lambda obs: pink_exploration(agent, obs, stream()), steps, seed, {**behaviour, "noise": "pink"})
    return rollout(env, lambda obs: agent.predict(obs, deterministic=False)[0], steps, seed, behaviour)


def pink_exploration(agent, obs: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """The exploring action of an SB3 agent with a Box action space at ``obs``, with ``draw``
    (``[A]``, unit variance) in place of its standard normal draw:

    - SAC: its squashed Gaussian, ``tanh(mean + std * draw)`` (with gSDE, the state-dependent std);
    - PPO/A2C: its Gaussian, ``mean + std * draw``, clipped to the space as SB3 clips;
    - TD3/DDPG: its deterministic action plus ``0.1 * draw``, in its [-1, 1] scale.
    """
    import torch
    from stable_baselines3 import SAC, TD3

    policy = agent.policy
    obs_tensor, _ = policy.obs_to_tensor(obs)
    eps = torch.as_tensor(draw, dtype=torch.float32).reshape(1, -1)
    with torch.no_grad():
        if isinstance(agent, SAC):
            # Through the actor's own distribution, so gSDE (use_sde, state-dependent std) is covered too.
            mean, log_std, extra = policy.actor.get_action_dist_params(obs_tensor)
            gaussian = policy.actor.action_dist.proba_distribution(mean, log_std, **extra).distribution
            scaled = torch.tanh(gaussian.mean + gaussian.stddev * eps)
        elif isinstance(agent, TD3):  # DDPG is a TD3
            scaled = torch.clamp(policy.actor(obs_tensor) + 0.1 * eps, -1.0, 1.0)
        else:
            gaussian = policy.get_distribution(obs_tensor).distribution
            action = (gaussian.mean + gaussian.stddev * eps).numpy().reshape(agent.action_space.shape)
            return np.clip(action, agent.action_space.low, agent.action_space.high)
    return policy.unscale_action(scaled.numpy()).reshape(agent.action_space.shape)


def _refit(cfg: LoopConfig, real_path: Path, dream_path: Path, warm: bool, progress: bool) -> None:
    from learned_envs.data import load
    from learned_envs.fitting import FitConfig, fit

    real = load(real_path)
    defaults = {"out_of_bounds": pessimistic_bounds(real.rewards), **LOOP_DREAM_DEFAULTS, **cfg.dream_kwargs}
    # With reset_from="logged" (MBPO's branching from real states) every real state is stored: a few thousand rows.
    branching = defaults.get("reset_from") == "logged"
    fit(real_path, dream_path, source_env=cfg.env_id, seed=cfg.seed, init=dream_path if warm else None,
        config=FitConfig(**cfg.fit_options), dream_defaults=defaults,
        reset_states=len(real) if branching else None, progress=False)


def _dream_venv(cfg: LoopConfig, dream_path: Path, n_envs: int, **dream_kwargs: Any):
    """The SB3 VecEnv of the newest dream (registered as ``Loop-<Env>-v0`` for this process)."""
    import re

    from learned_envs.registry import register_dream
    from learned_envs.sb3 import make_vec_env

    name = re.sub(r"[^A-Za-z0-9_.]", "", cfg.env_id.split("/")[-1].split(":")[-1].rsplit("-v", 1)[0]) or "Env"
    dream_id = f"Loop-{name}-v0"
    register_dream(dream_id, dream_path)
    return make_vec_env(dream_id, n_envs=n_envs, seed=cfg.seed, **dream_kwargs)


def _train(cfg: LoopConfig, learner, agent_path: Path, dream_path: Path, progress: bool, seed: int):
    """The learner, trained ``agent_steps_per_iteration`` more steps in the newest dream, and the
    dream check that decides whether it becomes the acting agent.

    Two SB3 agents of one algorithm: the learner (``learner.zip``) trains on in every iteration,
    and the acting agent (``agent.zip``) is what the loop collects real steps with and scores.
    A trained agent can get worse: SAC on InvertedPendulum-v5 balanced for 1,000 steps after
    1,560 real steps, then fell to 200-400 with more training. So the trained learner is scored
    beside the acting agent in the newest dream (``dream_check_episodes`` deterministic episodes,
    the same starts and draws for both), and replaces it unless it scores worse there by more
    than 5% (returns are noisy); no real step is spent on the choice.

    The verdict only chooses who acts: the learner keeps its own weights either way. Where the
    check reset the learner to the weights it started from, a learner that must get worse before
    it gets better never got anywhere: on MountainCarContinuous-v0 a policy that stands still
    (return 0) beat every half-trained one that pushed (each step costs its action), and nine of
    ten iterations undid their training. The verdict is only as good as the dream: a halting
    InvertedPendulum dream scored a policy that balances for 1,000 real steps at 100-300.
    """
    import stable_baselines3 as sb3

    from learned_envs.training import ProgressBar, hyperparameters

    algo = getattr(sb3, cfg.agent)
    learner_path = agent_path.with_name("learner.zip")
    params = hyperparameters(cfg.agent, cfg.env_id)
    n_envs, policy = params.pop("n_envs"), params.pop("policy")
    venv = _dream_venv(cfg, dream_path, n_envs)
    if learner is None:
        saved = learner_path if learner_path.exists() else agent_path
        learner = (algo.load(saved, env=venv, device="cpu") if saved.exists()
                   else algo(policy, venv, seed=cfg.seed, verbose=0, device="cpu", **params))
    else:
        learner.set_env(venv)
    steps = cfg.agent_steps_per_iteration
    learner.learn(steps, reset_num_timesteps=False, callback=ProgressBar(steps, f"{cfg.agent} in the dream") if progress else None)
    check, keep = None, True
    if cfg.dream_check_episodes > 0 and agent_path.exists():  # the first training has nothing to be judged against
        check_venv = _dream_venv(cfg, dream_path, cfg.dream_check_episodes)
        trained_return = _dream_return(learner, check_venv, seed)
        acting_return = _dream_return(algo.load(agent_path, device="cpu"), check_venv, seed)
        check_venv.close()
        keep = trained_return >= acting_return - 0.05 * abs(acting_return)
        check = {"trained": trained_return, "before": acting_return, "kept": "trained" if keep else "before"}
    with atomic_path(learner_path) as tmp, open(tmp, "wb") as fh:
        learner.save(fh)
    if keep:  # the same bytes: copied, not serialised twice
        with atomic_path(agent_path) as tmp:
            shutil.copyfile(learner_path, tmp)
    return learner, check


def _train_explorer(cfg: LoopConfig, explorer, explorer_path: Path, dream_path: Path, progress: bool):
    """The explorer, trained ``explorer_steps_per_iteration`` more steps in the newest dream on the
    members' disagreement alone, in units of the largest disagreement over the logged data.

    The agent is trained on the task's reward and takes what that reward shows it; where the
    logged data holds no sign of a reward (MountainCarContinuous: random steps never reach the
    flag, and every step costs its action), the agent learns to stand still and the loop never
    logs anything new. The explorer is drawn to where the members disagree, which is where the
    data is thin, and spends part of each iteration's real steps there (Plan2Explore's split of
    an explorer and a task policy, both learned in the model). Its replay buffer is relabelled
    with the newest dream's disagreement before it trains, as data logged since makes the old
    rewards stale.

    Opt-in (``explorer="disagreement"``): on MountainCarContinuous-v0 with half of each
    iteration's steps given to it, the explorer reached the flag on one seed of three, where
    beyond the data's box the dream held the hill's slope at the edge's value, so that a car
    climbed it without swinging; pink random steps (the default explorer) reached it on three of
    three and the agent solved the task from 4,600-6,400 real steps
    (``benchmarks/results/online_mcc_pink.json``).
    """
    import stable_baselines3 as sb3
    import torch

    from learned_envs.checkpoint import load_checkpoint
    from learned_envs.training import ProgressBar, hyperparameters

    checkpoint = load_checkpoint(dream_path)
    scale = float(checkpoint.metadata["fit"]["metrics"]["max_train_disagreement"]) or 1.0
    model = checkpoint.model

    def novelty(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``[B]`` disagreement of the dream's members at ``(obs [B, D], action [B] or [B, A])``, over ``scale``."""
        state = model.encode(torch.as_tensor(obs.reshape(len(obs), -1), dtype=torch.float32))
        out = model.predict(state, torch.as_tensor(action), temperature=0.0, members="mean", uncertainty=True)
        return out.disagreement.numpy() / scale

    params = hyperparameters(cfg.agent, cfg.env_id)
    n_envs, policy = params.pop("n_envs"), params.pop("policy")
    venv = NoveltyReward(_dream_venv(cfg, dream_path, n_envs, uncertainty_info=True), scale)
    if explorer is None and explorer_path.exists():
        explorer = getattr(sb3, cfg.agent).load(explorer_path, env=venv, device="cpu")
    elif explorer is None:
        explorer = getattr(sb3, cfg.agent)(policy, venv, seed=cfg.seed + 1, verbose=0, device="cpu", **params)
    else:
        explorer.set_env(venv)
    _relabel(explorer, novelty)
    steps = cfg.explorer_steps_per_iteration
    explorer.learn(steps, reset_num_timesteps=False, callback=ProgressBar(steps, "explorer in the dream") if progress else None)
    with atomic_path(explorer_path) as tmp, open(tmp, "wb") as fh:
        explorer.save(fh)
    return explorer


class NoveltyReward(VecEnvWrapper):
    """A dream VecEnv whose reward is ``info["disagreement"] / scale`` (the dream must fill it:
    ``uncertainty_info=True``)."""

    def __init__(self, venv: VecEnv, scale: float):
        super().__init__(venv)
        self.scale = scale

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, _, dones, infos = self.venv.step_wait()
        rewards = np.array([info["disagreement"] for info in infos], dtype=np.float32) / self.scale
        return obs, rewards, dones, infos


def _relabel(agent, reward_of) -> None:
    """Rewrite the rewards of an off-policy ``agent``'s replay buffer as ``reward_of(obs, action)``
    (actions in the env's units); on-policy agents keep no buffer across iterations."""
    buffer = getattr(agent, "replay_buffer", None)
    size = 0 if buffer is None else (buffer.buffer_size if buffer.full else buffer.pos)
    if size == 0:
        return
    n_envs = buffer.n_envs
    obs = buffer.observations[:size].reshape(size * n_envs, -1)
    actions = buffer.actions[:size].reshape(size * n_envs, -1)
    if isinstance(agent.action_space, gym.spaces.Box):
        actions = agent.policy.unscale_action(actions)  # SAC/TD3 store actions scaled to [-1, 1]
    else:
        actions = actions.reshape(-1).astype(np.int64) - int(agent.action_space.start)  # the model's indices count from 0
    rewards = np.concatenate([reward_of(obs[lo:lo + 4096], actions[lo:lo + 4096]) for lo in range(0, len(obs), 4096)])
    buffer.rewards[:size] = rewards.reshape(size, n_envs)


def _dream_return(agent, venv, seed: int) -> float:
    """Mean deterministic return of ``agent`` over one episode in each of ``venv``'s dreams, reset with ``seed``."""
    from stable_baselines3.common.evaluation import evaluate_policy

    venv.seed(seed)
    mean, _ = evaluate_policy(agent, venv, n_eval_episodes=venv.num_envs, deterministic=True, warn=False)
    return float(mean)


def _load_agent(cfg: LoopConfig, agent_path: Path):
    """The agent of the last finished training phase (None before the first)."""
    import stable_baselines3 as sb3

    if not agent_path.exists():
        return None
    return getattr(sb3, cfg.agent).load(agent_path, device="cpu")


def _evaluate(agent, env_id: str, episodes: int, seed: int) -> tuple[float, float, int]:
    """Mean and std of the deterministic agent's real return, and the real steps the scoring took."""
    env = gym.make(env_id)
    returns, steps = [], 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.predict(obs, deterministic=True)[0])
            total, done, steps = total + float(reward), terminated or truncated, steps + 1
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns)), steps


def _write_curve(out: Path, cfg: LoopConfig, curve: list[dict[str, Any]]) -> None:
    with atomic_path(out / "curve.json") as tmp:
        Path(tmp).write_text(json.dumps({"env_id": cfg.env_id, "agent": cfg.agent, "seed": cfg.seed, "curve": curve}, indent=2))
    from learned_envs.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x = [p["real_steps"] for p in curve]
    y = np.array([p["return"] for p in curve])
    s = np.array([p["return_std"] for p in curve])
    ax.plot(x, y, marker="o", label=f"{cfg.agent}, trained only in the dream")
    ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("real steps spent")
    ax.set_ylabel(f"real return ({cfg.eval_episodes} episodes)")
    ax.set_title(f"learned-envs loop {cfg.env_id} (seed {cfg.seed})", fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out / "curve.png")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
