"""How fast dreams step: the bare batched forward, each face over the batched core, SB3's
``DummyVecEnv`` over single dreams, and the real env's own vector env, in one run.

    nice -n 10 python benchmarks/throughput.py                       # full run, ~12 minutes on one CPU thread
    python benchmarks/throughput.py --quick                          # smoke run, ~1 minute
    python benchmarks/throughput.py --checkpoint my.safetensors --device cuda

Prints one markdown table and writes JSON (``--out``, default benchmarks/results/throughput.json).
Steps/s counts environment steps: N per vector step (a NEXT_STEP reset step counts too).

- (a) forward: ``model.predict`` on N states (``predict_host`` for one CPU dream, as the core does), nothing else;
  the ceiling for any face.
- (b) vector:  ``DreamVectorEnv`` (``gym.make_vec`` of the dream).
- (c) sb3:     ``DreamSB3VecEnv`` (``learned_envs.sb3.make_vec_env(..., monitor=False)``).
- (d) dummy:   SB3 ``DummyVecEnv`` over N ``gym.make`` single dreams (the peer approach).
- (e) real:    ``gym.make_vec(source_env, N)`` with the source env's own vector entry point.
- (f) mbrl:    mbrl-lib 0.2.0's ``ModelEnv`` (the peer) over a ``GaussianMLP`` ensemble of the dream's
  sizes (members = the dream's elites, same width and depth), sampling, ``random_model``
  propagation, at the next multiple of its members >= N (it needs equal slices), with a
  termination function that returns False (the peer learns none), its rollouts restarted every 50
  steps (its randomly initialised ensemble would drift to overflow). Skipped without mbrl-lib:
  ``pip install --no-deps mbrl==0.2.0 hydra-core "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" termcolor pyyaml``.
- (g) mbrl+term: (f) with the dream's learned termination head as its ``termination_fn``: the
  same work per step as the dream (which also clips to the data's support and fills its info).
- (h) mbrl MBPO: (g) at mbrl-lib's own MBPO model defaults (7 members of 4 x 200, 5 elites), the
  ensemble ``benchmarks/fit_speed.py`` fits beside the dream's on the same rows: what a user of
  the peer steps by default. (f) and (g) measure the engines at equal work; (h) the two products.

The contenders of one N are timed in ``--rounds`` alternating windows and each keeps its best
window (the JSON also has the medians): on a shared machine, load that comes and goes then
falls on all of them alike instead of on whichever ran during it.

Then peak memory while 4096 dreams step ``--memory-steps`` vector steps (RSS read from
/proc/self/status at start, middle and end, and the CUDA allocator's peak on a GPU), and PPO's wall
time for ``--ppo-steps`` steps in the dream (``train_in_dream``, the batched SB3 face), in the
dream through SB3's own ``make_vec_env`` (a ``DummyVecEnv`` over ``gym.make`` single dreams, the
path SB3 users take; a single CPU dream steps in numpy) and in the real env (``train_in_real``,
run before and after the dreams), with the same zoo hyperparameters.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

import learned_envs
from learned_envs.checkpoint import load_checkpoint, read_metadata
from learned_envs.dreams.core import DreamCore, resolve_device
from learned_envs.models import array_ops

SIZES = [1, 16, 64, 256, 1024, 4096]
DUMMY_MAX_N = 256  # DummyVecEnv over 4096 Python envs takes minutes to build and to time
PEER_EPISODE = 50  # the peer's rollouts restart every this many steps (a reset is a dict of its state)


def rss_mib() -> dict[str, float]:
    """Resident set size now (VmRSS) and its peak so far (VmHWM), in MiB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss_mib": round(fields.get("VmRSS", float("nan")), 1), "peak_rss_mib": round(fields.get("VmHWM", float("nan")), 1)}


def time_steps(step: Callable[[], Any], num_envs: int, seconds: float, device: torch.device) -> float:
    """Environment steps per second of ``step`` (one vector step of ``num_envs``) over one window.

    Runs at least 3 vector steps and until ``seconds`` have passed; synchronises CUDA so queued
    kernels are counted.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        if calls >= 3 and time.perf_counter() - start >= seconds:
            break
    sync()
    return calls * num_envs / (time.perf_counter() - start)


def time_interleaved(steps: dict[str, tuple[Callable[[], Any], int]], seconds: float, rounds: int,
                     device: torch.device) -> dict[str, dict[str, float]]:
    """Steps/s of each contender (``name -> (step, env steps per call)``), timed in ``rounds``
    alternating windows of ``seconds / rounds`` each: on a shared machine, load that comes and
    goes then hits every contender alike. Returns each one's best window (the figure least
    disturbed by other processes, which only ever slow a window down) and median window."""
    for step, _ in steps.values():  # warm-up: first calls allocate and fill caches
        for _ in range(3):
            step()
    windows: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (step, rows) in steps.items():
            windows[name].append(time_steps(step, rows, seconds / rounds, device))
    return {name: {"best": max(w), "median": float(np.median(w))} for name, w in windows.items()}


def action_batches(num_envs: int, action_space: gym.Space, count: int = 64) -> list[np.ndarray]:
    """``count`` pre-drawn batches ``[N, *act_shape]`` so that sampling is not timed."""
    space = gym.vector.utils.batch_space(action_space, num_envs)
    space.seed(0)
    return [np.asarray(space.sample()) for _ in range(count)]


def cycling(step: Callable[[np.ndarray], Any], batches: list[np.ndarray]) -> Callable[[], Any]:
    """A no-argument step that feeds ``batches`` round-robin."""
    index = [0]

    def call() -> Any:
        index[0] = (index[0] + 1) % len(batches)
        return step(batches[index[0]])

    return call


# -- the contenders ----------------------------------------------------------------------
def forward_step(dream_id: str, n: int, device: str) -> Callable[[np.ndarray], Any]:
    """(a): the world model's forward on N states, nothing else: the batched ``predict`` with the
    actions already on the device, or ``predict_host`` where the core steps in numpy (one CPU dream)."""
    core = DreamCore(gym.spec(dream_id).kwargs["checkpoint"], num_envs=n, device=device)
    core.seed(np.random.default_rng(0))
    core.reset_rows()
    model, temp = core.model, core.temperature
    if core.host:
        state, rng = core.state.numpy(), core.host_rng
        return lambda actions: model.predict_host(state, actions.reshape(n), generator=rng, temperature=temp)
    fixed = {}

    def step(actions: np.ndarray) -> Any:
        if "a" not in fixed:
            fixed["a"] = torch.as_tensor(actions, device=core.device)
        return model.predict(core.state, fixed["a"], generator=core.generator, temperature=temp)

    return step


def vector_step(dream_id: str, n: int, device: str) -> Callable[[np.ndarray], Any]:
    """(b): ``DreamVectorEnv``."""
    envs = gym.make_vec(dream_id, num_envs=n, device=device)
    envs.reset(seed=0)
    return envs.step


def sb3_step(dream_id: str, n: int, device: str) -> Callable[[np.ndarray], Any]:
    """(c): ``DreamSB3VecEnv``."""
    from learned_envs.sb3 import make_vec_env

    venv = make_vec_env(dream_id, n_envs=n, seed=0, monitor=False, device=device)
    venv.reset()
    return venv.step


def dummy_step(dream_id: str, n: int, device: str) -> Callable[[np.ndarray], Any]:
    """(d): SB3 ``DummyVecEnv`` over N single ``DreamEnv``s."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make(dream_id, device=device)] * n)
    venv.seed(0)
    venv.reset()
    return venv.step


def real_step(env_id: str, n: int) -> Callable[[np.ndarray], Any]:
    """(e): the real env's own vector env (its vector entry point, else SyncVectorEnv)."""
    mode = "vector_entry_point" if gym.spec(env_id).vector_entry_point else "sync"
    envs = gym.make_vec(env_id, num_envs=n, vectorization_mode=mode)
    envs.reset(seed=0)
    return envs.step


# mbrl-lib 0.2.0's MBPO model defaults (its conf/dynamics_model/gaussian_mlp_ensemble.yaml), as
# benchmarks/fit_speed.py fits them: (members, elites, hidden layers, width).
MBPO_SIZES = (7, 5, 4, 200)


def mbrl_step(dream_id: str, n: int, device: str, termination: bool = False,
              mbpo_sizes: bool = False) -> Callable[[np.ndarray], Any] | None:
    """(f): mbrl-lib's ``ModelEnv`` over an ensemble of the dream's sizes, or None without mbrl-lib.

    With ``termination`` (g), its ``termination_fn`` is the dream's own learned termination head
    (support clip, normalisation, MLP), so the peer does the same work per step as the dream.
    With ``mbpo_sizes`` (h), the ensemble has the peer's own default sizes (``MBPO_SIZES``), its
    elites set as its trainer sets them, so ``random_model`` sends each row through one elite.
    """
    try:
        import mbrl.models as models
        import omegaconf
    except ImportError:
        return None
    meta = read_metadata(gym.spec(dream_id).kwargs["checkpoint"])
    c = meta["model"]["config"]
    size, members, layers, width = MBPO_SIZES if mbpo_sizes else (c["ensemble_size"], c["ensemble_size"], c["num_layers"], c["hidden_size"])
    ensemble = models.GaussianMLP(
        in_size=c["obs_dim"] + c["action_dim"], out_size=c["obs_dim"] + 1, device=str(resolve_device(device)),
        num_layers=layers, ensemble_size=size, hid_size=width, deterministic=False,
        propagation_method="random_model", learn_logvar_bounds=False,
        activation_fn_cfg=omegaconf.OmegaConf.create({"_target_": "torch.nn.SiLU"}))
    dynamics = models.OneDTransitionRewardModel(ensemble, target_is_delta=True, normalize=True, learned_rewards=True, num_elites=members)
    if members < size:
        dynamics.set_elite(range(members))
    source = gym.make(meta["source_env_id"])
    if termination:
        head = load_checkpoint(gym.spec(dream_id).kwargs["checkpoint"], device=str(resolve_device(device))).model
        done_fn = lambda a, o: (head.termination_logit(o) > 0)[:, None]  # noqa: E731
    else:
        done_fn = lambda a, o: torch.zeros(len(o), 1, dtype=torch.bool, device=o.device)  # noqa: E731
    env = models.ModelEnv(source, dynamics, termination_fn=done_fn,
                          generator=torch.Generator(device=resolve_device(device)).manual_seed(0))
    rows = -(-n // members) * members
    start = np.zeros((rows, c["obs_dim"]), dtype=np.float32)
    state = {"s": env.reset(start), "t": 0}
    discrete = bool(c["discrete_actions"])

    def step(actions: np.ndarray) -> Any:
        act = np.resize(np.asarray(actions), rows) if discrete else np.resize(np.asarray(actions, np.float32), (rows, c["action_dim"]))
        if discrete:  # the peer takes Box actions: one-hot, as the dream's model sees them
            act = np.eye(c["action_dim"], dtype=np.float32)[act]
        state["t"] += 1
        if state["t"] % PEER_EPISODE == 0:  # its untrained ensemble would drift to overflow otherwise
            state["s"] = env.reset(start)
        obs, reward, done, state["s"] = env.step(act, state["s"], sample=True)
        return obs

    step.rows = rows  # type: ignore[attr-defined]
    return step


CONTENDERS = ["forward", "vector", "sb3", "dummy", "real", "mbrl", "mbrl_term", "mbrl_mbpo"]


def throughput(dream_id: str, source_env: str | None, sizes: list[int], seconds: float, rounds: int,
               device: str) -> list[dict[str, Any]]:
    """One row per N: steps/s of (a)-(g), timed interleaved (:func:`time_interleaved`), and the ratios."""
    space = gym.make(dream_id).action_space
    dev = resolve_device(device)
    rows = []
    for n in sizes:
        batches = action_batches(n, space)
        builds: dict[str, Callable[[], Any] | None] = {
            "forward": lambda: forward_step(dream_id, n, device),
            "vector": lambda: vector_step(dream_id, n, device),
            "sb3": lambda: sb3_step(dream_id, n, device),
            "dummy": lambda: dummy_step(dream_id, n, device) if n <= DUMMY_MAX_N else None,
            "real": lambda: real_step(source_env, n) if source_env else None,
            "mbrl": lambda: mbrl_step(dream_id, n, device),
            "mbrl_term": lambda: mbrl_step(dream_id, n, device, termination=True),
            "mbrl_mbpo": lambda: mbrl_step(dream_id, n, device, termination=True, mbpo_sizes=True),
        }
        steps: dict[str, tuple[Callable[[], Any], int]] = {}
        for name, build in builds.items():
            step = build()
            if step is not None:
                steps[name] = (cycling(step, batches), getattr(step, "rows", n))
        # The real env is not on the dream's device and ~50x faster: it gets its own windows.
        real = steps.pop("real", None)
        timed = time_interleaved(steps, seconds * len(steps), rounds, dev)
        if real is not None:
            timed["real"] = time_interleaved({"real": real}, seconds, rounds, torch.device("cpu"))["real"]
        row: dict[str, Any] = {"N": n, "mbrl_rows": steps["mbrl"][1] if "mbrl" in steps else None}
        for name in CONTENDERS:
            row[name] = timed[name]["best"] if name in timed else None
            row[f"{name}_median"] = timed[name]["median"] if name in timed else None
        ratio = lambda a, b: None if row[a] is None or row[b] is None else row[a] / row[b]  # noqa: E731
        row.update({"vector/forward": ratio("vector", "forward"), "sb3/forward": ratio("sb3", "forward"),
                    "sb3/dummy": ratio("sb3", "dummy"), "vector/real": ratio("vector", "real"), "vector/mbrl": ratio("vector", "mbrl"),
                    "vector/mbrl_term": ratio("vector", "mbrl_term"), "vector/mbrl_mbpo": ratio("vector", "mbrl_mbpo")})
        median = lambda a, b: None if row[f"{a}_median"] is None or row[f"{b}_median"] is None else row[f"{a}_median"] / row[f"{b}_median"]  # noqa: E731
        row.update({f"vector/{peer} (medians)": median("vector", peer) for peer in ("mbrl", "mbrl_term", "mbrl_mbpo")})
        rows.append(row)
        print(f"  N={n}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if k != "N" and v is not None), file=sys.stderr)
    return rows


def memory(dream_id: str, steps: int, device: str, num_envs: int = 4096) -> dict[str, Any]:
    """RSS (and CUDA peak) while ``num_envs`` dreams step ``steps`` vector steps: flat means no leak."""
    envs = gym.make_vec(dream_id, num_envs=num_envs, device=device)
    envs.reset(seed=0)
    batches = action_batches(num_envs, envs.single_action_space)
    if envs.core.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    marks = {0: "start", steps // 2: "middle", steps - 1: "end"}
    out: dict[str, Any] = {"num_envs": num_envs, "vector_steps": steps, "env_steps": steps * num_envs}
    start = time.perf_counter()
    for t in range(steps):
        envs.step(batches[t % len(batches)])
        if t in marks:
            out[marks[t]] = rss_mib()
    out["seconds"] = round(time.perf_counter() - start, 1)
    if envs.core.device.type == "cuda":
        out["cuda_max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def ppo_wall_times(dream_id: str, source_env: str | None, steps: int) -> dict[str, Any]:
    """Seconds PPO (zoo hyperparameters, CPU) takes for ``steps`` steps in the dream and in the real env.

    The real env's run comes first and last, bracketing the two dream runs, and the ratios use the
    mean of the two: on a shared machine, load that drifts during the ~5 minutes then weighs on
    both sides of the ratio.
    """
    from stable_baselines3.common.env_util import make_vec_env

    from learned_envs.training import _learn, hyperparameters, train_in_dream, train_in_real

    def seconds(train: Callable[[], Any]) -> float:
        start = time.perf_counter()
        train()
        return round(time.perf_counter() - start, 1)

    out: dict[str, Any] = {"steps": steps}
    real_runs = [seconds(lambda: train_in_real(source_env, steps, progress=False))] if source_env else []
    out["dream_seconds"] = seconds(lambda: train_in_dream(dream_id, steps, progress=False))
    # SB3's own make_vec_env: a DummyVecEnv of gym.make dreams, stepped one by one.
    out["dream_sb3_make_vec_env_seconds"] = seconds(
        lambda: _learn("PPO", hyperparameters("PPO", source_env), lambda n: make_vec_env(dream_id, n_envs=n, seed=0), steps, 0, None))
    if source_env:
        real_runs.append(seconds(lambda: train_in_real(source_env, steps, progress=False)))
        out["real_runs_seconds"] = real_runs
        out["real_seconds"] = round(float(np.mean(real_runs)), 1)
        out["dream/real"] = round(out["dream_seconds"] / out["real_seconds"], 2)
        out["dream_sb3_make_vec_env/real"] = round(out["dream_sb3_make_vec_env_seconds"] / out["real_seconds"], 2)
    return out


# -- report -------------------------------------------------------------------------------
def fmt(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if ratio else f"{value:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    head = ["N", "(a) forward", "(b) vector", "(c) sb3", "(d) dummy", "(e) real", "(f) mbrl-lib", "(g) mbrl-lib + term.",
            "(h) mbrl-lib MBPO sizes", "b/a", "c/a", "c/d", "b/e", "b/f", "b/g", "b/h"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["throughput"]:
        cells = [str(r["N"])] + [fmt(r.get(k)) for k in CONTENDERS]
        cells += [fmt(r.get(k), ratio=True) for k in ("vector/forward", "sb3/forward", "sb3/dummy", "vector/real", "vector/mbrl",
                                                      "vector/mbrl_term", "vector/mbrl_mbpo")]
        lines.append("| " + " | ".join(cells) + " |")
    m = result.get("memory")
    if m:
        lines.append(
            f"\nMemory, {m['num_envs']} dreams x {m['vector_steps']} steps ({m['env_steps']:,} env steps, {m['seconds']} s): "
            f"RSS {m['start']['rss_mib']} -> {m['middle']['rss_mib']} -> {m['end']['rss_mib']} MiB, peak {m['end']['peak_rss_mib']} MiB"
            + (f", CUDA peak {m['cuda_max_memory_allocated_mib']} MiB" if "cuda_max_memory_allocated_mib" in m else "")
        )
    p = result.get("ppo")
    if p:
        lines.append(f"\nPPO, {p['steps']:,} steps: dream {p['dream_seconds']} s, through SB3's make_vec_env over gym.make dreams "
                     f"{p['dream_sb3_make_vec_env_seconds']} s, real {p.get('real_seconds', '-')} s "
                     f"(mean of {p.get('real_runs_seconds', '-')}, before and after; dream/real {p.get('dream/real', '-')}, "
                     f"SB3 make_vec_env dream/real {p.get('dream_sb3_make_vec_env/real', '-')})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dream-id", default="Dream-CartPole-v0")
    parser.add_argument("--checkpoint", help="benchmark this checkpoint instead of the registered --dream-id")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per contender and N, split into --rounds windows")
    parser.add_argument("--rounds", type=int, default=8, help="alternating timing windows per N (the best one counts)")
    parser.add_argument("--memory-steps", type=int, default=1000, help="vector steps of 4096 dreams for the memory check (~2-3 minutes on one CPU thread)")
    parser.add_argument("--ppo-steps", type=int, default=100_000, help="0 skips the PPO timing")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, 50 memory steps, 5,000 PPO steps")
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.memory_steps, args.ppo_steps = 0.3, 2, 50, min(args.ppo_steps, 5000)
    torch.set_num_threads(args.threads)
    dream_id = args.dream_id
    if args.checkpoint:
        dream_id = "Bench-Dream-v0"
        learned_envs.register_dream(dream_id, args.checkpoint)
    checkpoint = gym.spec(dream_id).kwargs["checkpoint"]
    source_env = read_metadata(checkpoint).get("source_env_id")

    result: dict[str, Any] = {
        "dream_id": dream_id,
        "checkpoint": str(checkpoint),
        "model": read_metadata(checkpoint).get("model"),
        "source_env": source_env,
        "device": str(resolve_device(args.device)),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        # Which library runs the dream's large member products on the CPU (array_ops.onednn_outruns_mkl).
        "large_cpu_products": "oneDNN" if array_ops.ONEDNN_LINEAR is not None else "MKL",
        "platform": {"python": platform.python_version(), "torch": torch.__version__, "gymnasium": gym.__version__,
                     "machine": platform.machine(), "processor": platform.processor()},
        "args": vars(args),
        "units": "environment steps per second",
    }
    # Memory first: the process's peak RSS (VmHWM) must not include the throughput runs'
    # hundreds of single dreams, each with its own copy of the model.
    if args.memory_steps > 0:
        print(f"memory: 4096 dreams x {args.memory_steps} steps", file=sys.stderr)
        result["memory"] = memory(dream_id, args.memory_steps, args.device)
    print(f"throughput of {dream_id} on {result['device']}", file=sys.stderr)
    result["throughput"] = throughput(dream_id, source_env, args.sizes, args.seconds, args.rounds, args.device)
    if args.ppo_steps > 0:
        result["ppo"] = ppo_wall_times(dream_id, source_env, args.ppo_steps)
    print(markdown(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
