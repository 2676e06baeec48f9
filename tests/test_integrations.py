"""Agent libraries other than SB3 load and step dreams their own way: RLlib (env runners in Ray
worker processes), TorchRL (GymEnv by id, GymWrapper over the batched dream, collectors).

Each library is an extra; its tests skip when it is absent. RLlib's training runs are slow.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import gymnasium as gym
import numpy as np
import pytest

import learned_envs  # noqa: F401  (registers the shipped dreams)

UNEXPECTED_FRAMESKIP = "unexpected keyword argument 'frameskip'"


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Dream-CartPole-v0", "Dream-Pendulum-v0"])
def test_an_unknown_kwarg_raises_the_type_error_gymnasium_envs_raise(env_id):
    # TorchRL's GymEnv passes frameskip to gym.make and retries without it only on this message.
    with pytest.raises(TypeError, match=UNEXPECTED_FRAMESKIP):
        gym.make(env_id, frameskip=4)


def test_an_unknown_kwarg_to_the_batched_dream_raises_it_too():
    with pytest.raises(TypeError, match=UNEXPECTED_FRAMESKIP):
        gym.make_vec("Dream-CartPole-v0", num_envs=2, frameskip=4)


# --- TorchRL -----------------------------------------------------------------------------------


def test_torchrl_gymenv_builds_a_dream_by_id_and_passes_check_env_specs():
    pytest.importorskip("torchrl")
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    env = GymEnv("learned_envs:Dream-Pendulum-v0")  # goes through TorchRL's frameskip retry
    check_env_specs(env)
    assert tuple(env.batch_size) == () and tuple(env.action_spec.shape) == (1,)
    rollout = env.rollout(250, break_when_any_done=True)
    assert rollout.batch_size[0] == 200 and bool(rollout["next", "truncated"][-1])  # Pendulum's time limit
    # TorchRL's own frame skip stands in for the frameskip the dream refused: rewards add up over two steps.
    skipping = GymEnv("learned_envs:Dream-Pendulum-v0", frame_skip=2)
    assert skipping.rollout(250, break_when_any_done=True).batch_size[0] == 100


@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.DISABLED, gym.vector.AutoresetMode.SAME_STEP])
def test_torchrl_collects_batches_from_the_batched_dream(mode):
    pytest.importorskip("torchrl")
    from torchrl.collectors import Collector
    from torchrl.envs import GymWrapper
    from torchrl.envs.utils import check_env_specs

    dreams = gym.make_vec("Dream-Pendulum-v0", num_envs=16, autoreset_mode=mode)
    env = GymWrapper(dreams)
    check_env_specs(env)
    # The wrapper steps the dream's own vector env: one world-model call for all sixteen per step.
    assert env._env is dreams and tuple(env.batch_size) == (16,)
    collector = Collector(env, policy=None, frames_per_batch=16 * 250, total_frames=16 * 250)
    (batch,) = list(collector)
    collector.shutdown()
    assert tuple(batch.batch_size) == (16, 250)
    # Every dream hit its 200-step limit once in 250 steps, was reset by TorchRL and went on.
    assert batch["next", "truncated"].reshape(16, 250).sum(dim=1).tolist() == [1] * 16
    assert np.isfinite(batch["next", "reward"].numpy()).all()


# --- RLlib -------------------------------------------------------------------------------------


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.rllib")
    # The env runners are Ray worker processes: they inherit this environment and import
    # learned_envs themselves through the "learned_envs:" prefix of the env id.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def built_on_two_runners(config, dream_id: str, temperature: float, **runner_options: Any) -> Iterator[Any]:
    """``config`` sampling ``learned_envs:<dream_id>`` on two remote env runners, each stepping the
    dream's own vector env, built; checks the temperature given in env_config reached both."""
    config = (
        config.environment(f"learned_envs:{dream_id}", env_config={"temperature": temperature})
        .env_runners(num_env_runners=2, gym_env_vectorize_mode="vector_entry_point", num_cpus_per_env_runner=0.5, **runner_options)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        temperatures = algo.env_runner_group.foreach_env_runner(lambda runner: float(runner.env.unwrapped.core.temperature),
                                                                local_env_runner=False)
        assert temperatures == [temperature, temperature]
        yield algo
    finally:
        algo.stop()


@pytest.mark.slow
def test_rllib_ppo_samples_and_learns_in_a_dream_on_two_env_runners(local_ray):
    from ray.rllib.algorithms.ppo import PPOConfig

    config = PPOConfig().training(lr=3e-4, num_epochs=6, vf_loss_coeff=0.01, train_batch_size_per_learner=2000, minibatch_size=128)
    with built_on_two_runners(config, "Dream-CartPole-v0", 0.5, num_envs_per_env_runner=4) as algo:
        returns = [algo.train()["env_runners"]["episode_return_mean"] for _ in range(4)]
    assert all(np.isfinite(returns))
    # Four PPO updates on 8,000 dream steps already lengthen CartPole episodes well past random's ~22.
    assert returns[-1] > returns[0] and returns[-1] > 40


@pytest.mark.slow
def test_rllib_sac_trains_in_a_continuous_dream_on_two_env_runners(local_ray):
    from ray.rllib.algorithms.sac import SACConfig

    config = (
        SACConfig()
        .training(num_steps_sampled_before_learning_starts=200, train_batch_size_per_learner=64)
        .reporting(min_sample_timesteps_per_iteration=400)
    )
    with built_on_two_runners(config, "Dream-Pendulum-v0", 0.0, num_envs_per_env_runner=2, rollout_fragment_length=50) as algo:
        result = algo.train()
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 400
    assert result["learners"]["default_policy"]["num_module_steps_trained"] > 0  # past warm-up: it learned
