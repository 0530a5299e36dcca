"""A character-level tokenizer for the tiny arithmetic task, built locally (no download).

Vocabulary: digits, the arithmetic signs, `\\boxed{` as ONE token (answers are short), `}`,
a space and the chat markers. Saved with `save_pretrained`, so verl and Hugging Face load it
with `AutoTokenizer.from_pretrained(path)` like any model's tokenizer, chat template included.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BOXED_OPEN", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "VOCABULARY", "build_tokenizer", "save_tokenizer"]

PAD, EOS, UNK, USER, ASSISTANT = "<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = (PAD, EOS, UNK, USER, ASSISTANT)
BOXED_OPEN = "\\boxed{"
VOCABULARY = (*SPECIAL_TOKENS, *"0123456789", "+", "-", "*", "=", BOXED_OPEN, "}", " ")

# One user turn, then the assistant; the generation prompt ends with the assistant marker.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + "{{ message['content'] }}" + EOS + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def build_tokenizer():
    """A `PreTrainedTokenizerFast` over VOCABULARY: one token per character, `\\boxed{` whole."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(VOCABULARY)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\boxed\{|."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK, additional_special_tokens=[USER, ASSISTANT]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def save_tokenizer(directory: str | Path):
    """Build the tokenizer and save it to `directory`; return it."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(directory))
    return tokenizer
