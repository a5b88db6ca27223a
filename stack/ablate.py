"""``vla-stack ablate --arms ARMS.yaml``: several decision arms (K, world model, scorer, verify) on the same
seeds, in one env with one policy, through the same ``run_episode`` loop and executor settings.

Writes ``ablation.json`` (per arm: successes, Wilson ci95, the paired exact McNemar p-value against the
first arm on the same seeds, latencies, per-seed outcomes), ``ablation.md`` (the table) and
``ablation.png`` (success with intervals) into ``--out`` (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from components.errors import ConfigError, ConfigNotFoundError, UsageError, yaml_problem
from stack.results import latency_summary, mcnemar_exact, success_plot, wilson_interval, write_json, write_text
from stack.runner import Arm, rank_summary

ARM_KEYS = [f.name for f in dataclasses.fields(Arm)]


def read_arms(path: str) -> list:
    """The arms of a YAML file: a list of mappings with ``name`` and any of the ``Arm`` fields."""
    import yaml

    if not Path(path).is_file():
        raise ConfigNotFoundError(f"--arms: '{path}' does not exist")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"--arms: {path}: {yaml_problem(err)}") from err
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"--arms: {path} must be a non-empty YAML list of arms (name, candidates, "
                          f"world_model, scorer, verify, ...), got {type(raw).__name__}")
    arms, names = [], set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"--arms: {path}: arm {i} must be a mapping with a 'name', got {entry!r}")
        unknown = sorted(set(entry) - set(ARM_KEYS))
        if unknown:
            raise ConfigError(f"--arms: {path}: arm '{entry['name']}' has unknown key(s) {unknown}; known: {ARM_KEYS}")
        if entry["name"] in names:
            raise ConfigError(f"--arms: {path}: two arms are named '{entry['name']}'")
        names.add(entry["name"])
        arm = Arm(**{**entry, "world_model": str(entry.get("world_model", "none"))})
        try:
            arm.check()
        except UsageError as err:
            raise ConfigError(f"--arms: {path}: arm '{arm.name}': {err}") from err
        arms.append(arm)
    return arms


def _rank_cells(rank: dict | None) -> str:
    """``mean Spearman | top-1 agreement`` of an arm run with ``rank_agreement``, else dashes."""
    if rank is None:
        return "- | -"
    rho = rank["spearman_mean"]
    return f"{'-' if rho is None else format(rho, '.2f')} | {rank['top1_agreement']:.2f}"


def _table(rows: list[dict], env: str, seeds: list[int]) -> str:
    ranked = any(r["rank_agreement"] for r in rows)
    lines = [f"Ablation on {env}, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} episodes, the same for every arm)", "",
             "| arm | K | world model | scorer | verify | success | 95% CI | McNemar p vs first | decision p50 ms "
             "| imagine p50 ms | surprise replans |" + (" Spearman | top-1 |" if ranked else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if ranked else "")]
    for r in rows:
        dec, im = r["decision_ms"], r["imagine_ms"]
        lines.append(f"| {r['name']} | {r['candidates']} | {r['world_model']} | {r['scorer'] or '-'} | {r['verify']} "
                     f"| {r['successes']}/{r['episodes']} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
                     f"| {r['mcnemar_p']:.3g} | {dec['p50'] if dec else float('nan'):.0f} "
                     f"| {format(im['p50'], '.0f') if im else '-'} | {r['surprise_replans']} |"
                     + (f" {_rank_cells(r['rank_agreement'])} |" if ranked else ""))
    return "\n".join(lines) + "\n"


def ablate(arms: str, env: str, policy: str, out: str, episodes: int = 20, seed: int = 0,
           execute_horizon: int | None = None, max_steps: int | None = None, env_kwargs: dict | None = None,
           num_flow_steps: int | None = None, decoder: str = "torch") -> dict:
    """Compare decision arms (K candidates, world model, scorer, verify) on the same seeds.

    Every arm executes its chosen chunk for the same ``execute_horizon`` steps without temporal ensembling,
    so a K = 1 arm is the fair control. Writes ablation.json, ablation.md and ablation.png into ``out``.

    Args:
        arms: YAML list of arms, e.g. ``- {name: k1, candidates: 1}`` and
            ``- {name: oracle8, candidates: 8, world_model: oracle, scorer: oracle_outcome}``; keys: the
            options of ``vla-stack run`` of the same names.
        env: environment id, e.g. vla_stack/FetchPush-v0.
        policy: checkpoint directory.
        out: directory for the table, JSON and plot.
        episodes: episodes per arm; episode i is reset with seed ``seed + i`` in every arm.
        seed: seed of the first episode.
        execute_horizon: env steps per decision, the same for every arm (default per action kind).
        max_steps: cap on env steps per episode.
        env_kwargs: keyword arguments of gym.make.
        num_flow_steps: Euler steps of the action decoder (default: the checkpoint's).
        decoder: "torch" or "onnx".
    """
    import gymnasium as gym

    from stack.runner import _check_inputs, evaluate, executor_settings, load_policy, make_decider

    arm_list = read_arms(arms)
    if episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {episodes}")
    embodiment = _check_inputs(env, policy)
    pol, spec = load_policy(policy, decoder, embodiment, env)
    horizon, _ = executor_settings(spec, execute_horizon, False, imagines=True)
    seeds = [seed + i for i in range(episodes)]
    environment = gym.make(env, **(env_kwargs or {}))
    rows = []
    with contextlib.ExitStack() as stack:
        stack.callback(environment.close)
        deciders = [make_decider(a, pol, embodiment, spec, environment, horizon, num_flow_steps) for a in arm_list]
        for arm, decider in zip(arm_list, deciders):
            records = evaluate(environment, decider, spec, seeds, horizon=horizon, temporal_ensemble=False,
                               max_steps=max_steps, desc=arm.name)
            outcomes = [r.success for r in records]
            decisions = [d for r in records for d in r.decisions]
            k = sum(outcomes)
            rows.append({
                **dataclasses.asdict(arm), "episodes": len(records), "successes": k, "success_rate": k / len(records),
                "ci95": list(wilson_interval(k, len(records))),
                "mcnemar_p": mcnemar_exact(rows[0]["per_seed_success"], outcomes) if rows else 1.0,
                "decision_ms": latency_summary([ms for r in records for ms in r.decision_ms]),
                "policy_ms": latency_summary([ms for r in records for ms in r.policy_ms]),
                "imagine_ms": latency_summary([d["imagine_ms"] for d in decisions if d["imagine_ms"] is not None]),
                "score_ms": latency_summary([d["score_ms"] for d in decisions]),
                "replans": sum(r.replans for r in records),
                "surprise_replans": sum(r.surprise_replans for r in records),
                "rank_agreement": rank_summary(decisions),
                "per_seed_success": outcomes,
            })
    result = {"env": env, "policy": str(policy), "embodiment": embodiment, "seeds": seeds,
              "execute_horizon": horizon, "temporal_ensemble": False, "max_steps": max_steps, "arms": rows}
    out_dir = Path(out)
    write_json(result, out_dir / "ablation.json")
    table = _table(rows, env, seeds)
    write_text(table, out_dir / "ablation.md")
    success_plot(rows, out_dir / "ablation.png", title=f"{env}: success (95% Wilson CI)")
    print(table)
    return result
