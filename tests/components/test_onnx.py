import numpy as np
import torch

from components.onnx_export import DecoderSampler, OnnxDecoder, example_inputs, export_decoder
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


def test_policy_runs_its_decoder_through_onnxruntime(tiny_checkpoint, tmp_path, policy):
    from stack.commands import export
    out = export(tiny_checkpoint, str(tmp_path / "exported"))
    onnx_policy = Policy.from_pretrained(out, decoder="onnx")
    assert onnx_policy.onnx_decoder is not None
    for name in ["aloha", "wheeled"]:
        obs = observation(policy, name)
        a = policy.sample(obs, name, "reach", num_samples=4, seed=7)
        b = onnx_policy.sample(obs, name, "reach", num_samples=4, seed=7)
        assert np.abs(a - b).max() < 1e-3 * max(1.0, np.abs(a).max())
