"""What a CPU comparison runs: methods, run settings, the regime, arms and presets, each with its reason.

Everything here is data, fixed before the runs it describes (docs/results/README.md has the protocol and the
history of each choice). A `Method` is a loss mode and its Hydra overrides; a `RunSettings` is everything a run
shares with the other runs of its comparison; an `Arm` is a method with the settings it may change (only the
learning rate of an lr-0 sanity line, and the updates per batch along `off_policy`'s axis); a `Preset` is arms,
seeds, settings, the declared primary outcome and the seed-level standard deviation its power is planned from.

The trust-region presets run in one `Regime` (`REGIME`), chosen by the `pilot` preset's rule among
`PILOT_CANDIDATES`: changing that one constant changes every one of them, their planned power included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from maspo_verl.sandbox.statistics import interval_half_width, seeds_for_half_width

__all__ = [
    "BASELINE_METHOD",
    "DECOMPOSITION_CONTRASTS",
    "METHODS",
    "PILOT_CANDIDATES",
    "PILOT_SEEDS",
    "PRESETS",
    "QUICK_SETTINGS",
    "REGIME",
    "REGIME_PICKED_BY_PILOT",
    "SECOND_PILOT_CANDIDATES",
    "SECOND_PILOT_SEEDS",
    "TESTBED",
    "Arm",
    "Contrast",
    "Method",
    "Preset",
    "Regime",
    "RunSettings",
]

ACTOR_KEY = "actor_rollout_ref.actor"
MASPO_KEY = f"{ACTOR_KEY}.policy_loss.maspo"
BASELINE_METHOD = "grpo"
# What a user may type for a method: verl calls GRPO's loss "vanilla".
METHOD_ALIASES = {"vanilla": "grpo"}
# verl's vanilla loss (same value and gradient) plus the ratio statistics actor/ratio/{max,p99}_{pos,neg}, so GRPO
# arms log per advantage sign what MASPO's arms log under actor/maspo/.
GRPO_LOSS_MODE = "vanilla_with_ratio_stats"
# verl's vanilla with no trust region at all: the lower clip bound 1 - 1 = 0 is never reached, the upper 1 + 1e6
# and the dual-clip bound 1e6 are never reached at the ratios these runs produce.
NO_TRUST_REGION = (f"{ACTOR_KEY}.clip_ratio_low=1", f"{ACTOR_KEY}.clip_ratio_high=1e6", f"{ACTOR_KEY}.clip_ratio_c=1e6")
# verl's dual clip bounds the loss of A < 0 tokens at c; c = 1e6 is never reached: no dual clip.
NO_DUAL_CLIP = (f"{ACTOR_KEY}.clip_ratio_c=1e6",)
GRPO_DUAL_CLIP = 3.0  # verl's default actor.clip_ratio_c
GRPO_CLIP_EPSILON = 0.2  # verl's default clip_ratio (low = high)
# MASPO's sigma_base matched to GRPO's clip width by equal outward gradient area: GRPO weights an outward token's
# gradient 1 for |r - 1| <= eps and 0 beyond (area eps); MASPO's gate weights it exp(-(r - 1)^2 / (2 sigma^2))
# (area sigma * sqrt(pi / 2)). Equal areas give sigma = eps * sqrt(2 / pi) = 0.160 at eps 0.2. Neither method's
# shape is favoured: each lets the same total gradient weight through over the outward ratio axis (matching the
# half-weight point instead gives 0.170, matching the weight at r = 1 + eps to exp(-1/2) gives 0.2).
MATCHED_SIGMA_BASE = round(GRPO_CLIP_EPSILON * math.sqrt(2.0 / math.pi), 2)
# The limiter's cap scaled alike (10 x 0.16): MASPO's whole width profile, sigma_base to sigma_high, at 0.16 of its
# size, so the matched arm differs from MASPO in scale alone and from the hard gate (GRPO's 0.2 times the same
# profile's factor, 1 to 10) in shape alone.
MATCHED_SIGMA_HIGH = round(10.0 * MATCHED_SIGMA_BASE, 4)
MATCHED_WIDTH = (f"{MASPO_KEY}.sigma_base={MATCHED_SIGMA_BASE}", f"{MASPO_KEY}.sigma_high={MATCHED_SIGMA_HIGH}")
# `width_sweep`'s middle width: the geometric midpoint of the two drawn (sqrt(0.16 x 1) = 0.4), its cap scaled alike.
MIDDLE_SIGMA_BASE = round(math.sqrt(MATCHED_SIGMA_BASE * 1.0), 2)
MIDDLE_SIGMA_HIGH = round(10.0 * MIDDLE_SIGMA_BASE, 4)


@dataclass(frozen=True)
class Method:
    label: str
    loss_mode: str
    overrides: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    "grpo": Method("GRPO (clip 0.2)", GRPO_LOSS_MODE),
    "grpo_no_dual_clip": Method("GRPO, no dual clip", GRPO_LOSS_MODE, NO_DUAL_CLIP),
    "grpo_no_trust_region": Method("GRPO, no trust region", GRPO_LOSS_MODE, NO_TRUST_REGION),
    "clip_higher": Method(
        "Clip Higher (0.2/0.28)",
        GRPO_LOSS_MODE,
        (f"{ACTOR_KEY}.clip_ratio_low=0.2", f"{ACTOR_KEY}.clip_ratio_high=0.28"),
    ),
    "sapo": Method("SAPO", "sapo"),
    "maspo": Method("MASPO", "maspo"),
    "maspo_dual_clip": Method("MASPO, dual clip 3", "maspo", (f"{MASPO_KEY}.clip_ratio_c={GRPO_DUAL_CLIP}",)),
    "maspo_hard_gate": Method("MASPO w/o soft gate", "maspo", (f"{MASPO_KEY}.gate=hard",)),
    "maspo_hard_gate_no_dual_clip": Method(
        "MASPO w/o soft gate, no dual clip", "maspo", (f"{MASPO_KEY}.gate=hard", *NO_DUAL_CLIP)
    ),
    "maspo_matched_sigma": Method(
        f"MASPO, sigma_base {MATCHED_SIGMA_BASE}",
        "maspo",
        MATCHED_WIDTH,
    ),
    "maspo_middle_sigma": Method(
        f"MASPO, sigma_base {MIDDLE_SIGMA_BASE}",
        "maspo",
        (f"{MASPO_KEY}.sigma_base={MIDDLE_SIGMA_BASE}", f"{MASPO_KEY}.sigma_high={MIDDLE_SIGMA_HIGH}"),
    ),
    "maspo_no_mass_adaptive": Method("MASPO w/o mass-adaptive", "maspo", (f"{MASPO_KEY}.mass_adaptive=false",)),
    "maspo_no_risk_control": Method("MASPO w/o risk control", "maspo", (f"{MASPO_KEY}.risk_control=false",)),
    # The two ablations again at the matched width, where the gate acts (`ablations_matched`).
    "maspo_matched_sigma_no_mass_adaptive": Method(
        f"MASPO, sigma_base {MATCHED_SIGMA_BASE}, w/o mass-adaptive",
        "maspo",
        (
            *MATCHED_WIDTH,
            f"{MASPO_KEY}.mass_adaptive=false",
        ),
    ),
    "maspo_matched_sigma_no_risk_control": Method(
        f"MASPO, sigma_base {MATCHED_SIGMA_BASE}, w/o risk control",
        "maspo",
        (
            *MATCHED_WIDTH,
            f"{MASPO_KEY}.risk_control=false",
        ),
    ),
    # DCPO's scripts pair DAC with a dual-clip bound of 10 (docs/baselines.md); at GRPO's 3 it differs from GRPO
    # by its bounds alone.
    "dac": Method("DAC (c 10)", "dac", (f"{ACTOR_KEY}.clip_ratio_c=10",)),
    "dac_c3": Method("DAC (c 3)", "dac", (f"{ACTOR_KEY}.clip_ratio_c={GRPO_DUAL_CLIP:g}",)),
    # BAPO as its authors released it (bapo.variant=recipe, the default) and as its paper writes it.
    "bapo": Method("BAPO (recipe)", "bapo"),
    "bapo_paper": Method("BAPO (paper: Eq. 8, Alg. 1)", "bapo", (f"{ACTOR_KEY}.policy_loss.bapo.variant=paper",)),
    "entropy_advantage": Method(
        "Entropy Advantage (GRPO)", GRPO_LOSS_MODE, (f"{ACTOR_KEY}.policy_loss.entropy_advantage.enable=true",)
    ),
}

TRAIN_PROBLEMS = ("warmup", "unseen")
# Primary outcomes a preset may declare: the held-out accuracy at the last validation, or averaged over the last
# `val_last_k` validations (less evaluation noise: k x the samples, of k nearby policies).
OUTCOMES = {
    "val_acc_final": "final held-out accuracy",
    "val_acc_last_k": "held-out accuracy, mean of the last k validations",
}


@dataclass(frozen=True)
class RunSettings:
    """Shared by every run of a comparison (an arm may change some: see `Arm`).

    The defaults are the earlier testbed, fixed on GRPO alone on pilot seeds (docs/results/README.md, "How the
    testbed was chosen"): 16 prompts x 8 responses a step, 4 PPO updates per rollout batch (2 mini-batches x 2
    epochs), lr 1e-4, 20 steps, validation at steps 0, 10 and 20. The `quick` preset (the README's main job) runs
    it to step 10 (`QUICK_SETTINGS`).
    """

    steps: int = 20
    train_batch_size: int = 16
    rollout_n: int = 8
    ppo_mini_batch_size: int = 8
    ppo_epochs: int = 2
    learning_rate: float = 1e-4
    val_n: int = 8
    val_problems: int = 64
    pass_k: int = 4
    test_freq: int = 10
    # validations the primary outcome val_acc_last_k averages (the last k, step 0 never among them)
    val_last_k: int = 1
    max_response_length: int = 8
    # supervised warm-up steps of the starting model (maspo_verl.sandbox.tiny.warmup): fewer start it lower
    warmup_steps: int = 120
    # Which problems RL trains on: "warmup", the warm-up's own 2,000 (seen in supervised training), or
    # "unseen", 2,000 drawn after the held-out ones, which neither the warm-up nor validation saw.
    train_problems: str = "warmup"
    # Torch threads per run, the same whatever --jobs is, so a run's numbers do not depend on how many ran beside
    # it (two runs side by side on 2 cores: 6.6-7.9 s a step with 1 thread each, 8-10 s with 2).
    cpu_threads: int = 1
    # A guard against a hung run, not a budget: a 20-step run of the trust-region candidates took 6-7 min two at a
    # time on the 2-core VM of 2026-12-07, and can take 2-3 times that beside other work.
    run_timeout_s: int = 3600

    @property
    def updates_per_batch(self) -> int:
        return (self.train_batch_size // self.ppo_mini_batch_size) * self.ppo_epochs

    @property
    def validation_steps(self) -> list[int]:
        """The steps verl validates at: 0 (val_before_train), every test_freq, and the last."""
        return sorted({0, *range(self.test_freq, self.steps + 1, self.test_freq), self.steps})

    def validate(self) -> None:
        for key in (
            "steps",
            "train_batch_size",
            "rollout_n",
            "ppo_mini_batch_size",
            "ppo_epochs",
            "val_n",
            "val_problems",
            "pass_k",
            "test_freq",
            "val_last_k",
            "cpu_threads",
            "run_timeout_s",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.train_batch_size % self.ppo_mini_batch_size:
            raise ValueError(
                f"--ppo-mini-batch-size ({self.ppo_mini_batch_size}) must divide --train-batch-size "
                f"({self.train_batch_size}), as verl requires"
            )
        if self.rollout_n < 2:
            raise ValueError("--rollout-n must be >= 2: GRPO normalises rewards within a group")
        if self.pass_k > self.val_n:
            raise ValueError(f"--pass-k ({self.pass_k}) must be <= --val-n ({self.val_n}): pass@k needs k samples")
        if self.val_last_k > len(self.validation_steps) - 1:
            raise ValueError(
                f"--val-last-k ({self.val_last_k}) must be <= the {len(self.validation_steps) - 1} validations after "
                f"step 0 (steps {self.validation_steps[1:]}; set --test-freq)"
            )
        if self.train_problems not in TRAIN_PROBLEMS:
            raise ValueError(
                f"--train-problems must be one of {', '.join(TRAIN_PROBLEMS)}, got {self.train_problems!r}"
            )
        if not (self.learning_rate >= 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--learning-rate must be a number >= 0 (0 freezes the policy), got {self.learning_rate}")


@dataclass(frozen=True)
class Arm:
    """One compared configuration: a method, optionally with its own settings or extra overrides.

    `baseline` names the arm it is paired with (same seeds); None for a baseline itself. `expected` marks a
    control: the verdict its effect has ("worse" / "better"), or "different" when the pilot fixed that it differs
    but not by construction in which direction; None for the arms under test. A control is judged apart from the
    methods' Holm family. `sanity` marks a control that only checks the pipeline (GRPO at lr 0: the policy never
    moves), reported beside the control that counts.
    """

    name: str
    method: str
    label: str
    baseline: str | None = None
    settings: tuple[tuple[str, object], ...] = ()
    overrides: tuple[str, ...] = ()
    expected: str | None = None
    sanity: bool = False

    def run_settings(self, shared: RunSettings) -> RunSettings:
        return replace(shared, **dict(self.settings))


@dataclass(frozen=True)
class Regime:
    """The RL regime the trust-region presets run in, one candidate of the pilot (docs/results/README.md).

    `seed_sd` is the standard deviation of a per-seed difference of the primary outcome the presets' power is
    planned from: from the pilot that picked the regime (its rule is fixed in docs/results/README.md).
    """

    name: str
    train_batch_size: int
    updates_per_batch: int
    learning_rate: float
    steps: int
    warmup_steps: int
    test_freq: int
    val_last_k: int
    seed_sd: float
    reason: str = ""

    def __post_init__(self):
        if self.train_batch_size % self.updates_per_batch:
            raise ValueError(
                f"regime {self.name}: updates_per_batch ({self.updates_per_batch}) must divide train_batch_size "
                f"({self.train_batch_size}): one epoch of equal mini-batches"
            )
        if (self.steps // 2) % self.test_freq or self.steps % self.test_freq:
            raise ValueError(
                f"regime {self.name}: test_freq ({self.test_freq}) must divide steps/2 ({self.steps // 2}) and steps "
                f"({self.steps}): the pilot's rule reads the validations at the middle and the end"
            )

    def as_settings(self) -> tuple[tuple[str, object], ...]:
        """The regime as an arm's settings: one epoch of `updates_per_batch` mini-batches."""
        return (
            ("steps", self.steps),
            ("train_batch_size", self.train_batch_size),
            ("ppo_mini_batch_size", self.train_batch_size // self.updates_per_batch),
            ("ppo_epochs", 1),
            ("learning_rate", self.learning_rate),
            ("warmup_steps", self.warmup_steps),
            ("test_freq", self.test_freq),
            ("val_last_k", self.val_last_k),
        )

    def run_settings(self, base: RunSettings | None = None) -> RunSettings:
        return replace(base or RunSettings(), **dict(self.as_settings()))


# The seed-level sd every candidate is planned from until the pilot measures its own: sqrt(2) x the pooled
# between-seed sd of GRPO's final accuracy over the first pilot's 8 runs (0.0205, 4 df), rounded up.
EARLIER_PILOT_SEED_SD = 0.03
# Pilot seeds: no preset uses them (a test checks), so a regime chosen on them is not chosen on the runs it judges.
PILOT_SEEDS = (100, 101, 102, 103, 104)
# The candidate regimes, written into docs/results/README.md with the rule that picks one before any of them ran.
# The task is at its hardest length already (4 digits: the 8-token response limit), so difficulty varies through
# the starting model's warm-up; lr, updates per batch, steps and prompts a step are the other knobs.
PILOT_CANDIDATES = (
    Regime(
        "A", 16, 16, 2.5e-4, 20, 120, 2, 5, EARLIER_PILOT_SEED_SD, "the probe's regime (off_policy's 16-update arms)"
    ),
    Regime("B", 16, 16, 2.5e-4, 20, 80, 2, 5, EARLIER_PILOT_SEED_SD, "A from a weaker start: more left to learn"),
    Regime("C", 16, 8, 5e-4, 20, 80, 2, 5, EARLIER_PILOT_SEED_SD, "B with half the updates at twice the lr"),
    Regime("D", 16, 16, 1.25e-4, 40, 80, 4, 5, EARLIER_PILOT_SEED_SD, "B at half the lr for twice the steps"),
    Regime("E", 32, 16, 2.5e-4, 20, 80, 2, 5, EARLIER_PILOT_SEED_SD, "B with twice the prompts a step"),
)
# The second pilot (docs/results/README.md, "Fixed before the runs: the second pilot"): no candidate of the first
# passed; E came closest (control below GRPO in all 5 seeds, p 0.017 against 0.01), so E alone is drawn again, on 10
# fresh seeds that neither the first pilot nor any preset uses, at the first pilot's threshold.
SECOND_PILOT_SEEDS = tuple(range(200, 210))
SECOND_PILOT_CANDIDATES = tuple(c for c in PILOT_CANDIDATES if c.name == "E")
# THE regime of the trust-region presets: the candidate a pilot's rule picked, with the seed_sd that pilot measured,
# and REGIME_PICKED_BY_PILOT True. While no pilot has picked one it is candidate A (the probe's regime) with the
# earlier pilot's sd, provisional, and the trust-region presets are screens (no verdicts): a regime no pilot picked
# has not shown that it can see a trust region, and its planned sd is not from a pilot of it.
REGIME = replace(next(c for c in PILOT_CANDIDATES if c.name == "E"), seed_sd=0.015)
REGIME_PICKED_BY_PILOT = True
# The earlier testbed (the pilots' base): 16 prompts x 8 responses, 4 updates a batch, lr 1e-4, 20 steps.
TESTBED = RunSettings()
# The `quick` preset (the README's main job, budget 180 s): a demonstration that both methods learn in verl's trainer,
# not an experiment, so it keeps its testbed whatever the pilot picks. It stops at step 10, where the testbed's
# learning is nearly over (GRPO: 94% of its 20-step rise, docs/results/README.md), for half the training time.
QUICK_SETTINGS = replace(TESTBED, steps=10)


@dataclass(frozen=True)
class Contrast:
    """A paired difference between two arms of a preset other than an arm against its baseline: `arm` - `other`
    per seed, on the primary outcome, descriptive (no verdict): it takes apart a difference the arms' table shows
    whole."""

    name: str
    arm: str
    other: str
    label: str


@dataclass(frozen=True)
class Preset:
    """Arms, seeds and settings, each fixed before the preset's runs, with the reason.

    `primary`: the declared primary outcome (a key of OUTCOMES); the only one with verdicts. `pilot_seed_sd`: the
    standard deviation of a per-seed difference of the primary outcome, measured on a pilot on other seeds before
    the preset ran; the planned minimum detectable difference comes from it, never from the runs it judges. None:
    no power figure, so no verdicts (a screen). `in_regime`: the preset runs in REGIME, so it is a screen too until
    the pilot has picked REGIME. `contrasts`: paired differences between two arms, descriptive.
    """

    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    settings: RunSettings
    reason: str
    pilot_seed_sd: float | None = None
    primary: str = "val_acc_final"
    contrasts: tuple[Contrast, ...] = ()
    # runs in REGIME: a screen until the pilot has picked it (REGIME_PICKED_BY_PILOT)
    in_regime: bool = False

    def __post_init__(self):
        if self.primary not in OUTCOMES:
            raise ValueError(f"primary must be one of {sorted(OUTCOMES)}, got {self.primary!r}")
        names = {arm.name for arm in self.arms}
        for contrast in self.contrasts:
            missing = sorted({contrast.arm, contrast.other} - names)
            if missing:
                raise ValueError(f"contrast {contrast.name!r} names {missing}, not arms of the preset")


def _suffix_label(suffix: str) -> str:
    """'@16' -> ', 16 upd/batch' (off_policy's axis); '@A' -> ', regime A' (the pilot's candidates)."""
    if not suffix:
        return ""
    tag = suffix.lstrip("@")
    return f", {tag} upd/batch" if tag.isdigit() else f", regime {tag}"


def method_arm(method: str, baseline: str | None = BASELINE_METHOD, suffix: str = "", settings=()) -> Arm:
    """`method` as an arm named `method + suffix`, paired with `baseline + suffix` (None: a baseline itself)."""
    label = METHODS[method].label + _suffix_label(suffix)
    paired = None if baseline is None or method == baseline else baseline + suffix
    return Arm(method + suffix, method, label, paired, tuple(settings))


def no_trust_region_control(suffix: str = "", settings=()) -> Arm:
    """GRPO with no trust region (verl's vanilla with clip_ratio_low=1, clip_ratio_high=1e6, clip_ratio_c=1e6)
    against GRPO at the same settings: the control that counts. The pilot's rule keeps only a regime where it ends
    detectably apart from GRPO, so a testbed that cannot see it cannot see what a trust region does."""
    arm = method_arm("grpo_no_trust_region", BASELINE_METHOD, suffix, settings)
    return replace(arm, label=arm.label + " (control)", expected="different")


def frozen_policy_sanity(baseline: str = BASELINE_METHOD, suffix: str = "", method: str = "grpo", settings=()) -> Arm:
    """`method` with learning rate 0 against the same method learning: the policy never changes, so it ends where
    it started, worse by the method's rise. A sanity line for the pipeline (runs, pairing, the t over seeds), not a
    control of the trust region: it only shows that training moves accuracy."""
    label = f"{METHODS[method].label.split(' (')[0]}, lr 0 (sanity)" + _suffix_label(suffix)
    return Arm(
        f"{method}_frozen{suffix}",
        method,
        label,
        baseline + suffix,
        (*settings, ("learning_rate", 0.0)),
        expected="worse",
        sanity=True,
    )


def _regime_arms(methods: tuple[str, ...], baseline: str = BASELINE_METHOD) -> tuple[Arm, ...]:
    """`methods` (the baseline among them) and the no-trust-region control, all at the preset's settings."""
    return (*(method_arm(m, baseline) for m in methods), no_trust_region_control())


def _off_policy_arms(regime: Regime = REGIME) -> tuple[Arm, ...]:
    """GRPO, Clip Higher and MASPO at the regime's updates per batch and at 4, one epoch each, at the regime's lr;
    each paired with GRPO at the same updates. The control at the regime's updates, the lr-0 sanity line at 4.
    Most updates first: a comparison cut short keeps where the methods can differ most."""
    arms = []
    for updates in sorted({regime.updates_per_batch, 4}, reverse=True):
        suffix = f"@{updates}"
        settings = (("ppo_mini_batch_size", regime.train_batch_size // updates), ("ppo_epochs", 1))
        arms += [method_arm(m, BASELINE_METHOD, suffix, settings) for m in ("grpo", "clip_higher", "maspo")]
        if updates == regime.updates_per_batch:
            arms.append(no_trust_region_control(suffix, settings))
        if updates == 4:
            arms.append(frozen_policy_sanity(suffix=suffix, settings=settings))
    return tuple(arms)


def _sensitivity_arms() -> tuple[Arm, ...]:
    """MASPO over alpha x beta (beta_pos = beta_neg), like the paper's sensitivity analysis, each against GRPO."""
    arms = [method_arm("grpo")]
    for alpha in (0.0, 0.3, 0.5):
        for beta in (0.0, 0.03, 0.1):
            overrides = (f"{MASPO_KEY}.alpha={alpha}", f"{MASPO_KEY}.beta_pos={beta}", f"{MASPO_KEY}.beta_neg={beta}")
            arms.append(
                Arm(f"maspo_a{alpha}_b{beta}", "maspo", f"MASPO alpha {alpha} beta {beta}", "grpo", (), overrides)
            )
    return (*arms, no_trust_region_control())


def _pilot_arms(candidates: tuple[Regime, ...] = PILOT_CANDIDATES) -> tuple[Arm, ...]:
    """Per candidate regime: GRPO and GRPO with no trust region (the control the rule needs detected). No lr-0
    line: the rule's first condition already asks GRPO's rise from step 0 to exclude 0."""
    arms = []
    for candidate in candidates:
        suffix, settings = f"@{candidate.name}", candidate.as_settings()
        arms += [method_arm("grpo", None, suffix, settings), no_trust_region_control(suffix, settings)]
    return tuple(arms)


PAPER_METHODS = ("grpo", "clip_higher", "dac", "dac_c3", "entropy_advantage", "sapo", "maspo")
ABLATIONS = ("maspo_hard_gate", "maspo_no_mass_adaptive", "maspo_no_risk_control")
# The same three components switched off from MASPO at the matched width (sigma_base 0.16, sigma_high 1.6), where the
# gate weighs the tokens it acts on 0.93 instead of 0.995. Without the soft gate there is MASPO's hard gate without
# the dual clip: a clip at 1 +- 0.2 times the same adaptive factor (the matched Gaussian has 0.16 times it), so it
# differs from the matched arm in shape alone, matched by area.
MATCHED_ABLATIONS = (
    "maspo_hard_gate_no_dual_clip",
    "maspo_matched_sigma_no_mass_adaptive",
    "maspo_matched_sigma_no_risk_control",
)
# MASPO's whole width profile at three scales, each against GRPO: the paper's (1), the geometric middle (0.4) and
# the one matched to GRPO's clip (0.16).
WIDTH_SWEEP = ("grpo", "maspo", "maspo_middle_sigma", "maspo_matched_sigma")
# decomposition's width step (sigma_base 1 - 0.16) in two: where between the two widths MASPO's loss appears
WIDTH_SWEEP_CONTRASTS = (
    Contrast("width_1_vs_middle", "maspo", "maspo_middle_sigma", f"soft gate: sigma_base 1 vs {MIDDLE_SIGMA_BASE}"),
    Contrast(
        "width_middle_vs_matched",
        "maspo_middle_sigma",
        "maspo_matched_sigma",
        f"soft gate: sigma_base {MIDDLE_SIGMA_BASE} vs {MATCHED_SIGMA_BASE}",
    ),
)
DECOMPOSITION = (
    "grpo",
    "grpo_no_dual_clip",
    "maspo",
    "maspo_dual_clip",
    "maspo_hard_gate",
    "maspo_hard_gate_no_dual_clip",
    "maspo_matched_sigma",
)
# MASPO - GRPO per seed, taken apart into four steps that add up to it exactly (each a paired difference of two
# arms that differ in one thing): the width of the soft gate, its shape at a matched width, the dual clip, and
# MASPO's adaptive widths under GRPO's hard clip.
DECOMPOSITION_CONTRASTS = (
    Contrast("width", "maspo", "maspo_matched_sigma", f"soft gate: widths x1 vs x{MATCHED_SIGMA_BASE} (no dual clip)"),
    Contrast(
        "shape",
        "maspo_matched_sigma",
        "maspo_hard_gate_no_dual_clip",
        f"soft gate at sigma_base {MATCHED_SIGMA_BASE} vs hard clip 0.2, both adaptive, no dual clip",
    ),
    Contrast("dual_clip", "maspo_hard_gate_no_dual_clip", "maspo_hard_gate", "no dual clip vs dual clip 3 (hard clip)"),
    Contrast("adaptive", "maspo_hard_gate", "grpo", "hard clip 0.2 with MASPO's adaptive widths vs GRPO's fixed"),
    # after the chain, the dual clip's effect at the other two corners: the soft gate at MASPO's widths, and GRPO
    Contrast(
        "dual_clip_soft_gate", "maspo", "maspo_dual_clip", "no dual clip vs dual clip 3 (soft gate, sigma_base 1)"
    ),
    Contrast("dual_clip_grpo", "grpo_no_dual_clip", "grpo", "no dual clip vs dual clip 3 (GRPO's clip 0.2)"),
)
REGIME_SETTINGS = REGIME.run_settings()
REGIME_REASON = (
    f"in the trust-region regime {REGIME.name} ({REGIME.updates_per_batch} updates per batch of "
    f"{REGIME.train_batch_size} prompts, lr {REGIME.learning_rate:g}, {REGIME.steps} steps, warm-up "
    f"{REGIME.warmup_steps}), primary outcome the mean held-out accuracy of the last {REGIME.val_last_k} "
    f"validations (every {REGIME.test_freq} steps); the control that counts: GRPO with no trust region"
)
BAPO_LEFT_OUT = (
    "BAPO (recipe) is left out: it was bit-identical to GRPO in every seed (its adaptive bounds never bound a token "
    "differently from GRPO's clip); it comes back once a run shows its bounds move"
)

# `full`'s seeds: the fewest (at least 5) for which MASPO vs GRPO's 95% interval is at most 3 points on either side
# at the regime's planned seed-level sd; at most 10, what its budget can hold (then it publishes what it reaches).
FULL_HALF_WIDTH = 0.03
FULL_MAX_SEEDS = 10


def _full_seed_count(seed_sd: float) -> int:
    try:
        return seeds_for_half_width(seed_sd, FULL_HALF_WIDTH, minimum=5, maximum=FULL_MAX_SEEDS)
    except ValueError:  # more than the budget holds: the most it holds
        return FULL_MAX_SEEDS


FULL_SEEDS = tuple(range(_full_seed_count(REGIME.seed_sd)))
FULL_SEEDS_REASON = (
    f"at the planned sd {REGIME.seed_sd:.3f}, the fewest for a 95% interval of at most +-{FULL_HALF_WIDTH:.2f}"
    if len(FULL_SEEDS) < FULL_MAX_SEEDS or interval_half_width(REGIME.seed_sd, FULL_MAX_SEEDS) <= FULL_HALF_WIDTH
    else f"the most its budget holds; at the planned sd {REGIME.seed_sd:.3f} its 95% interval is "
    f"+-{interval_half_width(REGIME.seed_sd, FULL_MAX_SEEDS):.3f}, wider than +-{FULL_HALF_WIDTH:.2f}"
)

# The decomposition takes `full`'s MASPO - GRPO apart, so it runs on `full`'s seeds: its GRPO, MASPO and control runs
# are `full`'s (the same fingerprints), and each step of the chain is paired over the seeds the total was drawn on.
DECOMPOSITION_SEEDS_REASON = (
    "the seeds of the difference it takes apart, so its GRPO, MASPO and control runs are full's; at 3 seeds its "
    "6-method family would be a screen"
)
# The ablations in E run on the seeds where MASPO, its hard gate, GRPO and the control already ran (`full`,
# `decomposition`: the same runs, reused), so 5 seeds cost 4 new runs more than 3; they take the family of
# three ablations from a test of large effects (planned MDE 8.5 points at 3 seeds) to one of 3.4.
ABLATIONS_SEEDS_REASON = (
    "full's, where MASPO, its hard gate, GRPO and the control already ran (reused), so 5 seeds cost 4 new runs more "
    "than 3"
)

# The ablations at the matched width run on `full`'s seeds for the same reason as `ablations`: the matched arm, the
# hard gate without dual clip, GRPO and the control already ran there (`decomposition`, `full`), so 5 seeds cost
# 10 new runs, 4 more than 3 would, and the family of three has a planned MDE of 3.4 points instead of 8.5.
ABLATIONS_MATCHED_SEEDS_REASON = (
    "full's, where the matched arm, its hard gate, GRPO and the control already ran (reused), so 5 seeds cost 4 new "
    "runs more than 3"
)

PRESETS: dict[str, Preset] = {
    "quick": Preset(
        (method_arm("maspo"), method_arm("grpo")),
        (0,),
        QUICK_SETTINGS,
        "minutes on 2 cores (3.7 on the 2026-12-07 VM, docs/performance.md): shows both methods training in verl's "
        "trainer, 10 steps, validated at steps 0 and 10; one seed gives no interval",
    ),
    "full": Preset(
        (method_arm("grpo"), method_arm("maspo"), no_trust_region_control()),
        FULL_SEEDS,
        REGIME_SETTINGS,
        f"MASPO vs GRPO, {len(FULL_SEEDS)} paired seeds ({FULL_SEEDS_REASON}; at most {FULL_MAX_SEEDS}), "
        f"{REGIME_REASON}; no lr-0 line: "
        "a run of the regime takes longer than the budget allowed for it",
        REGIME.seed_sd,
        "val_acc_last_k",
        in_regime=True,
    ),
    "paper": Preset(
        _regime_arms(PAPER_METHODS),
        (0, 1, 2),
        REGIME_SETTINGS,
        f"the paper's main-result methods against GRPO at one shared setting, 3 seeds, {REGIME_REASON}; DAC at "
        f"GRPO's dual clip 3 and at its authors' 10. {BAPO_LEFT_OUT}",
        REGIME.seed_sd,
        "val_acc_last_k",
        in_regime=True,
    ),
    "ablations": Preset(
        (
            method_arm("maspo", None),
            *(method_arm(m, "maspo") for m in ABLATIONS),
            method_arm("grpo"),
            no_trust_region_control(),
        ),
        FULL_SEEDS,
        REGIME_SETTINGS,
        "MASPO's three components, each switched off, against MASPO itself (what removing it costs, as the paper's "
        f"ablation asks), `full`'s {len(FULL_SEEDS)} seeds ({ABLATIONS_SEEDS_REASON}), {REGIME_REASON}; no lr-0 "
        "line (a choice: its 5 runs would add about 22 min, and MASPO's rise from step 0 in full, the same runs, "
        "already shows that training moves accuracy)",
        REGIME.seed_sd,
        "val_acc_last_k",
        in_regime=True,
    ),
    "ablations_matched": Preset(
        (
            method_arm("maspo_matched_sigma", None),
            *(method_arm(m, "maspo_matched_sigma") for m in MATCHED_ABLATIONS),
            method_arm("grpo"),
            no_trust_region_control(),
        ),
        FULL_SEEDS,
        REGIME_SETTINGS,
        f"MASPO's three components, each switched off, against MASPO at sigma_base {MATCHED_SIGMA_BASE} (its widths "
        "matched to GRPO's clip, decomposition's arm): at the paper's sigma_base 1 the gate weighs the tokens it acts "
        "on 0.995, so `ablations` could not see what the components do; here it weighs them 0.93. "
        f"`full`'s {len(FULL_SEEDS)} seeds ({ABLATIONS_MATCHED_SEEDS_REASON}), {REGIME_REASON}; no lr-0 line, as in "
        "`ablations`",
        REGIME.seed_sd,
        "val_acc_last_k",
        in_regime=True,
    ),
    "width_sweep": Preset(
        _regime_arms(WIDTH_SWEEP),
        FULL_SEEDS,
        REGIME_SETTINGS,
        f"MASPO at sigma_base 1 (the paper's), {MIDDLE_SIGMA_BASE} and {MATCHED_SIGMA_BASE} (matched to GRPO's clip), "
        "each with its cap at 10 x sigma_base, against GRPO: how MASPO - GRPO changes with the width that carried it "
        f"in decomposition; {MIDDLE_SIGMA_BASE} is the geometric middle of the two widths drawn. `full`'s "
        f"{len(FULL_SEEDS)} seeds (the runs at 1 and {MATCHED_SIGMA_BASE}, GRPO's and the control's are full's and "
        f"decomposition's, reused: 5 new runs), {REGIME_REASON}; no lr-0 line",
        REGIME.seed_sd,
        "val_acc_last_k",
        WIDTH_SWEEP_CONTRASTS,
        in_regime=True,
    ),
    "off_policy": Preset(
        _off_policy_arms(),
        (0, 1, 2),
        REGIME_SETTINGS,
        f"the axis along which a trust region matters: {REGIME.updates_per_batch} and 4 PPO updates per rollout batch "
        f"(16: the paper's reported batch 512 / mini-batch 32), 3 seeds, {REGIME_REASON}",
        REGIME.seed_sd,
        "val_acc_last_k",
        in_regime=True,
    ),
    "sensitivity": Preset(
        _sensitivity_arms(),
        (0, 1),
        REGIME_SETTINGS,
        "MASPO's alpha x beta grid (alpha 0 / 0.3 / 0.5, beta 0 / 0.03 / 0.1) against GRPO, like the paper's "
        f"sensitivity analysis, {REGIME_REASON}; 2 seeds: a shape, not a test",
        REGIME.seed_sd,
        "val_acc_last_k",
        in_regime=True,
    ),
    "decomposition": Preset(
        _regime_arms(DECOMPOSITION),
        FULL_SEEDS,
        REGIME_SETTINGS,
        "what in MASPO's trust region differs from GRPO's: {soft gate, hard gate (maspo.gate=hard)} x {dual clip "
        "c = 3 (GRPO's), none}, GRPO without its dual clip, and MASPO with sigma_base matched to GRPO's clip width "
        f"by equal outward gradient area (sigma = 0.2 sqrt(2/pi) = {MATCHED_SIGMA_BASE}), each against GRPO, "
        f"`full`'s {len(FULL_SEEDS)} seeds ({DECOMPOSITION_SEEDS_REASON}), {REGIME_REASON}. Every arm logs its "
        "clip fraction and ratio p99 per advantage sign. MASPO - GRPO "
        "is taken apart into width + shape + dual clip + adaptive widths, each a paired difference of two arms. "
        f"{BAPO_LEFT_OUT}",
        REGIME.seed_sd,
        "val_acc_last_k",
        DECOMPOSITION_CONTRASTS,
        in_regime=True,
    ),
    "pilot": Preset(
        _pilot_arms(),
        PILOT_SEEDS,
        TESTBED,
        "the pilot that picks the trust-region regime: GRPO and GRPO with no trust region in each candidate regime "
        "on pilot seeds 100-104; its rule (docs/results/README.md, fixed before the runs) draws the candidates "
        "cheapest first and keeps the first where learning lasts and the no-trust-region control ends detectably "
        "apart",
        None,
        "val_acc_last_k",
    ),
    "second_pilot": Preset(
        _pilot_arms(SECOND_PILOT_CANDIDATES),
        SECOND_PILOT_SEEDS,
        TESTBED,
        "the second pilot: no candidate of the first passed, E came closest; GRPO and GRPO with no trust region in "
        "E alone, on 10 fresh seeds (200-209), by the first pilot's rule and threshold (docs/results/README.md, "
        "fixed before the runs)",
        None,
        "val_acc_last_k",
    ),
}
