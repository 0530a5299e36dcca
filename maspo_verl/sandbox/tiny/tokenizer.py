"""A tiny Qwen2 tokenizer for the arithmetic task, built locally (no download).

It is a real `Qwen2Tokenizer` (byte-level BPE with Qwen's pre-tokenizer and ChatML turns,
`<|im_start|>user\\n...<|im_end|>\\n`) over a vocabulary of a few dozen tokens: digits, the
arithmetic signs, `{`, `}`, space, newline, and `\\boxed` and the role names merged into whole
tokens. verl picks its prompt/response handling by model type, so a Qwen2 model needs a
tokenizer that behaves like Qwen's; `AutoTokenizer.from_pretrained(path)` loads this one back
as the same `Qwen2Tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BOXED_OPEN", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "save_tokenizer", "vocabulary_size"]

PAD, TURN_START, TURN_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, TURN_START, TURN_END)
BOXED_OPEN = "\\boxed{"
# Whole-word tokens, each built by BPE merges from its characters (Qwen's pre-tokenizer keeps
# "\boxed" and each role name in one piece).
WORDS = ("\\boxed", "system", "user", "assistant")
# Byte-level BPE spells space and newline as these two characters.
SPACE, NEWLINE = "\u0120", "\u010a"
SIGNS = ("+", "-", "*", "=", "{", "}", SPACE, NEWLINE)

# Qwen2's ChatML turns; the generation prompt ends with the assistant header.
CHAT_TEMPLATE = (
    "{% for message in messages %}" + TURN_START + "{{ message['role'] }}\n{{ message['content'] }}" + TURN_END + "\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + TURN_START + "assistant\n{% endif %}"
)


def _vocabulary_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Characters first, then each word merged left to right ("u s" -> "us", "us e" -> "use", ...)."""
    characters = sorted({*"0123456789", *SIGNS, *"".join(WORDS)})
    tokens = list(characters)
    merges = []
    for word in WORDS:
        for end in range(2, len(word) + 1):
            merges.append((word[: end - 1], word[end - 1]))
            if word[:end] not in tokens:
                tokens.append(word[:end])
    tokens.extend(SPECIAL_TOKENS)
    return {token: index for index, token in enumerate(tokens)}, merges


def vocabulary_size() -> int:
    return len(_vocabulary_and_merges()[0])


def build_tokenizer():
    """A `Qwen2Tokenizer` over the tiny vocabulary, ChatML template, left padding for generation."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocabulary, merges = _vocabulary_and_merges()
    tokenizer = Qwen2Tokenizer(
        vocab=vocabulary,
        merges=merges,
        unk_token=PAD,
        eos_token=TURN_END,
        pad_token=PAD,
        additional_special_tokens=[TURN_START],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def save_tokenizer(directory: str | Path):
    """Build the tokenizer and save it to `directory`; return it."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(directory))
    return tokenizer
