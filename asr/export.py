"""CTC models as ONNX graphs, and ONNX Runtime behind the same interface as a torch model.

`export_onnx` writes one self-describing .onnx file: waveforms and their lengths in, per-frame
log-probabilities and their lengths out, batch and time axes dynamic, the frontend inside the
graph, and the package's header (arch, config, vocabulary, info) in the model's metadata, so the
file alone is enough to transcribe (`asr transcribe --backend onnxruntime --model x.onnx`).

- The frontend: torch.stft does not export, so the graph computes the same short-time Fourier
  transform as a strided convolution with the windowed DFT basis (the same zero padding of
  n_fft/2 at both ends, the same frames). Measured against torch's FFT path: max |log-prob diff|
  ~1e-5 on the shipped digits members (the parity test holds it below 1e-3).
- The recurrent layers are traced on the exact padded CPU path (asr.models.rnn), so an
  utterance's output does not depend on its batch in the graph either.
- An ensemble (`ctc-ensemble`) is exported whole: every member is a subgraph of the one file,
  with outputs log_probs_<i>, lengths_<i> per member; the sequence-level combination (n-best
  proposals ranked by the members' mean CTC likelihood) stays in Python, as with torch.
- int8: ONNX Runtime's dynamic quantizer on the exported graph (MatMul and LSTM weights int8).

The exporter is torch's TorchScript-based one (`dynamo=False`): it needs no onnxscript, and the
dynamo exporter did not handle the data-dependent reversal gathers at the time of writing.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .features import LogMel, lengths_to_mask
from .models.rnn import RecurrentLayer

FORMAT = "asr-onnx"
OPSET = 17
EXPORTABLE_ARCHS = ("ctc", "ctc-ensemble")


def _need_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise RuntimeError(f"ONNX export and --backend onnxruntime need the onnx and onnxruntime packages "
                           f"({e.name} is missing): pip install 'asr[onnx]'") from None
    return onnx, onnxruntime


class ConvLogMel(nn.Module):
    """LogMel (asr.features) with its STFT as a convolution with the windowed DFT basis: ONNX has
    no FFT torch can export to, and a convolution runs everywhere. Same frames, same numbers up
    to float32 rounding."""

    def __init__(self, logmel: LogMel):
        super().__init__()
        cfg = self.cfg = logmel.cfg
        window = torch.zeros(cfg.n_fft, dtype=torch.float64)
        left = (cfg.n_fft - cfg.win_length) // 2  # torch.stft centres a shorter window in n_fft
        window[left:left + cfg.win_length] = logmel.window.double()
        k = torch.arange(cfg.n_fft // 2 + 1, dtype=torch.float64)[:, None]
        n = torch.arange(cfg.n_fft, dtype=torch.float64)[None, :]
        angle = 2 * math.pi * k * n / cfg.n_fft
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2K, n_fft)
        self.register_buffer("basis", basis.float().unsqueeze(1), persistent=False)
        self.register_buffer("mel_fb", logmel.mel_fb.clone(), persistent=False)
        self.num_frames = logmel.num_frames

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        wav = wav.float()
        if cfg.preemphasis > 0:
            wav = torch.cat([wav[:, :1], wav[:, 1:] - cfg.preemphasis * wav[:, :-1]], dim=1)
        wav = wav * lengths_to_mask(wav_lens, wav.size(1)).to(wav.dtype)
        half = cfg.n_fft // 2
        spec = nn.functional.conv1d(nn.functional.pad(wav, (half, half)).unsqueeze(1), self.basis,
                                    stride=cfg.hop_length)  # (B, 2K, frames)
        re, im = spec.chunk(2, dim=1)
        power = re.square() + im.square()
        mel = torch.matmul(self.mel_fb, power).transpose(1, 2)
        return torch.log(mel + 1e-6), self.num_frames(wav_lens)


class _Graph(nn.Module):
    """What is traced: the model with an exportable frontend, outputs flattened to tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).cpu().float().eval()
        for module in self.model.modules():
            if hasattr(module, "logmel") and isinstance(module.logmel, LogMel):
                module.logmel = ConvLogMel(module.logmel)
            if isinstance(module, RecurrentLayer):
                module.packed = False  # the exact padded path, traced

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor):
        pairs = self.model.ctc_posteriors(wav, wav_lens)
        return tuple(t for lp, n in pairs for t in (lp, n.to(torch.int64)))


def output_names(model) -> list[str]:
    if model.arch == "ctc":
        return ["log_probs", "lengths"]
    return [f"{name}_{i}" for i in range(len(model.members)) for name in ("log_probs", "lengths")]


def export_onnx(model, path: str | os.PathLike, int8: bool = False, opset: int = OPSET) -> Path:
    """Write `model` (a float CTC model or ensemble, as load_model gives it) as an ONNX file."""
    onnx, _ = _need_onnx()
    arch = getattr(model, "arch", type(model).__name__)
    if arch not in EXPORTABLE_ARCHS:
        raise ValueError(f"asr export: a {arch!r} model; ONNX export is for {list(EXPORTABLE_ARCHS)} models")
    if getattr(model, "quantization", None):
        raise ValueError("asr export: pass the float model (load_model(..., quantized=False)); "
                         "--int8 quantizes the exported graph with ONNX Runtime's quantizer instead")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _Graph(model)
    sr = model.cfg.features.sample_rate
    # two utterances of different lengths, so nothing batch- or length-specific is baked in
    wav = torch.randn(2, sr) * 0.1
    lens = torch.tensor([sr, sr * 3 // 4])
    names = output_names(model)
    axes = {"wav": {0: "batch", 1: "samples"}, "wav_lens": {0: "batch"}}
    for name in names:
        axes[name] = {0: "batch", 1: "frames"} if name.startswith("log_probs") else {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic, which is symbolic here
            torch.onnx.export(graph, (wav, lens), str(raw), input_names=["wav", "wav_lens"], output_names=names,
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(tmp) / "int8.onnx"
            quantize_dynamic(str(raw), str(quantized), weight_type=QuantType.QInt8)
            raw = quantized
        proto = onnx.load(str(raw))
    config = model.cfg.to_dict()
    config["decode"]["lm"] = _lm_relative_to(model, path)
    meta = {"format": FORMAT, "arch": arch, "config": json.dumps(config, ensure_ascii=False),
            "model_meta": json.dumps(model.package_meta(), ensure_ascii=False),
            "info": json.dumps(model.info, ensure_ascii=False),
            "quantization": "int8-dynamic" if int8 else ""}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp_out = path.with_name(path.name + ".part")
    onnx.save(proto, str(tmp_out))
    os.replace(tmp_out, path)
    return path


def _lm_relative_to(model, path: Path) -> str | None:
    """The model's decode.lm as the file at `path` must name it (relative to itself, as packages do)."""
    from .package import package_relative_lm

    lm = model.cfg.decode.lm
    if not lm or os.path.isabs(lm):
        return lm
    return package_relative_lm(model.package_lm.file() if model.package_lm is not None else lm, path)


class OnnxCTCModel(nn.Module):
    """An exported CTC model (or ensemble) run by ONNX Runtime, called like the torch model:
    (B, S) waveforms and (B,) lengths -> (log-probs, lengths), or a list of them for an ensemble.
    Carries cfg, vocab, frame_shift (and members, each with its frame_shift) for the Transcriber.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        onnx, ort = _need_onnx()
        from .config import load_config
        from .models import model_class
        from .package import resolve_package_lm

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ValueError(f"{path}: ONNX Runtime cannot load it ({e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not an ONNX model written by `asr export` (no '{FORMAT}' format marker)")
        cfg = load_config(data=json.loads(meta["config"]))
        cfg.features.cmvn = None
        # The torch model's structure gives vocab, frame shifts and members; on the meta device it
        # allocates no weights.
        with torch.device("meta"):
            skeleton = model_class(meta["arch"]).from_package_meta(cfg, json.loads(meta["model_meta"]))
        self.__dict__["skeleton"] = skeleton  # not a submodule: its meta tensors are no weights
        self.arch, self.cfg, self.vocab = meta["arch"], skeleton.cfg, skeleton.vocab
        self.info = json.loads(meta.get("info") or "{}")
        self.quantization = meta.get("quantization") or None
        self.package_path = path
        self.package_lm = resolve_package_lm(cfg.decode.lm, path)  # as a package's is (see export_onnx)
        self.register_buffer("_device", torch.zeros(0), persistent=False)  # where inputs go: the CPU
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def members(self):
        return self.skeleton.members

    def ctc_members(self):
        """The skeleton's members (frame shifts, vocabulary); the ONNX graph runs them all at once."""
        return self.skeleton.ctc_members()

    def ctc_posteriors(self, wav: torch.Tensor, wav_lens: torch.Tensor):
        feed = {"wav": wav.detach().cpu().float().numpy(), "wav_lens": wav_lens.detach().cpu().to(torch.int64).numpy()}
        out = [torch.from_numpy(np.asarray(x)) for x in self.session.run(self.outputs, feed)]
        return [(out[i], out[i + 1]) for i in range(0, len(out), 2)]

    @property
    def frame_shift(self) -> float:
        return self.skeleton.frame_shift

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor):
        pairs = self.ctc_posteriors(wav, wav_lens)
        return pairs if self.arch == "ctc-ensemble" else pairs[0]


def onnx_model(model_or_path, int8: bool = False, threads: int | None = None, cache_dir=None) -> OnnxCTCModel:
    """An .onnx file as is; a package (name, file, exp dir) exported first, into cache_dir (a
    temporary directory by default) — the export takes seconds, so `asr export` it once to reuse."""
    if str(model_or_path).endswith(".onnx"):
        return OnnxCTCModel(model_or_path, threads)
    from .registry import load_model

    model = load_model(model_or_path, quantized=False, arch=EXPORTABLE_ARCHS)
    if cache_dir is not None:
        return OnnxCTCModel(export_onnx(model, Path(cache_dir) / "model.onnx", int8), threads)
    # The package's LM is linked beside the exported file (as a package keeps it), so the folder
    # lives as long as the model that reads from it.
    tmp = tempfile.TemporaryDirectory(prefix="asr-onnx-")
    onnx = OnnxCTCModel(export_onnx(model, Path(tmp.name) / "model.onnx", int8), threads)
    onnx.__dict__["_export_dir"] = tmp
    return onnx
