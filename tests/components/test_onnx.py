import json

import numpy as np
import pytest
import torch

from components.errors import CheckpointNotFoundError, UsageError

from components.onnx_export import DecoderSampler, OnnxDecoder, PromptTooLongError, example_inputs, export_decoder
from components.policy import Policy
from tests.components.test_policy import observation


def test_exported_decoder_matches_torch_within_1e_4(policy, tmp_path):
    import copy
    dit = copy.deepcopy(policy.vla.decoder)
    assert dit.cfg.image_readout > 0
    with torch.no_grad():  # the image readout at full strength, so the export must carry it
        dit.readout[2].weight.normal_(std=0.2)
    path = export_decoder(dit, num_steps=4, path=tmp_path / "decoder.onnx")
    onnx = OnnxDecoder(path)
    for shape in [dict(batch=1, k=1, horizon=8, length=40), dict(batch=2, k=5, horizon=50, length=17)]:
        inputs = example_inputs(dit, **shape)
        inputs[2][-1, -3:] = 0  # padded prefix tokens
        with torch.no_grad():
            ref = DecoderSampler(dit, 4)(*inputs).numpy()
        got = onnx(*inputs)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4


def test_policy_runs_whole_through_onnxruntime(tiny_checkpoint, tmp_path, policy):
    from stack.commands import export
    out = export(tiny_checkpoint, str(tmp_path / "exported"), num_steps=4, embodiment=["aloha", "wheeled"],
                 instruction_tokens=8)
    index = json.loads((tmp_path / "exported" / "backbone" / "index.json").read_text())
    assert sorted(index) == ["aloha", "wheeled"]
    decoder_only = Policy.from_pretrained(out, decoder="onnx")
    whole = Policy.from_pretrained(out, runtime="onnxruntime")
    assert decoder_only.onnx_backbone is None and whole.onnx_backbone is not None
    for name in ["aloha", "wheeled"]:
        obs = observation(policy, name)
        a = policy.sample(obs, name, "reach", num_samples=4, num_steps=4, seed=7)
        for exported in (decoder_only, whole):
            b = exported.sample(obs, name, "reach", num_samples=4, num_steps=4, seed=7)
            assert np.abs(a - b).max() < 1e-3 * max(1.0, np.abs(a).max())
    with pytest.raises(UsageError, match="no graph for embodiment 'fetch'"):
        whole.sample(observation(policy, "fetch"), "fetch", "reach", seed=0)
    # a prompt longer than the captured length is refused, never truncated
    fits = "reach " * 2
    whole.sample(observation(policy, "aloha"), "aloha", fits, seed=0)
    with pytest.raises(PromptTooLongError, match=r"captured at \d+; shorten the instruction or re-export"):
        whole.sample(observation(policy, "aloha"), "aloha", "reach the red target " * 20, seed=0)


def test_whole_policy_runtime_needs_the_backbone_graphs(tiny_checkpoint):
    with pytest.raises(CheckpointNotFoundError, match=r"no exported graph \(decoder.onnx\) for "
                                                      r"runtime='onnxruntime'"):
        Policy.from_pretrained(tiny_checkpoint, runtime="onnxruntime")
    with pytest.raises(UsageError, match="runtime must be one of"):
        Policy.from_pretrained(tiny_checkpoint, runtime="tensorrt")


def test_exported_decoder_carries_the_slot_adapter(subgoal_checkpoint, tmp_path):
    import copy
    dit = copy.deepcopy(Policy.from_pretrained(subgoal_checkpoint).vla.decoder)
    torch.manual_seed(0)
    with torch.no_grad():  # away from the zero-initialized layers (adaLN-Zero, the adapter's output)
        for param in dit.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    onnx = OnnxDecoder(export_decoder(dit, num_steps=3, path=tmp_path / "decoder.onnx"))
    inputs = list(example_inputs(dit, batch=2, k=3, horizon=8, length=20))
    inputs[4][1, dit.adapter_slots] = 0  # the second sample has no subgoal slots: the adapter is off for it
    with torch.no_grad():
        ref = DecoderSampler(dit, 3)(*inputs).numpy()
        inputs_moved = [t.clone() for t in inputs]
        inputs_moved[3][:, dit.adapter_slots] += 1.0
        moved = DecoderSampler(dit, 3)(*inputs_moved).numpy()
    assert np.abs(onnx(*inputs) - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    assert np.abs(moved[0] - ref[0]).max() > 1e-3  # the subgoal steers the sample
