"""The CPU sandbox: verl's own trainer on a tiny task on 2 CPU cores. A tiny task and model (`tiny`),
one training run through the packaged CPU script (`runner`), paired comparisons of methods over seeds
(`compare`, `maspo-compare`) and their seed-level statistics (`statistics`)."""
