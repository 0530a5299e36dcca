"""The paper's baselines that verl does not ship, registered as verl policy losses.

verl ships GRPO (`vanilla`), Clip Higher (`vanilla` with `clip_ratio_high`) and `sapo`.
"""
