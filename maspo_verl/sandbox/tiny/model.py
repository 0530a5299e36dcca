"""A tiny random-weight Qwen2 and its tokenizer, written as a Hugging Face model directory.

Built from a `Qwen2Config` (no download): verl loads the directory like any model path
(`actor_rollout_ref.model.path=<dir>`). The same seed gives the same weights, so runs that
compare methods start from identical initial weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from maspo_verl.sandbox.tiny.tokenizer import save_tokenizer, vocabulary_size

__all__ = ["TinyModelSize", "build_tiny_model", "count_parameters", "write_tiny_model"]


@dataclass(frozen=True)
class TinyModelSize:
    """Architecture of the tiny Qwen2 (defaults: ~0.1M parameters, a few seconds a GRPO step on CPU)."""

    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 128


def build_tiny_model(size: TinyModelSize = TinyModelSize(), seed: int = 0):
    """A float32 `Qwen2ForCausalLM` with random weights drawn under `seed`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from maspo_verl.sandbox.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=vocabulary_size(),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **asdict(size),
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def count_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def write_tiny_model(directory: str | Path, size: TinyModelSize = TinyModelSize(), seed: int = 0, model=None) -> Path:
    """Write the tiny model (or `model`, e.g. after a warm-up) and its tokenizer to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(size, seed) if model is None else model
    model.save_pretrained(str(directory))
    tokenizer = save_tokenizer(directory)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.save_pretrained(str(directory))
    return directory
