"""The verl boundary: everything of maspo-verl that knows more of verl than its policy-loss hooks.

- `plugin`: the target of the `verl.plugins` entry point, imported by verl in every process;
- `versions`: the supported and tested verl versions, the installed one, `require_verl_version`;
- `hydra_config`: our Hydra configs folder and composing a trainer config as verl's `main_ppo` does;
- `loss_guard`: verl settings that replace a loss of ours or change what it receives;
- `contract`: the verl API we rely on, checked in a verl source tree without importing it.

Importing this package imports none of them.
"""
