"""The CPU sandbox: verl's own trainer on a tiny task on 2 CPU cores. A tiny task and model (`tiny`),
one training run through the packaged CPU script (`runner`), paired comparisons of methods over seeds
(`compare`, `maspo-compare`: the command line; `presets` with their reasons, `runs`, `analysis`, `report`,
the regime `pilot`) with seed-level statistics (`statistics`), and the CPU rehearsal of the paper's
experiment scripts (`rehearse`)."""
