"""The transformers Auto classes and chat messages load and drive a vla-stack checkpoint
(components/hf.py): the article's usage gives the same chunk as Policy.sample."""
import numpy as np
import pytest
import torch
from PIL import Image

import components.hf  # noqa: F401  (registers with the Auto classes)
from components.errors import UsageError
from components.hf import PromptMismatchError, VLAStackConfig, VLAStackModel, VLAStackProcessor
from components.policy import ObservationError, Policy
from components.config_files import asset_path

DEFAULT = str(asset_path("default_policy"))
ARTICLE_PROMPT = """You are controlling a 7-DOF ALOHA dual-arm robot.
Action space: [left_joint_0..6, right_joint_0..6, left_gripper, right_gripper].
Actions are normalized joint positions in range [-1, 1]."""


def article_snippet(directory: str, embodiment_prompt: str, image: Image.Image, task: str, state):
    """The Qwen-VLA article's snippet: local directory instead of a hub name, CPU, float32, a state."""
    from transformers import AutoModelForCausalLM, AutoProcessor
    processor = AutoProcessor.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, device_map="cpu")
    messages = [
        {"role": "system", "content": embodiment_prompt},
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": task}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], state=[state], return_tensors="pt").to("cpu")
    with torch.no_grad():
        outputs = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    return processor.decode_action(outputs[0])


def test_auto_classes_resolve_to_the_project_classes():
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
    assert isinstance(AutoConfig.from_pretrained(DEFAULT), VLAStackConfig)
    assert isinstance(AutoProcessor.from_pretrained(DEFAULT), VLAStackProcessor)
    assert isinstance(AutoModel.from_pretrained(DEFAULT), VLAStackModel)
    assert isinstance(AutoModelForCausalLM.from_pretrained(DEFAULT), VLAStackModel)


def test_article_snippet_gives_the_policy_chunk_on_the_shipped_default():
    processor = VLAStackProcessor.from_pretrained(DEFAULT)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    state = rng.uniform(-0.5, 0.5, 14)
    chunk = article_snippet(DEFAULT, processor.embodiment_prompt("aloha"), Image.fromarray(image),
                            "transfer the cube to the other arm", state)
    expected = Policy.from_pretrained(DEFAULT).sample({"images": {"top": image}, "state": state}, "aloha",
                                                      "transfer the cube to the other arm", seed=0)
    assert chunk.shape == (50, 14)
    np.testing.assert_array_equal(chunk, expected[0])


@pytest.mark.parametrize("embodiment", ["fetch", "wheeled", "aloha"])
def test_every_embodiment_and_k_samples_match_the_policy(tiny_checkpoint, policy, embodiment):
    from transformers import AutoModel, AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    model = AutoModel.from_pretrained(tiny_checkpoint)
    spec = policy.processor.embodiments[embodiment]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras]
    state = rng.uniform(-0.1, 0.1, spec.state_dim) if spec.state_dim else None
    messages = [{"role": "system", "content": embodiment},  # the embodiment's name stands for its prompt
                {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": "go"}]}]
    text = processor.apply_chat_template(messages)
    inputs = processor(text=text, images=images, state=None if state is None else [state])
    chunks = processor.decode_action(model.generate(**inputs, num_samples=3, seed=11)[0])
    obs = {"images": {c.name: img for c, img in zip(spec.cameras, images)}, "state": state}
    np.testing.assert_allclose(chunks, policy.sample(obs, embodiment, "go", num_samples=3, seed=11), atol=1e-6)
    lows = np.array([s.low for s in spec.action_slots])
    highs = np.array([s.high for s in spec.action_slots])
    assert ((chunks >= lows) & (chunks <= highs)).all()


def test_a_hand_written_system_prompt_is_refused_showing_the_closest():
    processor = VLAStackProcessor.from_pretrained(DEFAULT)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "pick up the cup"}]}
    with pytest.raises(PromptMismatchError, match=r"closest generated prompt \(aloha\):\nYou are controlling a "
                                                  r"bimanual ALOHA robot"):
        processor.apply_chat_template([{"role": "system", "content": ARTICLE_PROMPT}, user])
    edited = processor.embodiment_prompt("aloha").replace("-3.15 to 3.15", "-1 to 1")
    with pytest.raises(PromptMismatchError):
        processor.apply_chat_template([{"role": "system", "content": edited}, user])
    # the generated prompt with other line breaks / spacing is the same prompt
    spaced = processor.embodiment_prompt("aloha").replace("\n", "\n\n  ")
    assert processor.apply_chat_template([{"role": "system", "content": spaced}, user]).startswith(
        "<|im_start|>system\n" + processor.embodiment_prompt("aloha"))


def test_bad_chat_inputs_are_clear_errors():
    processor = VLAStackProcessor.from_pretrained(DEFAULT)
    system = {"role": "system", "content": "aloha"}
    two_images = {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "x"}]}
    with pytest.raises(UsageError, match=r"2 image\(s\); embodiment 'aloha' has 1 camera\(s\) \['top'\]"):
        processor.apply_chat_template([system, two_images])
    with pytest.raises(UsageError, match=r"expected roles \['system', 'user'\]"):
        processor.apply_chat_template([two_images])
    with pytest.raises(UsageError, match=r"0 image\(s\)"):
        processor.apply_chat_template([system, {"role": "user", "content": "transfer the cube"}])
    text = processor.apply_chat_template([system, {"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "transfer the cube"}]}])
    image = np.zeros((10, 12, 3), np.uint8)  # another size: resized to the camera's
    with pytest.raises(ObservationError, match=r"reads the robot's state \(14 values"):
        processor(text=[text], images=[image])
    with pytest.raises(UsageError, match="needs 1 image"):
        processor(text=[text], images=[], state=[np.zeros(14)])
    with pytest.raises(UsageError, match="rendered by processor.apply_chat_template"):
        processor(text=["hello"], images=[image], state=[np.zeros(14)])
    assert processor(text=[text], images=[image], state=[np.zeros(14)])["input_ids"].shape[0] == 1
