"""The paper's math-reasoning experiments on GPU clusters: data preparation (`data`), the math reward
(`reward`), Avg@k / Pass@k tables and training-dynamics plots (`evaluation`), and the checks that run
here without a GPU: composing a script's real Hydra config (`dry_run`), and the GPU smoke test's verdict
from its metrics files (`smoke`). Rehearsing a script on CPU is the sandbox's (`maspo_verl.sandbox.rehearse`)."""
