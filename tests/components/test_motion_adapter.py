"""The motion adapter (components/dit.py): gated to the embodiments with its cameras, exported with
the decoder, and an exact no-op for everything else."""
import copy

import numpy as np
import torch

from components.onnx_export import DecoderSampler, OnnxDecoder, example_inputs, export_decoder
from components.vla import VLA, load_model_config

MOTION = {"decoder": {"motion_adapter": ["front", "past"]}}


def perturbed(vla):
    torch.manual_seed(3)
    with torch.no_grad():  # away from the zero-initialised layers (adaLN-Zero, the adapter's last)
        for p in vla.decoder.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return vla


def motion_batch(datamodule):
    processor = copy.copy(datamodule.processor)
    processor.set_motion(["front", "past"], (45, 80))
    ds = datamodule.train_set
    samples, names = [], []
    for j in range(len(ds.paths)):  # one sample of every embodiment, encoded with the motion frames
        spec = processor.embodiments[ds.store(j).embodiment]
        frame = ds.store(j).get_frame(int(ds.frames[j][0]), ["state"] + [f"images/{c}" for c in spec.camera_names])
        samples.append(processor.encode_observation(frame["images"], frame["state"], frame["instruction"], spec.name))
        names.append(spec.name)
    return processor, processor.collate(samples), names


def test_processor_adds_motion_frames_only_for_embodiments_with_the_cameras(datamodule):
    processor, batch, names = motion_batch(datamodule)
    assert batch["motion_frames"].shape == (len(names), 2, 3, 45, 80) and batch["motion_frames"].dtype == torch.uint8
    for i, name in enumerate(names):
        assert float(batch["motion_gate"][i]) == (1.0 if name == "video" else 0.0)
        if name != "video":
            assert not batch["motion_frames"][i].any()
    assert batch["motion_frames"][names.index("video")].any()
    assert "motion_gate" not in datamodule.processor.collate([datamodule.train_set[0]])  # off unless asked for


def test_motion_adapter_is_an_exact_no_op_for_other_embodiments(datamodule):
    _, batch, names = motion_batch(datamodule)
    torch.manual_seed(0)
    with_adapter = perturbed(VLA(load_model_config("tiny", MOTION)))
    without = VLA(load_model_config("tiny"))
    without.load_state_dict({k: v for k, v in with_adapter.state_dict().items() if "motion_adapter" not in k})
    noise = torch.randn(len(names), 2, 8, with_adapter.config.decoder.action_dim)
    a = with_adapter.sample(batch, 8, 2, noise=noise)
    b = without.sample({k: v for k, v in batch.items() if not k.startswith("motion_")}, 8, 2, noise=noise)
    for i, name in enumerate(names):
        if name == "video":
            assert (a[i] - b[i]).abs().max() > 1e-3  # the adapter steers the video sample
        else:
            assert torch.equal(a[i], b[i]), name
    frames = batch["motion_frames"].clone()
    frames[names.index("video")] = 255 - frames[names.index("video")]
    moved = with_adapter.sample({**batch, "motion_frames": frames}, 8, 2, noise=noise)
    assert (moved[names.index("video")] - a[names.index("video")]).abs().max() > 1e-3  # it reads the frames


def test_exported_decoder_carries_the_motion_adapter(tmp_path):
    torch.manual_seed(0)
    dit = VLA(load_model_config("tiny", MOTION)).decoder
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    onnx = OnnxDecoder(export_decoder(dit, num_steps=3, path=tmp_path / "decoder.onnx"))
    assert "motion" in {i.name for i in onnx.session.get_inputs()}
    inputs = list(example_inputs(dit, batch=2, k=3, horizon=8, length=20))
    with torch.no_grad():
        ref = DecoderSampler(dit, 3)(*inputs).numpy()
        moved = [t.clone() for t in inputs]
        moved[7][:, :-1] += 1.0
        moved_ref = DecoderSampler(dit, 3)(*moved).numpy()
    assert np.abs(onnx(*inputs) - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    assert np.abs(moved_ref - ref).max() > 1e-3
