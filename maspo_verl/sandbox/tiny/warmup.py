"""A short supervised warm-up of the tiny model, so that RL starts from a policy that is sometimes right.

A random-weight model never writes `\\boxed{<answer>}`, so every GRPO group would score 0 and
no method could learn. The warm-up trains on the task's training problems in the exact
format verl's rollout produces (the tokenizer's chat template with the generation prompt,
then the boxed answer and `<|im_end|>`), for a fixed number of steps chosen once for the task,
not per method. The result is cached by its inputs so every run of a comparison starts from
the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from maspo_verl.sandbox.tiny.model import TinyModelSize, build_tiny_model, write_tiny_model
from maspo_verl.sandbox.tiny.task import SortingTask, Task, make_problems, supervised_pairs

__all__ = ["WarmupSettings", "cached_warmup", "default_cache_dir", "greedy_accuracy", "supervised_warmup"]

METADATA_FILE = "warmup.json"


@dataclass(frozen=True)
class WarmupSettings:
    """What the warm-up depends on; its hash names the cache entry.

    Defaults, fixed on the warm-up alone before any RL method ran on them (docs/results/README.md):
    sorting four digits, a skill shared by all 10,000 inputs, so RL on 2,000 training problems can
    carry over to held-out ones. The ~0.1M-parameter model learns it fully in ~1,000 supervised
    steps; 120 steps stop it part-way, right on two thirds of held-out problems greedily and on about
    a quarter of samples at temperature 1, so GRPO groups see both outcomes and have room to improve.
    (One-digit arithmetic, the earlier task, is 155 separate facts with nothing for RL to transfer;
    two-digit arithmetic stayed near 0% after 400 steps.)
    """

    task: Task = SortingTask(length=4)
    size: TinyModelSize = TinyModelSize()
    num_train: int = 2000
    num_val: int = 100
    data_seed: int = 0
    model_seed: int = 0
    steps: int = 120
    batch_size: int = 32
    learning_rate: float = 3e-3

    def __post_init__(self):
        for key in ("num_train", "num_val", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"warmup.{key} must be >= 1, got {getattr(self, key)}")
        if self.steps < 0:
            raise ValueError(f"warmup.steps must be >= 0, got {self.steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"warmup.learning_rate must be > 0, got {self.learning_rate}")

    def cache_key(self) -> str:
        import torch
        import transformers

        payload = {
            **asdict(self),
            "task_kind": type(self.task).__name__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MASPO_VERL_CACHE", Path.home() / ".cache" / "maspo_verl"))


def _encode(tokenizer, prompt: str, response: str | None):
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    if hasattr(prompt_ids, "input_ids"):  # transformers may return a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    if response is None:
        return list(prompt_ids), []
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return list(prompt_ids), response_ids


def supervised_warmup(settings: WarmupSettings, output_dir: str | Path) -> dict:
    """Train the tiny model on (prompt, boxed answer) pairs; write it to `output_dir`; return metadata."""
    import torch

    from maspo_verl.sandbox.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    model = build_tiny_model(settings.size, settings.model_seed).train()
    train, val = make_problems(settings.task, settings.num_train, settings.num_val, settings.data_seed)
    examples = [_encode(tokenizer, prompt, response) for prompt, response in supervised_pairs(train)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.model_seed)
    losses = []
    for _ in range(settings.steps):
        batch = [examples[i] for i in torch.randint(len(examples), (settings.batch_size,), generator=generator)]
        length = max(len(p) + len(r) for p, r in batch)
        input_ids = torch.full((len(batch), length), tokenizer.pad_token_id)
        labels = torch.full((len(batch), length), -100)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, (prompt_ids, response_ids) in enumerate(batch):
            ids = prompt_ids + response_ids
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, len(prompt_ids) : len(ids)] = torch.tensor(response_ids)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    write_tiny_model(output_dir, settings.size, settings.model_seed, model=model)
    return {
        "settings": json.loads(json.dumps(asdict(settings), default=str)),
        "final_loss": losses[-1] if losses else None,
        "val_greedy_accuracy": greedy_accuracy(model, tokenizer, val),
        "train_greedy_accuracy": greedy_accuracy(model, tokenizer, train[: settings.num_val]),
    }


def greedy_accuracy(model, tokenizer, problems, max_new_tokens: int = 8) -> float:
    """Share of `problems` whose greedy completion holds the right `\\boxed{}` answer."""
    import torch

    from maspo_verl.sandbox.tiny.reward import compute_score

    correct = 0
    with torch.no_grad():
        for problem in problems:
            prompt_ids, _ = _encode(tokenizer, problem.prompt, None)
            output = model.generate(
                torch.tensor([prompt_ids]),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            text = tokenizer.decode(output[0, len(prompt_ids) :], skip_special_tokens=True)
            correct += compute_score("", text, problem.answer)["acc"]
    return correct / max(len(problems), 1)


def cached_warmup(
    settings: WarmupSettings = WarmupSettings(), cache_dir: str | Path | None = None
) -> tuple[Path, dict, bool]:
    """The warmed-up model directory for `settings`, trained once and reused.

    Returns (model_dir, metadata, reused). The entry is written to a temporary folder and renamed
    into place, so an interrupted warm-up never leaves a half-written model behind.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"tiny-warmup-{settings.cache_key()}"
    if (target / METADATA_FILE).is_file():
        return target, json.loads((target / METADATA_FILE).read_text()), True
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".warmup-", dir=cache_dir))
    try:
        metadata = supervised_warmup(settings, staging)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        if target.exists():  # another process finished first
            shutil.rmtree(staging)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, json.loads((target / METADATA_FILE).read_text()), False
