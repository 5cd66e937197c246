"""int8 inference on CPU: dynamic quantization of the recurrent and linear layers.

Weights become int8 (per tensor, symmetric), activations are quantized on the fly per batch, so
no calibration data is needed and quantizing the same float weights always gives the same model.
That is why a package made with `asr package --int8` keeps its float weights and only records
`quantization: int8-dynamic` in its header: loading it rebuilds the int8 model from them
(`package.load_package`), and safetensors need not hold torch's packed int8 weights (opaque
objects it cannot store).

The exact padded CPU path of `asr.models.rnn` survives: each direction of a bidirectional layer
becomes its own unidirectional quantized LSTM/GRU, and the backward one runs on sequences
reversed within their own lengths, as the float path does. A quantized bidirectional module
would run its backward direction from the end of the padding instead.

Measured (BENCHMARKS.md, one thread, CPU time, interleaved with fp32): the DeepSpeech2 size (conv +
5x1024 BiLSTM) runs 3.4x faster at batch 1 for a 10 s utterance, 4.8x for 5 s.
torch.ao.quantization warns that it is deprecated, but torch 2.11 still ships it and the successor
(torchao's `quantize_`) has no recurrent layers; the warning is silenced here.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .models.rnn import RecurrentLayer, reverse_within_lengths

INT8 = "int8-dynamic"  # the header value of a package's `quantization` field
QUANTIZATIONS = (INT8,)


def _quantize_dynamic(module: nn.Module, types: set) -> None:
    """Swap, in place, the children of `module` (at any depth) whose type is in `types`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(module, types, dtype=torch.qint8, inplace=True)


class Int8RecurrentLayer(nn.Module):
    """A RecurrentLayer whose directions are int8 unidirectional LSTM/GRU modules (CPU only)."""

    def __init__(self, layer: RecurrentLayer):
        super().__init__()
        rnn = layer.rnn
        self.bidirectional = layer.bidirectional
        self.output_size = layer.output_size
        # quantize_dynamic swaps children only, so the float directions go in as children
        self.directions = nn.ModuleList(_one_direction(rnn, suffix)
                                        for suffix in ([""] + ["_reverse"] * layer.bidirectional))
        _quantize_dynamic(self.directions, {type(rnn)})

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            raise RuntimeError("an int8 (dynamically quantized) model runs on CPU only; load it with device='cpu'")
        fwd = self.directions[0](x)[0]  # padding trails, so the forward direction is exact
        if not self.bidirectional:
            return fwd
        bwd = reverse_within_lengths(self.directions[1](reverse_within_lengths(x, lengths))[0], lengths)
        return torch.cat([fwd, bwd], dim=-1)


def _one_direction(rnn: nn.LSTM | nn.GRU, suffix: str) -> nn.Module:
    """A unidirectional float copy of one direction of a one-layer nn.LSTM/nn.GRU."""
    kwargs = {"proj_size": rnn.proj_size} if getattr(rnn, "proj_size", 0) else {}
    uni = type(rnn)(rnn.input_size, rnn.hidden_size, batch_first=True, **kwargs)
    with torch.no_grad():
        for name, _ in uni.named_parameters():
            getattr(uni, name).copy_(getattr(rnn, name + suffix))
    return uni.eval()


def quantize_int8(model: nn.Module) -> nn.Module:
    """The model with int8 recurrent and linear layers, in place; float32 frontend and convolutions.

    Works for a CTC model and for an ensemble of them (every member is quantized). Eval only.
    """
    if any(p.is_cuda for p in model.parameters()):
        raise ValueError("int8 quantization is for CPU inference: move the model to the CPU first")
    model.eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RecurrentLayer):
                setattr(parent, name, Int8RecurrentLayer(child))
    _quantize_dynamic(model, {nn.Linear})
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d):
            # The convolutions stay float32, and once the LSTMs are int8 they are a quarter of the
            # DS2 size's time; oneDNN's channels-last kernels run them 3.3x faster at batch 1 (10 s,
            # one thread: 53 vs 175 ms), equal up to float rounding (1e-5). The float model keeps
            # NCHW: it also trains, on GPUs too, where this layout is unmeasured.
            conv.to(memory_format=torch.channels_last)
    model.quantization = INT8
    return model
