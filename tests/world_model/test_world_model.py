"""The learned world model: pipeline round trip, refusals, one batched call for K, fit and eval end to end."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from components.embodiment import Camera, Embodiments, Slot
from world_model.base import WorldModelMismatchError
from world_model.learned import LearnedWorldModel, load_world_model
from world_model.pipeline import WorldModelMeta, build_pipeline

REPO = Path(__file__).resolve().parents[2]
SPEC = Embodiments.from_config_dir(["fetch"])["fetch"]
TINY = {"dit": {"dim": 32, "depth": 1, "heads": 2}, "wan": None}


def tiny_model(architecture: str) -> LearnedWorldModel:
    meta = WorldModelMeta(cameras=SPEC.camera_names, frame_height=16, frame_width=16, context_frames=2,
                          num_frames=4, execute_steps=10, embodiments={"fetch": WorldModelMeta.embodiment_entry(SPEC, 0)})
    torch.manual_seed(0)
    pipe = build_pipeline(meta, architecture, vae={"block_out_channels": (8, 16, 16)}, transformer=TINY[architecture])
    for p in pipe.transformer.parameters():  # non-zero everywhere, so actions reach the output
        p.data.add_(0.05 * torch.randn_like(p))
    return LearnedWorldModel(pipe)


def observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {c.name: rng.integers(0, 255, (c.height, c.width, 3), dtype=np.uint8) for c in SPEC.cameras}}


CHUNKS = np.random.default_rng(0).uniform(-1, 1, (3, 10, 4)).astype(np.float32)


@pytest.mark.parametrize("architecture", ["dit", "wan"])
def test_save_load_round_trip_gives_the_same_imagination(architecture, tmp_path):
    model = tiny_model(architecture)
    history = [observation(1), observation(2)]
    before = model.imagine(history, CHUNKS, SPEC, 10, seed=3)
    model.pipeline.save_pretrained(tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm")
    after = loaded.imagine(history, CHUNKS, SPEC, 10, seed=3)
    assert np.array_equal(before.latents, after.latents) and np.array_equal(before.frames, after.frames)
    assert before.latents.shape[:2] == (3, 4) and before.frames.shape == (3, 4, 16, 32, 3)
    assert before.steps == [2, 5, 8, 10] and loaded.meta == model.meta
    assert not np.allclose(before.latents[0], before.latents[1])  # the chunk changes the future
    assert loaded.encode(history[-1], SPEC).shape == before.latents.shape[2:]


def test_k_candidates_are_one_transformer_call_per_scheduler_step():
    model = tiny_model("dit")
    calls = []
    hook = model.pipeline.transformer.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    model.imagine([observation(1)], np.repeat(CHUNKS, 3, axis=0), SPEC, 10, num_inference_steps=5)
    hook.remove()
    assert calls == [9] * 5


def _spec(**changes):
    return dataclasses.replace(SPEC, **changes)


@pytest.mark.parametrize("spec, field", [
    (_spec(cameras=(Camera("front", 120, 160),)), "cameras"),
    (_spec(cameras=(Camera("front", 120, 160), Camera("side", 240, 320))), "frame size of camera 'side'"),
    (_spec(action_slots=SPEC.action_slots[:3] + (Slot("gripper", "gripper_cmd", "", -2.0, 2.0),)), "action slots"),
    (_spec(name="aloha"), "embodiment"),
])
def test_incompatible_policy_is_refused_naming_the_field(spec, field):
    with pytest.raises(WorldModelMismatchError, match=f"{field}.*: the checkpoint has .* needed"):
        tiny_model("dit").check_compatible(spec)


def test_shorter_context_and_other_execute_steps_are_refused():
    model = tiny_model("dit")
    model.check_compatible(SPEC, context_frames=2, execute_steps=10)
    with pytest.raises(WorldModelMismatchError, match="context length: the checkpoint has 2 context frames"):
        model.check_compatible(SPEC, context_frames=1)
    with pytest.raises(WorldModelMismatchError, match="execute steps"):
        model.imagine([observation(1)], CHUNKS, SPEC, 6)


def vla_stack(args, cwd):
    return subprocess.run([sys.executable, "-m", "stack.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


def test_fit_exports_a_pipeline_that_eval_world_model_reads(tmp_path):
    """Both stages as the configs run them: the autoencoder alone, then the transformer on its frozen latents."""
    from diffusers import AutoencoderKL
    from stack.collect import collect
    store = str(tmp_path / "push.zarr")
    collect("vla_stack/FetchPush-v0", episodes=2, out=store)
    common = [f"--data.init_args.datasets=[{store}]", "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
              "--data.init_args.val_episodes=1", "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
              "--model.init_args.frame_height=16", "--model.init_args.frame_width=16"]
    stage1 = vla_stack(["fit", "--config", str(REPO / "configs/train/world_model_vae_tiny.yaml"), *common], tmp_path)
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    fit = vla_stack(["fit", "--config", str(REPO / "configs/train/world_model_tiny.yaml"), *common,
                     '--model.init_args.transformer={dim: 32, depth: 1, heads: 2, patch_size: 2}'], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    pipeline = tmp_path / "runs/wm_tiny/pipeline"
    model = load_world_model(pipeline)
    assert model.meta.embodiments["fetch"]["index"] == 0
    trained = AutoencoderKL.from_pretrained(tmp_path / "runs/wm_vae/autoencoder").state_dict()
    for name, value in model.pipeline.vae.state_dict().items():  # frozen in stage 2: the stage-1 weights
        assert torch.equal(value, trained[name]), name
    report = tmp_path / "eval.json"
    run = vla_stack(["eval-world-model", "--world_model", str(pipeline), "--data", store, "--episodes", "1",
                     "--stride", "10", "--json", str(report)], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["steps"] == [2, 5, 8, 10] and result["windows"] >= 1
    for kind in ("pixel_mse", "latent_mse"):
        assert len(result[kind]["model"]) == len(result[kind]["copy_last"]) == len(result[kind]["shuffled_actions"]) == 4
        assert all(v > 0 for v in result[kind]["model"] + result[kind]["shuffled_actions"])
    assert result["shuffled_windows"] == result["windows"] >= 2


def test_cached_windows_are_the_windows_read_from_the_store(tmp_path):
    """Training windows from the in-memory frame and latent caches equal those read frame by frame."""
    from components.episode_store import EpisodeStore
    from stack.collect import collect
    from world_model.training import WindowSamples, store_latents, store_pixels, window, window_starts
    path = str(tmp_path / "reach.zarr")
    collect("vla_stack/FetchReach-v0", episodes=2, out=path)
    store = EpisodeStore.open(path)
    model = tiny_model("dit")
    meta, vae = model.meta, model.pipeline.vae.eval()
    starts = window_starts(store, [0, 1], meta.execute_steps)
    pixels = WindowSamples([path], [starts], meta, {"fetch": SPEC}, [store_pixels(store, meta, block=7)])
    latents = WindowSamples([path], [starts], meta, {"fetch": SPEC}, [store_latents(store, meta, vae, block=7)],
                            key="latents")
    for i in (0, 3, len(starts) - 1):
        plain = window(store, int(starts[i]), meta, SPEC)
        cached = pixels[i]
        assert torch.allclose(cached["pixels"], plain["pixels"], atol=2e-3)
        for key in ("actions", "time_mask", "dim_mask", "embodiment"):
            assert torch.equal(cached[key], plain[key]), key
        encoded = model.pipeline.encode(plain["pixels"])
        assert torch.allclose(latents[i]["latents"], encoded, atol=5e-3 * (1 + encoded.abs().max()))


def test_action_guidance_extrapolates_from_the_action_free_velocity_in_one_batched_call():
    model = tiny_model("dit")
    history = [observation(1), observation(2)]
    calls = []
    hook = model.pipeline.transformer.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    plain = model.imagine(history, CHUNKS, SPEC, 10, seed=3, num_inference_steps=1).latents
    assert calls == [3]
    out = {}
    for w in (0.0, 1.0, 2.0):
        model.meta.guidance_scale = w
        out[w] = model.imagine(history, CHUNKS, SPEC, 10, seed=3, num_inference_steps=1).latents
    hook.remove()
    assert calls == [3, 6, 3, 6]  # w != 1: conditional and action-free halves in one forward
    np.testing.assert_array_equal(out[1.0], plain)
    # one Euler step is linear in the velocity: w = 2 is twice the conditional minus the action-free future
    np.testing.assert_allclose(out[2.0], 2 * out[1.0] - out[0.0], atol=1e-5)
    assert not np.allclose(out[0.0][0], out[1.0][0], atol=1e-4)  # the action matters to the tiny model


def test_guidance_without_action_dropout_is_refused():
    from components.errors import ConfigError
    from world_model.training import WorldModelModule
    with pytest.raises(ConfigError, match="guidance_scale 2.0 needs model.action_dropout > 0"):
        WorldModelModule(guidance_scale=2.0)
    with pytest.raises(ConfigError, match=r"action_dropout must be in \[0, 1\)"):
        WorldModelModule(action_dropout=1.0)
