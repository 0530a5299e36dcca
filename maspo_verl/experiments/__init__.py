"""The paper's math-reasoning experiments on GPU clusters: data preparation (`data`), the math reward
(`reward`), Avg@k / Pass@k tables and training-dynamics plots (`evaluation`), and the checks that run
here without a GPU: composing a script's real Hydra config (`dry_run`) and rehearsing it end to end on
CPU with only the model, the rollout backend and the sizes swapped (`rehearse`)."""
