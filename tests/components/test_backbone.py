import numpy as np
import pytest
import torch

from components.backbone import Backbone, BackboneConfig, build_hf_config, load_tokenizer, make_image_processor
from components.vla import VLA, load_model_config


@pytest.fixture(scope="module")
def local_checkpoint(tmp_path_factory):
    """A Qwen3.5 checkpoint directory as transformers writes it: weights, tokenizer, image processor."""
    path = tmp_path_factory.mktemp("qwen3_5_local")
    tiny = load_model_config("tiny").backbone
    torch.manual_seed(5)
    from transformers import Qwen3_5ForConditionalGeneration
    model = Qwen3_5ForConditionalGeneration(build_hf_config(tiny.hf_config))
    model.save_pretrained(path)
    load_tokenizer(tiny).save_pretrained(path)
    processor = make_image_processor(tiny)
    processor.image_mean = [0.5, 0.5, 0.5]
    processor.save_pretrained(path)
    return path, model


def test_path_source_loads_model_tokenizer_and_image_processor(local_checkpoint):
    path, reference = local_checkpoint
    cfg = load_model_config("tiny", {"backbone": {"source": "path", "path": str(path), "image_size": [64, 96]}})
    vla = VLA(cfg)
    ours = dict(vla.backbone.model.named_parameters())
    theirs = dict(reference.model.named_parameters())
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    tokenizer = load_tokenizer(cfg.backbone)
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == vla.backbone.image_token_id
    processor = make_image_processor(cfg.backbone)
    assert list(processor.image_mean) == [0.5, 0.5, 0.5]  # the checkpoint's, not a default
    out = processor(images=[np.zeros((64, 96, 3), np.uint8)], return_tensors="np")
    assert out["image_grid_thw"].tolist() == [[1, 4, 6]]


def test_missing_local_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a transformers checkpoint directory"):
        Backbone(BackboneConfig(source="path", path=str(tmp_path)))


def test_image_size_must_fit_the_patch_grid():
    cfg = load_model_config("tiny", {"backbone": {"image_size": [100, 128]}}).backbone
    with pytest.raises(ValueError, match=r"image_size \(100, 128\) must be a multiple of patch_size x merge_size = 32"):
        make_image_processor(cfg)
