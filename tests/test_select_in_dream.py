"""SelectInDream: the agent a dream training returns is the last policy unless the dream scored an
earlier one clearly better, judged on the same dream episodes at every check, with no real step spent."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy

from learned_envs.sb3 import make_vec_env
from learned_envs.training import SelectInDream, train_in_dream


def test_the_returned_agent_is_the_kept_check(small_dream_id):
    select = SelectInDream(small_dream_id, every=256, episodes=4)
    # The zoo's CartPole PPO: 8 envs x 32 steps, so the checks fall at 256, 512, 768 and the end.
    model = train_in_dream(small_dream_id, 1024, "PPO", seed=0, progress=False, callbacks=[select])
    assert [steps for steps, _ in select.history] == [256, 512, 768, 1024]
    # The latest check in the band below the best (a tenth of the return's scale): at or after
    # the best, and no check after it lies in the band.
    best = max(select.history, key=lambda check: (check[1], check[0]))
    worst = min(value for _, value in select.history)
    band = best[1] - select.tolerance * max(abs(best[1]), best[1] - worst)
    assert select.chosen in select.history and select.chosen[0] >= best[0] and select.chosen[1] >= band
    assert all(value < band for steps, value in select.history if steps > select.chosen[0])
    # The agent handed back is the kept one: the same episodes score it as its check did.
    venv = make_vec_env(small_dream_id, n_envs=4, seed=select.seed)
    mean, _ = evaluate_policy(model, venv, n_eval_episodes=4, deterministic=True)
    assert mean == pytest.approx(select.chosen[1], abs=1e-6)


def test_a_check_at_the_end_when_the_budget_is_not_a_multiple(small_dream_id):
    select = SelectInDream(small_dream_id, every=512, episodes=2, temperature=0.0)
    train_in_dream(small_dream_id, 768, "PPO", seed=1, progress=False, callbacks=[select])
    assert [steps for steps, _ in select.history] == [512, 768]


def test_the_band_keeps_a_later_policy_the_dream_scores_about_as_well(small_dream_id, monkeypatch):
    """The rule itself, on scripted dream returns: a fall far below the best is passed over, a dip
    inside the band is not (the later, more trained policy wins), a new best always is kept."""
    import stable_baselines3.common.evaluation as evaluation

    def scripted(values):
        returns = iter(values)
        monkeypatch.setattr(evaluation, "evaluate_policy", lambda *args, **kwargs: (next(returns), 0.0))
        select = SelectInDream(small_dream_id, every=256, episodes=2)
        train_in_dream(small_dream_id, len(values) * 256, "PPO", seed=0, progress=False, callbacks=[select])
        assert [value for _, value in select.history] == values
        return select.chosen

    # The band below 500: 500 - 0.1 * max(500, 500 - 100) = 450.
    assert scripted([100.0, 500.0, 300.0, 470.0, 495.0, 120.0]) == (1280, 495.0)
    # A flat run: the last policy, not the first that happened to score highest.
    assert scripted([501.2, 499.0, 497.5, 498.1]) == (1024, 498.1)
    # Returns near 0 take their scale from the run's range: -1 - 0.1 * (-1 - -200) = -20.9.
    assert scripted([-200.0, -1.0, -15.0, -30.0]) == (768, -15.0)
    # A new best always wins.
    assert scripted([10.0, 20.0, 40.0]) == (768, 40.0)


def test_it_refuses_empty_checks_and_odd_tolerances(small_dream_id):
    with pytest.raises(ValueError, match="every >= 1 and episodes >= 1"):
        SelectInDream(small_dream_id, every=0)
    with pytest.raises(ValueError, match="every >= 1 and episodes >= 1"):
        SelectInDream(small_dream_id, every=100, episodes=0)
    with pytest.raises(ValueError, match="tolerance is a fraction"):
        SelectInDream(small_dream_id, every=100, tolerance=1.5)


def test_a_run_that_keeps_its_last_check_hands_back_the_run_s_own_agent(small_dream_id, monkeypatch):
    """The last check is taken after the last updates: where the dream scores each check higher,
    the agent handed back is the one the same run gives without checks, to the bit."""
    import stable_baselines3.common.evaluation as evaluation

    returns = iter(range(100))
    monkeypatch.setattr(evaluation, "evaluate_policy", lambda *args, **kwargs: (float(next(returns)), 0.0))
    select = SelectInDream(small_dream_id, every=256, episodes=2)
    # DQN updates after each rollout's steps at a constant rate (PPO's linear schedule makes its
    # last update a no-op): a check taken before the last updates would keep an older network.
    checked = train_in_dream(small_dream_id, 1024, "DQN", seed=0, progress=False, callbacks=[select])
    plain = train_in_dream(small_dream_id, 1024, "DQN", seed=0, progress=False)
    assert select.chosen == (1024, 3.0)
    ours, theirs = checked.policy.state_dict(), plain.policy.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
