"""Typed schema for every config section, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` supply values; these dataclasses supply the types, so a bad
override such as ``training.batch_size=abc`` or an unknown key such as ``training.lr=1e-3`` is
rejected by Hydra while the config is composed, before anything runs. Cross-field rules (heads
divide the hidden size, the batch splits over the mesh, ...) live in :mod:`ttexp.config.validate`.

Choices are ``Enum`` rather than ``Literal`` because OmegaConf 2.3 (Hydra 1.3) rejects ``Literal``
annotations in structured configs; a bad value fails with "Invalid value 'x', expected one of ...".

Units: steps are optimizer steps; batch sizes are sequences; lengths are tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional, Union

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from omegaconf import MISSING, OmegaConf

from ttexp.config.experiments_source import (
    ExperimentsConfigSource,
    TtexpExperimentsSearchPath,
)
from ttexp.config.launchers import register_joblib_launcher
from ttexp.config.choices import (  # noqa: F401  (re-exported: the schema's choices)
    Backend,
    DataFormat,
    Precision,
    SchedulerName,
    TaskName,
)
from ttexp.config.section import Section
from ttexp.config.recorded import recorded_model_name
from ttexp.config.values import fs_name


@dataclass
class ModelConfig(Section):
    """One Llama-family architecture (RMSNorm, RoPE, SwiGLU, optional GQA and tied embeddings)."""

    name: str = MISSING
    vocab_size: int = 256
    """Tokens in the vocabulary; 256 = raw bytes (the byte tokenizer)."""
    hidden_dim: int = 256
    num_layers: int = 6
    num_heads: int = 8
    num_kv_heads: Optional[int] = None
    """Key/value heads for grouped-query attention; null = num_heads (plain multi-head)."""
    mlp_dim: int = 768
    """Inner width of the SwiGLU feed-forward block."""
    max_seq_len: int = 512
    """Context length in tokens; also the training sequence length."""
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    dropout: float = 0.0
    """Attention-probability dropout (transformers' Llama has no other dropout)."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of every weight matrix."""
    tokenizer: str = "byte"
    """'byte' (256 raw bytes, needs no training) or 'pretrained' (loaded from pretrained_path)."""
    pretrained_path: Optional[str] = None
    """Local Hugging Face directory (or hub id when online) to load weights and tokenizer from."""


@dataclass
class HardwareConfig(Section):
    """A device mesh. ttml supports only [1, N] meshes (reference/ttml_api.md)."""

    name: str = MISSING
    mesh_shape: List[int] = field(default_factory=lambda: [1, 1])
    enable_ddp: bool = False
    """Data parallelism over the mesh; must be true exactly when the mesh has more than 1 device."""
    device_ids: Optional[List[int]] = None
    """ttml: which chips of this host the mesh opens (ctx.open_device(mesh_shape, device_ids));
    null = ttml's default (chip 0 for one device, the whole mesh otherwise)."""
    processes: Optional[int] = None
    """torch backend: ranks (processes) that share the data-parallel devices. null = one per CUDA
    device when the machine has as many as the mesh, else 1 (the shards run in one process).
    Set it to exercise a mesh on a laptop, e.g. hardware=n300 hardware.processes=2 (2 CPU ranks)."""
    description: str = ""

    @property
    def num_devices(self) -> int:
        """Devices in the mesh: the product of ``mesh_shape`` (1 for n150, 2 for n300, 32 for galaxy)."""
        n = 1
        for size in self.mesh_shape:
            n *= int(size)
        return n


@dataclass
class TaskConfig(Section):
    name: TaskName = TaskName.scratch


@dataclass
class DataConfig(Section):
    name: str = MISSING
    format: DataFormat = DataFormat.text
    path: Optional[str] = None
    """The corpus file. null = look in $TTEXP_DATA_DIR, then the user cache, then download."""
    filename: str = "tinyshakespeare.txt"
    """File name searched for in $TTEXP_DATA_DIR and the cache when path is null."""
    url: Optional[str] = None
    """Canonical download address, used only when the file is found nowhere else."""
    sha256: Optional[str] = None
    """Expected SHA-256 of a downloaded file; a mismatch is an error."""
    val_fraction: float = 0.1
    """Share held out for validation: the tail of a text corpus; for JSONL, a seeded random
    sample of the examples (used only when val_path is null)."""
    val_path: Optional[str] = None
    """JSONL only: a separate validation file; null = split val_fraction off the training file."""
    prompt_template: str = "### Question:\n{prompt}\n\n### Answer:\n"
    """JSONL only: the text the model sees before each response; {prompt} is the prompt."""


class AdapterName(Enum):
    none = "none"  # full fine-tuning: every parameter is trained
    lora = "lora"  # low-rank adapters (Hu et al. 2021, arXiv:2106.09685); only they are trained


@dataclass
class AdapterConfig(Section):
    """Parameter-efficient fine-tuning (``adapter=lora``), in PEFT's ``LoraConfig`` terms.

    ``target_modules`` uses Hugging Face Llama module names (``q_proj``, ``k_proj``, ``v_proj``,
    ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``); the ttml backend translates them to
    ttml's names. The update added to a target's weight is ``(lora_alpha / r) * B @ A``.
    """

    name: AdapterName = AdapterName.none
    r: int = 8
    """Rank of each adapter: A is (r, in_features), B is (out_features, r)."""
    lora_alpha: float = 16.0
    """Scale numerator: the update is multiplied by lora_alpha / r."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input during training."""
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    bias: str = "none"
    """PEFT's bias setting: 'none', 'all' or 'lora_only' (which biases are trained)."""


@dataclass
class OptimizerConfig(Section):
    name: str = "adamw"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    use_moreh_adamw: bool = False
    """ttml only: use MorehAdamW (the lessons' setting); the torch backend ignores it."""
    use_kahan_summation: bool = False
    """ttml only, where the API supports it."""
    fused: Optional[bool] = None
    """torch only: fused AdamW kernel; null = on (CPU and CUDA have one)."""


@dataclass
class SchedulerConfig(Section):
    name: SchedulerName = SchedulerName.warmup_cosine
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of training.learning_rate (decaying schedules)."""


class WandbMode(Enum):
    online = "online"  # stream to the W&B server (needs `wandb login` or WANDB_API_KEY)
    offline = "offline"  # write <run>/wandb/offline-run-*; upload later with `wandb sync DIR`
    disabled = "disabled"  # W&B calls are no-ops (nothing written)


@dataclass
class WandbConfig(Section):
    """Weights & Biases, used when ``enabled`` (``logger=wandb``). The local record is kept too."""

    enabled: bool = False
    mode: Optional[WandbMode] = None
    """null = WANDB_MODE from the environment, else online. A value set here, in a preset or on
    the command line (logger.wandb.mode=offline) wins over WANDB_MODE."""
    project: Optional[str] = None
    """null = WANDB_PROJECT, else 'ttexp'."""
    entity: Optional[str] = None
    """Team or user; null = WANDB_ENTITY, else the default entity of the logged-in account."""
    group: Optional[str] = None
    """null = WANDB_RUN_GROUP, else the sweep (its directory name) in a multirun, else none."""
    name: Optional[str] = None
    """null = WANDB_NAME, else a readable name from the run name and the swept overrides."""
    tags: List[str] = field(default_factory=list)
    """Added to the automatic tags: model, hardware, task."""
    notes: Optional[str] = None
    log_model: bool = False
    """Upload final_model/ as a W&B artifact of type 'model' at the end of a completed run."""
    init_timeout_s: float = 60.0
    """Seconds to wait for W&B to start before carrying on with the local record only."""


@dataclass
class LoggerConfig(Section):
    name: str = "local"
    """'local' writes training.log, metrics.jsonl and plots in the run directory (always on)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class HalvingConfig(Section):
    """Successive halving over exact resume (README, "Successive halving")."""

    rungs: List[int] = field(default_factory=list)
    """Optimizer steps at which the sweep cuts: every job trains to rungs[0], the best ``keep``
    fraction by validation loss continues from its own checkpoint to the next rung, and the
    survivors of the last cut train to training.max_steps. [] = off (a plain grid)."""
    keep: float = 0.33
    """Fraction of the jobs at a rung that go on (at least one), rounded up."""


@dataclass
class SweepConfig(Section):
    """Sweeps and the experiments.md summaries (README, "Sweeps and experiments.md")."""

    resume: bool = False
    """Re-running a sweep into the same hydra.sweep.dir: skip each job whose directory already
    holds a completed result.json with the same overrides; the others run again."""
    journal: Optional[str] = "experiments/experiments.md"
    """The team journal, regenerated after every run and sweep under outputs_root; null = none."""
    pin_devices: Optional[int] = None
    """Give each sweep job a free device of 0..pin_devices-1, leased from a lock-file pool
    (torch: cuda:K; ttml: chip K) and held until the job ends, so parallel
    single-device jobs each get their own, e.g. 8 on a T3K or an 8-GPU box together with
    hydra/launcher=joblib hydra.launcher.n_jobs=8. null = off."""
    outputs_root: str = "outputs"
    """Runs and sweeps under this folder are listed in the journal; others only get their own
    experiments.md (a sweep) or nothing (a single run)."""
    recoveries: int = 2
    """hydra/launcher=joblib: how many times a sweep replaces its process pool after a worker
    process is killed (SIGKILL, the out-of-memory killer) and re-dispatches its unfinished jobs
    (each from its last checkpoint); the killed worker's job stays lost. 0 = the sweep stops."""
    halving: HalvingConfig = field(default_factory=HalvingConfig)
    """Successive halving: ``sweep.halving.rungs=[100,300]`` (steps) and ``sweep.halving.keep``."""


@dataclass
class TrainingConfig(Section):
    max_steps: int = 1000
    """Optimizer steps to train for (absolute: a resumed run stops at the same step)."""
    stop_at_step: Optional[int] = None
    """Stop after this optimizer step (validated and checkpointed there) while the learning-rate
    schedule still runs to max_steps, so resume=auto later continues the same curve; successive
    halving (sweep.halving) sets it per rung. null = train to max_steps."""
    batch_size: int = 16
    """Global batch: sequences per micro-step over all data-parallel devices."""
    gradient_accumulation_steps: int = 1
    """Micro-steps per optimizer step; effective batch = batch_size * this."""
    learning_rate: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to matrices only (not norms)."""
    warmup_steps: int = 0
    seed: int = 42
    validation_frequency: int = 500
    """Validate every this many steps (and at the last step); 0 = only at the end."""
    validation_batches: Optional[int] = None
    """Batches per validation; null = the whole validation split, deterministically."""
    validation_batch_size: Optional[int] = None
    """Global batch for validation (the lessons' validation_batch_size); null = batch_size."""
    checkpoint_frequency: int = 1000
    """Save a checkpoint every this many steps; 0 = none during training. The last step is always
    checkpointed before final_model/ is written, so a failure there loses no training."""
    log_frequency: int = 10
    """Write a line to training.log and the console every this many steps."""
    keep_last_n: Optional[int] = None
    """Keep this many most recent checkpoints; null = keep all."""
    keep_best_n: Optional[int] = None
    """Also keep this many checkpoints with the lowest validation loss (the best is always kept)."""
    use_clip_grad_norm: bool = True
    clip_grad_norm_max_norm: float = 1.0
    precision: Precision = Precision.auto
    compile: Union[bool, str] = "auto"
    """torch.compile the model: true, false, or auto = compile after the first steps when the
    rest of the run repays the compile time (ttexp.backends.compile; torch backend only)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in backward instead of keeping them: less
    memory for activations, about one more forward's worth of compute per step."""


@dataclass
class DecodingConfig(Section):
    """How to sample a continuation (the lessons' eval_config); every backend decodes with these."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    """0 = greedy decoding."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 = off."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 = off."""
    repetition_penalty: float = 1.0
    """CTRL's penalty on tokens already in the text (Keskar et al. 2019); 1.0 = off."""
    seed: int = 1234
    """Sampling seed; generation never touches the training random state."""


@dataclass
class GenerationConfig(DecodingConfig):
    """Validation samples and evaluation answers: the prompts, and how to decode them."""

    prompts: List[str] = field(default_factory=lambda: ["ROMEO:"])


def _lesson_test_questions() -> List[str]:
    """The fine-tuning lesson's ten test questions (ct4, test_trickster.py)."""
    return [
        "What is a neural network?", "How do I learn machine learning?",
        "Explain what backpropagation does", "What's the difference between AI and ML?",
        "What is a large language model?", "How does attention mechanism work?",
        "What is fine-tuning?", "Explain what embeddings are",
        "What's the difference between training and inference?", "What is gradient descent?",
    ]


@dataclass
class EvalConfig(Section):
    """task=eval: which model to evaluate, what to compare it with, what to ask."""

    checkpoint: Optional[str] = None
    """A final_model/ directory, a checkpoints/step_N/ directory, or a run directory."""
    compare_to: Optional[str] = None
    """null = no comparison; 'base' = the model the checkpoint was fine-tuned from (as its run
    recorded it); or a model directory. Answers go side by side into results_file."""
    allow_random_base: bool = False
    """Compare with a randomly initialised model when the checkpoint has no pretrained base
    (it was trained from scratch). Off: such a comparison is refused."""
    questions: List[str] = field(default_factory=_lesson_test_questions)
    """Questions to answer (formatted with data.prompt_template for JSONL data)."""
    results_file: str = "eval_results.txt"
    """File in the run directory that receives the answers."""


@dataclass
class RunConfig(Section):
    """The whole run: one section per config group plus run-level keys."""

    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    backend: Backend = Backend.auto
    device: Optional[str] = None
    """torch device override (cpu, cuda, cuda:1); null = CUDA when available, else CPU."""
    name: str = "run"
    """A label for the run, shown in the record and summaries."""
    output_dir: str = MISSING
    """The run directory; defaults to Hydra's output directory."""
    init_from: Optional[str] = None
    """Start a new run from the weights in this final_model/ or checkpoint directory (weights only)."""
    resume: Optional[str] = None
    """'auto': continue this run directory from its newest valid checkpoint (start fresh if none);
    a checkpoint or run directory: continue from it. Restores weights, optimizer, RNG and step."""


def register_configs() -> None:
    """Store the schema in Hydra's ConfigStore as ``ttexp_schema`` (config.yaml lists it first)
    and register the plugin that serves ``experiments/*.yaml`` as ``experiment=NAME`` and ttexp's
    joblib launcher as ``hydra/launcher=joblib`` (:mod:`ttexp.config.launchers`).

    Tests that compose the config must call this (or import :mod:`ttexp.__main__`), or Hydra
    fails with "Could not load 'ttexp_schema'".
    """
    ConfigStore.instance().store(name="ttexp_schema", node=RunConfig)
    if not OmegaConf.has_resolver("ttexp_fs_name"):  # hydra.run.dir: the run name as a file name
        OmegaConf.register_new_resolver("ttexp_fs_name", fs_name)
    if not OmegaConf.has_resolver("ttexp_model_name"):  # task=eval: named after its model
        OmegaConf.register_new_resolver("ttexp_model_name", recorded_model_name)
    for plugin in (ExperimentsConfigSource, TtexpExperimentsSearchPath):
        Plugins.instance().register(plugin)
    register_joblib_launcher()  # after the plugin scan above: hydra/launcher=joblib is ttexp's


