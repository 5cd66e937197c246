"""Stacked (bi)directional recurrent layers that give the same output for an utterance whatever
batch it is in, on GPU and on CPU.

On CUDA the batch is packed so cuDNN does no work on padding.  On CPU packed sequences run about
4x slower than padded batches (oneDNN only has the padded path), so there we run each direction
of a layer as a padded unidirectional pass instead.  Padding is exact for the forward direction
because it trails; for the backward direction we reverse every sequence within its own length,
run it forwards, and reverse back.  Both paths use the weights of one `nn.LSTM`/`nn.GRU` per
layer, so a model trained on one device runs unchanged on the other.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import ExperimentConfig
from ..features import Frontend, lengths_to_mask

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each (B, T, ...) sequence in time over its first lengths[b] steps; padding stays put.

    The mapping is its own inverse.
    """
    T = x.size(1)
    t = torch.arange(T, device=x.device).unsqueeze(0)
    lens = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(t < lens, lens - 1 - t, t)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


class RecurrentLayer(nn.Module):
    """One LSTM or GRU layer, optionally bidirectional, over padded (B, T, F) batches."""

    def __init__(self, input_size: int, hidden_size: int, cell: str = "lstm", bidirectional: bool = True,
                 proj_size: int = 0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell: {cell!r} is not one of {sorted(CELLS)}")
        if proj_size and cell != "lstm":
            raise ValueError("model.proj_size: projections exist for LSTM cells only")
        kwargs = {"proj_size": proj_size} if proj_size else {}
        self.cell = cell
        self.rnn = CELLS[cell](input_size, hidden_size, batch_first=True, bidirectional=bidirectional, **kwargs)
        self.bidirectional = bidirectional
        per_dir = proj_size or hidden_size
        self.output_size = per_dir * (2 if bidirectional else 1)
        self.packed = None  # None: packed on CUDA, exact padded elsewhere; True/False forces a path

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        use_packed = x.is_cuda if self.packed is None else self.packed
        if use_packed:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
            return out
        fwd = self._direction(x, "")
        if not self.bidirectional:
            return fwd
        bwd = reverse_within_lengths(self._direction(reverse_within_lengths(x, lengths), "_reverse"), lengths)
        return torch.cat([fwd, bwd], dim=-1)

    def forward_chunk(self, x: torch.Tensor, state: tuple | None) -> tuple[torch.Tensor, tuple]:
        """The next (B, T, F) frames of unpadded streams, starting from `state` (None: the start)
        -> (output, state after them): (h,) for a GRU, (h, c) for an LSTM. Chunk by chunk this
        is the forward pass over the whole stream; only a unidirectional layer has one."""
        if self.bidirectional:
            raise ValueError("a bidirectional layer reads each utterance from its end too: it cannot "
                             "run chunk by chunk (train with model.bidirectional: false)")
        return self._direction(x, "", state, with_state=True)

    def _direction(self, x: torch.Tensor, suffix: str, state: tuple | None = None, with_state: bool = False):
        """One direction's weights run as a unidirectional padded pass (oneDNN's fast path)."""
        rnn = self.rnn
        names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
        if rnn.proj_size:
            names.append("weight_hr_l0")
        params = [getattr(rnn, n + suffix) for n in names]
        B = x.size(0)
        if state is None:
            state = (x.new_zeros(1, B, rnn.proj_size or rnn.hidden_size),)
            if self.cell == "lstm":
                state += (x.new_zeros(1, B, rnn.hidden_size),)
        if self.cell == "lstm":
            out, h, c = torch.lstm(x, state, params, True, 1, 0.0, self.training, False, True)
            final = (h, c)
        else:
            out, h = torch.gru(x, state[0], params, True, 1, 0.0, self.training, False, True)
            final = (h,)
        return (out, final) if with_state else out


class StackedRNN(nn.Module):
    """N recurrent layers with dropout between them; the encoder of every model in the toolkit."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, cell: str = "lstm",
                 bidirectional: bool = True, proj_size: int = 0, dropout: float = 0.0,
                 layer_norm: bool = False):
        super().__init__()
        layers = []
        size = input_size
        for _ in range(num_layers):
            layer = RecurrentLayer(size, hidden_size, cell, bidirectional, proj_size)
            layers.append(layer)
            size = layer.output_size
        self.layers = nn.ModuleList(layers)
        # frame by frame, so it streams: a chunk's normalised outputs do not depend on other chunks
        self.norms = nn.ModuleList(nn.LayerNorm(layer.output_size) for layer in layers) if layer_norm else None
        self.dropout = nn.Dropout(dropout)
        self.output_size = size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            x = layer(x, lengths)
            if self.norms is not None:
                x = self.norms[i](x)
        return x

    @property
    def bidirectional(self) -> bool:
        return any(layer.bidirectional for layer in self.layers)

    def forward_chunk(self, x: torch.Tensor, states: list | None) -> tuple[torch.Tensor, list]:
        """`forward` over the next frames of unpadded streams, carrying each layer's state."""
        states = states or [None] * len(self.layers)
        new_states = []
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            if i:
                x = self.dropout(x)
            x, state = layer.forward_chunk(x, state)
            if self.norms is not None:
                x = self.norms[i](x)
            new_states.append(state)
        return x, new_states


# -- the encoder the CTC and the speaker model share: frontend, subsampler, stacked RNN ----------

SUBSAMPLERS = {"none", "conv", "stack"}


class ConvSubsample(nn.Module):
    """DeepSpeech2's 2-D convolutions over (time, frequency); stride 2 in time halves the frame rate.

    Padding frames are zeroed after every block (deepspeech.pytorch's MaskConv), so in eval mode an
    utterance's output does not depend on how much padding its batch added.
    """

    time_stride = 2

    def __init__(self, n_mels: int, channels: int = 32):
        super().__init__()
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, channels, (11, 41), stride=(2, 2), padding=(5, 20)),
                          nn.BatchNorm2d(channels), nn.Hardtanh(0, 20, inplace=True)),
            nn.Sequential(nn.Conv2d(channels, channels, (11, 21), stride=(1, 2), padding=(5, 10)),
                          nn.BatchNorm2d(channels), nn.Hardtanh(0, 20, inplace=True)),
        ])
        f = n_mels
        for _ in self.blocks:
            f = (f + 1) // 2
        self.output_size = channels * f

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + 1) // 2

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(1)  # (B, 1, T, F)
        out_lens = lengths
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0:
                out_lens = self.output_lengths(lengths)
            x = x * lengths_to_mask(out_lens, x.size(2)).to(x.dtype)[:, None, :, None]
        B, C, T, F = x.shape
        return x.permute(0, 2, 1, 3).reshape(B, T, C * F), out_lens


class FrameStack(nn.Module):
    """Low frame rate (Sak et al. 2015): concatenate every `stride` frames into one.

    Cheaper than convolutions and, on small data, quicker for CTC to leave its all-blank phase.
    """

    def __init__(self, n_mels: int, stride: int = 3):
        super().__init__()
        self.time_stride = stride
        self.output_size = n_mels * stride

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.time_stride - 1) // self.time_stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, F = x.shape
        pad = (-T) % self.time_stride
        x = nn.functional.pad(x, (0, 0, 0, pad))  # padding is zeros, as the frames past each length
        return x.reshape(B, (T + pad) // self.time_stride, F * self.time_stride), self.output_lengths(lengths)


class RNNEncoder:
    """What the CTC and the speaker model share: the log-mel Frontend, an optional subsampler
    (model.subsample: conv or stack) and the StackedRNN, built in that order (the seeded weights
    depend on it) as `frontend`, `conv`, `encoder`, the names packages store their weights under."""

    def build_encoder(self, cfg: ExperimentConfig) -> None:
        m = cfg.model
        self.frontend = Frontend(cfg.features, cfg.augment)
        size = self.frontend.output_size
        if m.subsample not in SUBSAMPLERS:
            raise ValueError(f"model.subsample: {m.subsample!r} is not one of {sorted(SUBSAMPLERS)}")
        self.conv = None
        if m.subsample == "conv":
            self.conv = ConvSubsample(size, m.conv_channels)
        elif m.subsample == "stack":
            self.conv = FrameStack(size, m.stack_frames)
        if self.conv is not None:
            size = self.conv.output_size
        self.encoder = StackedRNN(size, m.hidden_size, m.num_layers, m.cell, m.bidirectional, m.proj_size, m.dropout,
                                  m.layer_norm)

    def encode(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frontend features (B, T, F) -> RNN outputs (B, T', H) and their lengths."""
        if self.conv is not None:
            x, lens = self.conv(x, lens)
        return self.encoder(x, lens), lens
