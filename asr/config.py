"""Experiment configs: YAML files mapped onto dataclasses, with `key=value` overrides.

One YAML file describes one experiment (features, augmentation, model, training, decoding), so
a recipe's `conf/` is a readable list of what was run.  Unknown keys are errors, not silently
ignored: a typo in a config must not train the wrong model for a day; so are values out of range
(`num_layers: 0`, `amp: fp8`, `batch_seconds: -5`), each named by its key (`validate`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


@dataclass
class FeatureConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    window: str = "hann"
    preemphasis: float = 0.97
    dither: float = 1e-5  # training only: breaks exact digital silence, whose log is -inf
    cmvn: str | None = None  # JSON file with global mean/std, computed by `asr cmvn`
    # Subtract each utterance's own mean log-mel (after global CMVN): removes the long-term spectral
    # envelope a speaker and a microphone add. Needs the whole utterance, so not for streaming.
    utterance_cmn: bool = False


@dataclass
class AugmentConfig:
    speed_perturb: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]
    gain_db: list[float] = field(default_factory=list)  # [low, high] random gain
    noise_snr_db: list[float] = field(default_factory=list)  # [low, high] white-noise SNR
    # share of utterances band-limited to 4 kHz (down to 8 kHz and back): a wide-band model then
    # also hears telephone-band speech, as 8 kHz input resampled to the model's rate sounds
    narrowband_prob: float = 0.0
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_ratio: float = 0.0  # max width of one time mask, as a share of the utterance


@dataclass
class ModelConfig:
    arch: str = "ctc"  # ctc | speaker | tts
    cell: str = "lstm"  # lstm | gru
    unit: str = "char"  # char | word: output tokens, taken from the training text
    num_layers: int = 3
    hidden_size: int = 256
    bidirectional: bool = True
    proj_size: int = 0  # LSTM projection (LSTMP); 0 = none
    dropout: float = 0.1
    subsample: str = "stack"  # none | stack (low frame rate) | conv (DeepSpeech2's 2-D convolutions, 2x)
    stack_frames: int = 3
    conv_channels: int = 32
    # ctc: deepspeech.pytorch's lookahead convolution after a unidirectional RNN: each output
    # frame also sees this many future frames (a streaming delay of as many output frames); 0 = none
    lookahead: int = 0
    # LayerNorm on each recurrent layer's output: keeps a deep (uni)directional stack's activations
    # from saturating, which is what held unidirectional models on CTC's all-blank plateau
    layer_norm: bool = False
    # speaker-model fields (ignored by ctc)
    embedding_dim: int = 128
    extra: dict = field(default_factory=dict)  # arch-specific knobs not shared by the others


@dataclass
class TrainConfig:
    train_data: list[str] = field(default_factory=list)
    dev_data: list[str] = field(default_factory=list)
    train_shards: str | None = None  # shards.json/dir/URL/pattern to stream instead of train_data's audio (asr.shards)
    max_epochs: int = 20
    max_steps: int = 0  # 0 = max_epochs decides
    batch_seconds: float = 200.0  # padded audio per batch: the frame budget of a bucket
    max_batch_size: int = 64
    max_duration: float = 30.0  # longer training utterances are skipped and reported
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    final_lr_ratio: float = 0.05  # cosine decay ends at lr * this
    clip_grad_norm: float = 5.0  # exploding gradients in RNNs: clip the global norm
    grad_accum: int = 1
    # deepspeech.pytorch's SortaGrad: the first N epochs go shortest batch first (short utterances
    # are easy alignments, so CTC leaves its all-blank phase sooner); 0 = shuffled from the start
    sortagrad: int = 0
    amp: str = "bf16"  # bf16 | fp16 | none; only used on CUDA
    seed: int = 0
    num_workers: int = 1
    checkpoint_every: int = 200  # steps
    keep_checkpoints: int = 3
    eval_every: int = 0  # steps; 0 = once per epoch
    patience: int = 5  # evaluations without improvement before early stopping; 0 = never
    log_every: int = 20
    init_from: str | None = None  # a model package or exp dir to start from (fine-tuning)


@dataclass
class DecodeConfig:
    decoder: str = "greedy"  # greedy | beam
    beam_width: int = 16
    lm: str | None = None
    alpha: float = 0.5
    beta: float = 1.0


@dataclass
class ExperimentConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Keys a section no longer has that old configs and package headers still carry: read and ignored,
# so an old package keeps loading. decode.batch_size: no decoder read it (--batch-size sets it).
RETIRED = {"DecodeConfig": {"batch_size"}}


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys raise."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys to values, got {type(data).__name__} "
                          f"{str(data)[:40]!r}")
    data = {k: v for k, v in (data or {}).items() if k not in RETIRED.get(cls.__name__, ())}
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        f = known[name]
        default = getattr(cls(), name) if not dataclasses.is_dataclass(f.type) else None
        sub = _dataclass_type(cls, name)
        if sub is not None:
            if value is None:  # `model:` with nothing under it reads as null: not "the defaults"
                raise ConfigError(f"{f'{where}.{name}'.lstrip('.')}: is null; give its keys, or remove the "
                                  "section to use the defaults")
            kwargs[name] = from_dict(sub, value, f"{where}.{name}".lstrip("."))
        else:
            kwargs[name] = _coerce(value, default, f"{where}.{name}".lstrip("."))
    return cls(**kwargs)


def _dataclass_type(cls, name):
    hint = cls.__dataclass_fields__[name].default_factory  # type: ignore[attr-defined]
    if hint is not dataclasses.MISSING and dataclasses.is_dataclass(hint):
        return hint
    return None


def _coerce(value, default, where):
    """YAML gives ints for floats and strings for None-able paths; accept those, refuse the rest."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(default, (int, float, str, list, dict)) and not isinstance(value, type(default)):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


# Allowed values, checked after parsing: (section, key) -> (test, what the test means).
def _at_least(low):
    return (lambda v: v >= low), f">= {low}"


def _above(low):
    return (lambda v: v > low), f"> {low}"


def _one_of(*choices):
    return (lambda v: v in choices), f"one of {list(choices)}"


def _fraction(v):
    return 0 <= v < 1


RULES = {
    "features": {"sample_rate": _above(0), "n_fft": ((lambda v: 1 <= v <= 2**16), "in [1, 65536]"),
                 "win_length": _at_least(1), "hop_length": _at_least(1), "n_mels": _at_least(1),
                 "f_min": _at_least(0), "dither": _at_least(0), "preemphasis": (_fraction, "in [0, 1)"),
                 "window": _one_of("hann", "hamming")},
    "augment": {"freq_masks": _at_least(0), "freq_mask_width": _at_least(0), "time_masks": _at_least(0),
                "time_mask_ratio": ((lambda v: 0 <= v <= 1), "in [0, 1]"),
                "speed_perturb": ((lambda v: all(x > 0 for x in v)), "a list of factors > 0"),
                "gain_db": ((lambda v: len(v) in (0, 2)), "[] or [low, high]"),
                "noise_snr_db": ((lambda v: len(v) in (0, 2)), "[] or [low, high]")},
    "model": {"cell": _one_of("lstm", "gru"), "unit": _one_of("char", "word"), "num_layers": _at_least(1),
              "hidden_size": _at_least(1), "proj_size": _at_least(0), "dropout": (_fraction, "in [0, 1)"),
              "subsample": _one_of("none", "stack", "conv"), "stack_frames": _at_least(1),
              "conv_channels": _at_least(1), "embedding_dim": _at_least(1)},
    "train": {"max_epochs": _at_least(1), "max_steps": _at_least(0), "batch_seconds": _above(0),
              "max_batch_size": _at_least(1), "max_duration": _above(0), "lr": _above(0),
              "weight_decay": _at_least(0), "warmup_steps": _at_least(0),
              "final_lr_ratio": ((lambda v: 0 <= v <= 1), "in [0, 1]"), "clip_grad_norm": _above(0),
              "grad_accum": _at_least(1), "amp": _one_of("bf16", "fp16", "none"), "num_workers": _at_least(0),
              "checkpoint_every": _at_least(1), "keep_checkpoints": _at_least(1), "eval_every": _at_least(0),
              "patience": _at_least(0), "log_every": _at_least(1)},
    "decode": {"decoder": _one_of("greedy", "beam"), "beam_width": _at_least(1),
               "alpha": (math.isfinite, "finite"), "beta": (math.isfinite, "finite")},
}


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Refuse values no run can use, naming the key: a config that trains nothing must not exit 0."""
    for section, rules in RULES.items():
        values = getattr(cfg, section)
        for key, (ok, meaning) in rules.items():
            value = getattr(values, key)
            numbers = value if isinstance(value, list) else [value]
            if any(isinstance(x, float) and not math.isfinite(x) for x in numbers) and meaning != "finite":
                raise ConfigError(f"{section}.{key}: must be finite, got {value!r}")
            if not ok(value):
                raise ConfigError(f"{section}.{key}: must be {meaning}, got {value!r}")
    f = cfg.features
    if f.win_length > f.n_fft:
        raise ConfigError(f"features.win_length: must be <= features.n_fft ({f.n_fft}), got {f.win_length}")
    if f.f_max is not None and not f.f_min < f.f_max <= f.sample_rate / 2:
        raise ConfigError(f"features.f_max: must be in (f_min, sample_rate / 2] = ({f.f_min}, {f.sample_rate / 2}], "
                          f"got {f.f_max}")
    return cfg


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`train.lr=3e-4 model.num_layers=5` -> nested dict updates (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=3e-4")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = (), data: dict | None = None) -> ExperimentConfig:
    if data is None:
        data = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except FileNotFoundError:
                raise ConfigError(f"{path}: config file not found") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: invalid YAML: {e}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: the top level must be sections (features:, model:, train: ...), "
                                  f"not a {type(data).__name__}")
    if path is not None:
        data = _with_base(data, Path(path))
    data = apply_overrides(json.loads(json.dumps(data)), list(overrides))
    try:
        return validate(from_dict(ExperimentConfig, data))
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def _with_base(data: dict, path: Path, depth: int = 0) -> dict:
    """`base: other.yaml` (relative to this file): start from that config and change what is here,
    so a variant experiment states only how it differs."""
    base = data.pop("base", None)
    if base is None:
        return data
    if depth > 8:
        raise ConfigError(f"{path}: 'base' chain too deep (a cycle?)")
    base_path = path.parent / base
    try:
        parent = yaml.safe_load(base_path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: base config {base_path} not found") from None
    merged = _with_base(parent, base_path, depth + 1)
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

