# shellcheck shell=bash
# What every run of verl's trainer on a CPU box needs, whatever the task: sourced by
# maspo_verl/sandbox/tiny/train_cpu.sh and by REHEARSE=cpu in examples/run_scripts/common.sh.
# Exports the environment and defines the Hydra overrides in the array CPU_BACKEND_ARGS.

export VERL_PLATFORM=cpu             # opt in: maspo-verl's CPU platform + hf_cpu rollout (patches/README.md)
export TOKENIZERS_PARALLELISM=false
# Threads per process (torch/OpenMP): 2 measured faster than 1 on a 2-core box for one run alone
# (benchmarks/bench_cpu_run.py --variants ours,threads1: median step 0.91x of 1 thread's). Runs side
# by side need 1 each (2 each spin against each other): maspo_verl.sandbox.compare sets MASPO_CPU_THREADS=1.
export OMP_NUM_THREADS=${MASPO_CPU_THREADS:-2}
export MKL_NUM_THREADS=$OMP_NUM_THREADS
# verl's best@N / worst@N validation bootstrap, vectorized with the same numbers: ~2 s less of the
# trainer's time per 45 x 16 validation (patches/fast_validation_metrics.py).
export MASPO_FAST_VALIDATION_METRICS=${MASPO_FAST_VALIDATION_METRICS:-1}  # 0: verl's own loop

# shellcheck disable=SC2034  # used by the scripts that source this file
CPU_BACKEND_ARGS=(
  # FSDP2 only, float32 compute (bf16 autocast is slower on CPU), torch's sdpa attention and padded
  # inputs (verl's defaults, flash-attn and its remove-padding kernels, need a GPU).
  actor_rollout_ref.actor.strategy=fsdp2
  ++actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32
  ++actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32
  actor_rollout_ref.model.use_remove_padding=false
  ++actor_rollout_ref.model.override_config.attn_implementation=sdpa
  actor_rollout_ref.model.enable_gradient_checkpointing=false
  actor_rollout_ref.actor.use_torch_compile=false
  actor_rollout_ref.actor.fsdp_config.use_torch_compile=false
  # Rollout: maspo-verl's hf_cpu backend (Hugging Face model on CPU), one replica, one agent worker.
  actor_rollout_ref.rollout.name=hf_cpu
  actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.agent.num_workers=1
  # verl's single-turn agent loop, also telling the server which of a prompt's samples it asks for,
  # so each sample is seeded on its own: batching and arrival order never change it; and scoring
  # the response with verl's reward manager in the agent-loop worker, instead of one Ray call per
  # response to a reward actor (patches/hf_agent_loop.py). So no reward actors: reward.num_workers=0.
  actor_rollout_ref.rollout.agent.default_agent_loop=hf_cpu_single_turn_agent_local_reward
  # verl's V1 agent-loop manager, with a worker that sends a batch's generate calls to the server in
  # one Ray call and stores the batch's rollouts in one TransferQueue put, instead of one each per
  # sample (patches/batched_agent_loop.py, selected through verl's agent_loop_manager_class hook;
  # verl 0.9 reads the key but its rollout yaml lacks it, hence ++).
  ++actor_rollout_ref.rollout.agent.agent_loop_manager_class=maspo_verl.patches.batched_agent_loop.HfCpuAgentLoopManager
  # One "device" (a CPU process); no extra processes for data loading or reward on 2 cores.
  trainer.device=cpu
  trainer.nnodes=1
  trainer.n_gpus_per_node=1
  data.dataloader_num_workers=0
  reward.num_workers=0
  # Ray on a 2-core box: verl's resource check counts GPUs only, so one logical GPU no worker asks
  # for; TransferQueue asks for more logical CPUs than 2 cores give (patches/README.md).
  ++ray_kwargs.ray_init.num_gpus=1
  ray_kwargs.ray_init.num_cpus=16
  ++ray_kwargs.ray_init.include_dashboard=false
  transfer_queue.backend.SimpleStorage.num_data_storage_units=1
  # verl's V1 sync trainer polls its replay buffer every 2 s; this one every 10 ms
  # (patches/fast_replay_buffer.py, selected through verl's custom_sampler hook).
  trainer.v1.sampler.custom_sampler.path=pkg://maspo_verl.patches.fast_replay_buffer
  trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer
)
