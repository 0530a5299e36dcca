"""MASPO through verl's real call site, `verl.workers.utils.losses.ppo_loss`, as the FSDP engine
calls it per micro-batch, including gradient-accumulation invariance with verl's global batch info."""

import pytest
import torch
from helpers import actor_config, random_loss_inputs, run_verl_ppo_loss, torch_no_padding

from maspo_verl.loss import METRIC_KEYS, compute_policy_loss_maspo

pytestmark = pytest.mark.kind("unit")


def test_ppo_loss_calls_maspo_and_returns_its_metrics():
    inputs = random_loss_inputs(seed=21, ratio_spread=0.5)
    config = actor_config()
    loss, metrics = run_verl_ppo_loss(config, inputs)
    loss.backward()
    grad_through_verl = inputs.log_prob.grad.clone()
    inputs.log_prob.grad = None
    direct, direct_metrics = compute_policy_loss_maspo(
        inputs.old_log_prob, inputs.log_prob, inputs.advantages, inputs.response_mask, "token-mean", actor_config()
    )
    direct.backward()
    torch.testing.assert_close(loss.detach(), direct.detach())
    torch.testing.assert_close(grad_through_verl, inputs.log_prob.grad)
    for key in METRIC_KEYS:
        assert metrics[key].aggregate() == pytest.approx(direct_metrics[key], abs=1e-6), key
    assert "actor/pg_loss" in metrics


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("gate", ["gaussian", "hard"])
def test_gradient_accumulation_invariance(mode, gate):
    """One mini-batch split into 1, 2 and 4 micro-batches with verl's global batch info: the summed
    gradient and the summed loss are the same."""
    inputs = random_loss_inputs(
        batch_size=8, response_length=7, seed=22, ratio_spread=0.5, with_rollout_is_weights=True
    )
    batch_num_tokens = int(inputs.response_mask.sum())
    global_batch_size = int((inputs.response_mask.sum(-1) > 0).sum())
    results = {}
    for num_micro_batches in (1, 2, 4):
        inputs.log_prob.grad = None
        config = actor_config(loss_agg_mode=mode, gate=gate)
        size = 8 // num_micro_batches
        total = 0.0
        for start in range(0, 8, size):
            loss, _ = run_verl_ppo_loss(
                config,
                inputs,
                rows=slice(start, start + size),
                batch_num_tokens=batch_num_tokens,
                global_batch_size=global_batch_size,
            )
            loss.backward()
            total += loss.item()
        results[num_micro_batches] = (total, inputs.log_prob.grad.clone())
    for n in (2, 4):
        assert results[n][0] == pytest.approx(results[1][0], abs=1e-6)
        torch.testing.assert_close(results[n][1], results[1][1], rtol=0, atol=1e-6)
    assert results[1][1].abs().sum() > 0


def test_torch_no_padding_matches_verls_helper_where_that_runs():
    """The plain-torch layout the call-site tests use on verl < 0.9.1 equals verl's own."""
    from verl import DataProto
    from verl.workers.utils.padding import left_right_2_no_padding

    attention_mask = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    tensors = {
        "input_ids": torch.arange(18).reshape(3, 6),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "response_mask": attention_mask[:, 3:],
    }
    try:
        expected = left_right_2_no_padding(DataProto.from_dict(tensors=dict(tensors)).batch)
    except ImportError:
        pytest.skip("this verl's left_right_2_no_padding needs flash-attn: nothing to compare against")
    actual = torch_no_padding(DataProto.from_dict(tensors=dict(tensors)).batch)
    for key in ("input_ids", "position_ids"):
        assert actual[key].is_nested and expected[key].is_nested, key
        torch.testing.assert_close(actual[key].values(), expected[key].values(), msg=key)
        assert actual[key].offsets().tolist() == expected[key].offsets().tolist(), key
    torch.testing.assert_close(actual["loss_mask"], expected["loss_mask"])
    for key in ("max_seq_len", "max_response_len"):
        assert actual[key] == expected[key], key
    torch.testing.assert_close(actual["indices"], expected["indices"])
    assert actual["input_ids"].values().tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 14, 15]
