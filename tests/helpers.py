"""Shared test helpers: verl actor configs and verl's real `ppo_loss` call site on CPU.

`run_verl_ppo_loss` drives `verl.workers.utils.losses.ppo_loss` (the function verl's FSDP engine
calls per micro-batch) with a TensorDict built by verl's own helpers (DataProto,
`left_right_2_no_padding`, `tu.assign_non_tensor`), the model's log-probs given as the jagged
nested tensor the engine produces.

verl 0.8 and 0.9.0 unpad through flash-attn's `unpad_input` only (0.9.1 added a pure-torch
fallback), so on a CPU install of those versions `left_right_2_no_padding` cannot run.
`to_no_padding` then builds the same layout in plain torch; tests/test_verl_call_site.py checks
it against verl's helper wherever that runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from verl import DataProto
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig, PolicyLossConfig
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import left_right_2_no_padding

from maspo_verl import MaspoConfig, MaspoPolicyLossConfig

# MASPO's settings as the paper states them (arXiv 2602.17550), written here independently of
# maspo_verl.config so that a changed default fails the tests that compare against it.
PAPER_DEFAULTS = dict(
    sigma_base=1.0,
    alpha=0.3,
    beta_pos=0.03,
    beta_neg=0.03,
    sigma_high=10.0,
    adv_low=0.1,
    adv_high=10.0,
    gate="gaussian",
    mass_adaptive=True,
    risk_control=True,
)


def actor_config(loss_mode: str = "maspo", loss_agg_mode: str = "token-mean", plain: bool = False, **kwargs):
    """A verl `ActorConfig` whose policy loss is `MaspoPolicyLossConfig` (or verl's plain
    `PolicyLossConfig` when `plain`). kwargs: MASPO keys go to `maspo`, the rest to ActorConfig."""
    # a key of both (clip_ratio_c) goes to the actor, as before MaspoConfig had it
    maspo_keys = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in MaspoConfig.__dataclass_fields__ and k not in ActorConfig.__dataclass_fields__
    }
    if plain:
        policy_loss = PolicyLossConfig(loss_mode=loss_mode)
    else:
        policy_loss = MaspoPolicyLossConfig(loss_mode=loss_mode, maspo=MaspoConfig(**maspo_keys))
    actor_kwargs = dict(
        strategy="fsdp", ppo_mini_batch_size=2, ppo_micro_batch_size_per_gpu=1, rollout_n=1, use_dynamic_bsz=False
    )
    actor_kwargs.update(kwargs)
    return ActorConfig(policy_loss=policy_loss, loss_agg_mode=loss_agg_mode, **actor_kwargs)


@dataclass
class LossInputs:
    old_log_prob: torch.Tensor
    log_prob: torch.Tensor  # leaf, requires grad
    advantages: torch.Tensor
    response_mask: torch.Tensor  # bool
    rollout_is_weights: torch.Tensor | None = None


def random_loss_inputs(
    batch_size: int = 6,
    response_length: int = 9,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    ratio_spread: float = 0.4,
    with_rollout_is_weights: bool = False,
) -> LossInputs:
    """GRPO-like inputs: sequence-level advantages of both signs, old probabilities spanning head
    and tail tokens, ratios spread around 1, right-padded responses of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    old_log_prob = -torch.rand(batch_size, response_length, generator=generator) * 6.0  # p_old in (e^-6, 1]
    log_prob = old_log_prob + ratio_spread * torch.randn(batch_size, response_length, generator=generator)
    advantages = torch.randn(batch_size, 1, generator=generator).expand(batch_size, response_length) * 1.5
    lengths = torch.randint(1, response_length + 1, (batch_size,), generator=generator)
    lengths[0] = response_length
    response_mask = torch.arange(response_length)[None, :] < lengths[:, None]
    weights = None
    if with_rollout_is_weights:
        weights = (0.5 + torch.rand(batch_size, response_length, generator=generator)).to(dtype)
    return LossInputs(
        old_log_prob=old_log_prob.to(dtype),
        log_prob=log_prob.to(dtype).requires_grad_(True),
        advantages=advantages.contiguous().to(dtype),
        response_mask=response_mask,
        rollout_is_weights=weights,
    )


def torch_no_padding(data):
    """verl's no-padding layout of a left/right-padded TensorDict, in plain torch: the tokens and
    position ids of each sequence as jagged nested tensors, `loss_mask` = `response_mask`, and the
    non-tensor `max_seq_len`, `max_response_len` and `indices` (flat positions of the kept tokens)."""
    attention_mask = data["attention_mask"].bool()
    input_ids = data.pop("input_ids")
    position_ids = data["position_ids"]
    tu.assign_non_tensor_data(data, "max_seq_len", input_ids.shape[1])
    tu.assign_non_tensor_data(data, "max_response_len", data["response_mask"].shape[1])
    tu.assign_non_tensor_data(data, "indices", torch.nonzero(attention_mask.flatten()).flatten())
    data["input_ids"] = torch.nested.as_nested_tensor(
        [ids[mask] for ids, mask in zip(input_ids, attention_mask, strict=True)], layout=torch.jagged
    )
    data["position_ids"] = torch.nested.as_nested_tensor(
        [positions[mask] for positions, mask in zip(position_ids, attention_mask, strict=True)], layout=torch.jagged
    )
    data["loss_mask"] = data["response_mask"]
    return data


def to_no_padding(data):
    """verl's `left_right_2_no_padding`, or `torch_no_padding` where that needs flash-attn (verl < 0.9.1)."""
    try:
        return left_right_2_no_padding(data.clone())
    except ImportError:
        return torch_no_padding(data)


def run_verl_ppo_loss(
    config: ActorConfig,
    inputs: LossInputs,
    rows: slice | None = None,
    prompt_length: int = 3,
    dp_size: int = 1,
    batch_num_tokens: int | None = None,
    global_batch_size: int | None = None,
):
    """Call verl's `ppo_loss` on rows `rows` of `inputs` as one micro-batch, the way verl's
    engine does; returns (loss, metrics). Gradients reach `inputs.log_prob`."""
    rows = rows if rows is not None else slice(None)
    old_log_prob = inputs.old_log_prob[rows]
    log_prob = inputs.log_prob[rows]
    advantages = inputs.advantages[rows]
    response_mask = inputs.response_mask[rows]
    batch_size, response_length = response_mask.shape

    # Left-padded prompts of varying length, right-padded responses: verl's rollout layout.
    prompt_lengths = [prompt_length - (i % 2) for i in range(batch_size)]
    prompt_attention = torch.zeros(batch_size, prompt_length, dtype=torch.long)
    for i, length in enumerate(prompt_lengths):
        prompt_attention[i, prompt_length - length :] = 1
    response_lengths = response_mask.sum(-1)
    response_attention = (torch.arange(response_length)[None, :] < response_lengths[:, None]).long()
    attention_mask = torch.cat([prompt_attention, response_attention], dim=1)
    input_ids = torch.randint(5, 50, attention_mask.shape, generator=torch.Generator().manual_seed(1))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

    tensors = {
        "prompts": input_ids[:, :prompt_length],
        "responses": input_ids[:, prompt_length:],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "response_mask": response_mask.long(),
        "old_log_probs": old_log_prob.detach(),
        "advantages": advantages.detach(),
    }
    if inputs.rollout_is_weights is not None:
        tensors["rollout_is_weights"] = inputs.rollout_is_weights[rows]
    data = DataProto.from_dict(tensors=tensors).batch
    data = to_no_padding(data)
    tu.assign_non_tensor(data, dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size)

    # The engine's log-probs: one value per token of each unpadded sequence; the log-prob of
    # response token j sits at position prompt_len + j - 1 (next-token prediction).
    per_sequence = []
    for i in range(batch_size):
        length = int(response_lengths[i])
        filler_before = torch.zeros(prompt_lengths[i] - 1, dtype=log_prob.dtype)
        per_sequence.append(torch.cat([filler_before, log_prob[i, :length], torch.zeros(1, dtype=log_prob.dtype)]))
    values = torch.cat(per_sequence)
    nested_log_probs = torch.nested.nested_tensor_from_jagged(values, offsets=data["input_ids"].offsets())
    return ppo_loss(config, {"log_probs": nested_log_probs}, data)


def validation_records(dump: Path) -> list[tuple]:
    """(prompt, session id, response, score) of every sample in one of verl's validation dumps, sorted
    (verl's dump order is arrival order)."""
    records = []
    for line in dump.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            session = str(record["uid"]).rsplit("_", 2)[1]  # verl's key: {uid}_{session_id}_{index}
            records.append((record["input"], session, record["output"], record["score"]))
    return sorted(records)
