"""The tokenizer of the tiny configuration: a byte-level BPE trained by this project.

Real checkpoints bring their own tokenizer; the tiny model needs a small one so its embedding
table stays small. It is trained on the embodiment prompts and instruction vocabulary and
committed under ``components/assets/tiny_tokenizer``; ``train_tiny_tokenizer`` rebuilds it.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TINY_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tiny_tokenizer"
# The Qwen chat and vision markers, so tiny and real checkpoints build prompts the same way.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

_WORDS = """
pick up place put push pull open close insert move go to the a an and with into onto on in at of from
left right arm arms hand gripper cube block peg socket target red green blue black white yellow
cup plate tray bottle drawer door table counter shelf box bowl towel kitchen bedroom bathroom
living room hallway corridor office lobby stairs entrance hall garage dining study lab storage
navigate reach stop turn forward backward around through toward towards until next first then
camera image robot base waypoint trajectory predict future follow path avoid obstacles person car
transfer hand over handover lift lower grasp release rotate slide stack sort fold wipe pour
""".split()


def _corpus() -> list[str]:
    from components.embodiment import Embodiments
    prompts = [spec.prompt() for spec in Embodiments.from_config_dir()]
    sentences = [" ".join(_WORDS[i:i + 12]) for i in range(0, len(_WORDS), 6)]
    return prompts * 20 + sentences * 5 + _WORDS


def train_tiny_tokenizer(out_dir: str | Path = TINY_TOKENIZER_DIR, vocab_size: int = 1024) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir
