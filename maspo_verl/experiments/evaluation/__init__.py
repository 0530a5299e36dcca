"""Evaluation of the MASPO experiments: Avg@k / unbiased Pass@k tables from verl's validation dumps
(`python -m maspo_verl.experiments.evaluation.pass_at_k`) and training-dynamics plots from a run's logs
(`python -m maspo_verl.experiments.evaluation.plot`)."""
