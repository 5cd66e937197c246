"""Live audio in, words out while it plays: chunked, stateful inference for unidirectional CTC models.

`stream = model.stream(); update = stream.feed(samples); ...; update = stream.finish()`. Each
update carries the words that became final (they never change) and a partial guess at the rest.
Feeding a recording in chunks of any size gives the same log-probabilities (to float rounding)
and the same words as the model's forward pass over the whole recording, because every stage
carries exactly what the next chunk needs and nothing more:

- resampling (input at another rate): a polyphase filter equal to `asr.audio.resample`'s
  (scipy's resample_poly), keeping the input samples its next outputs reach back to;
- pre-emphasis: the last sample; STFT: the samples of frames not complete yet (frames overlap
  by n_fft - hop), the zero padding of `center=True` at both ends of the stream;
- frame stacking: the frames of an incomplete stack; RNN: (h, c) of every layer;
- lookahead convolution: the last `context` RNN outputs (so output lags by that many frames);
- decoding: the greedy path's last label and the frames of the word being spoken, or the beam
  search's `DecoderState`, whose shared words are committed and dropped.

So memory stays bounded on an endless stream. What cannot stream is refused when the stream is
made: a bidirectional RNN (it reads each utterance from its end), utterance CMN (its mean needs
the whole utterance; a running mean would give the model features it was not trained on, so
this refuses rather than approximates), and DeepSpeech2's convolutional subsampling (not
implemented: its receptive field spans 10 frames each way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from .decode import Word, collapse, word_timings, words_from_labels
from .models.checks import decode_lm


class StreamError(ValueError):
    """A model or input that cannot be streamed; the message says why and what to use instead."""


@dataclass
class Update:
    """What one `feed` or `finish` gives: words that became final, and a guess at the rest."""
    final: list[Word] = field(default_factory=list)
    partial: str = ""
    time: float = 0.0  # seconds of input consumed so far
    log_probs: torch.Tensor | None = None  # (frames, labels): the output frames this step added


class StreamingResampler:
    """`asr.audio.resample` (scipy.signal.resample_poly, Kaiser window, zero padding) computed
    chunk by chunk: the same output samples, whatever the chunks, from a state of at most one
    filter length of input."""

    def __init__(self, orig_sr: int, target_sr: int):
        from scipy.signal import firwin

        ratio = Fraction(target_sr, orig_sr).limit_denominator(1000)  # as asr.audio.resample
        self.up, self.down = ratio.numerator, ratio.denominator
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(pre_pad), h])
        self.skip = (half_len + pre_pad) // self.down  # outputs resample_poly drops at the start
        self.taps = -(-len(self.h) // self.up) + 1
        self.h_ext = np.concatenate([self.h, np.zeros(self.taps * self.up + self.up)])
        self.buf = np.zeros(0)  # input samples from index self.base on
        self.base = 0
        self.n_in = 0
        self.n_out = 0  # outputs given so far

    def _emit(self, last: int) -> np.ndarray:
        """Outputs self.n_out .. last (inclusive), from the buffered input."""
        if last < self.n_out:
            return np.zeros(0, np.float32)
        m = np.arange(self.n_out, last + 1) + self.skip
        i_hi = m * self.down // self.up
        r = np.arange(self.taps)
        i = i_hi[:, None] - r[None, :]
        tap = (m * self.down - i_hi * self.up)[:, None] + r[None, :] * self.up
        valid = (i >= self.base) & (tap < len(self.h))
        x = self.buf[np.clip(i - self.base, 0, max(len(self.buf) - 1, 0))] if len(self.buf) else np.zeros(i.shape)
        y = np.where(valid, x * self.h_ext[tap], 0.0).sum(1)
        self.n_out = last + 1
        # keep only the input the next output reaches back to
        m_next = self.n_out + self.skip
        first_needed = max(0, -(-(m_next * self.down - len(self.h) + 1) // self.up))
        if first_needed > self.base:
            self.buf = self.buf[first_needed - self.base:]
            self.base = first_needed
        return y.astype(np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float64)])
        self.n_in += len(x)
        # output j needs input up to ((j + skip) * down) // up
        return self._emit((self.n_in * self.up - 1) // self.down - self.skip)

    def flush(self) -> np.ndarray:
        """The outputs that reach past the end (zeros there), up to resample_poly's length."""
        total = -(-self.n_in * self.up // self.down)
        self.buf = np.concatenate([self.buf, np.zeros(self.taps + 1)])
        return self._emit(total - 1)


class Stream:
    """One live stream through a unidirectional CTC model; see the module doc.

    decoder: "greedy" or "beam" (default: the model's decode.decoder); lm, beam_width, alpha,
    beta: as for `asr.transcribe.Transcriber` (beam search by `OnlineCTCBeamDecoder`).
    sample_rate: the rate of the samples fed (default the model's); other rates are resampled.
    """

    # a word this long (output frames, ~30 s at 30 ms) without a space is closed anyway
    MAX_WORD_FRAMES = 1000

    def __init__(self, model, sample_rate: int | None = None, decoder: str | None = None,
                 lm: str | None = None, beam_width: int | None = None, alpha: float | None = None,
                 beta: float | None = None):
        cfg = model.cfg
        check_streamable(model)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.vocab = model.vocab
        self.shift = model.frame_shift
        f = cfg.features
        self.sr = f.sample_rate
        self.input_sr = sample_rate or self.sr
        if self.input_sr <= 0:
            raise StreamError(f"sample rate must be positive, got {self.input_sr}")
        self.resampler = StreamingResampler(self.input_sr, self.sr) if self.input_sr != self.sr else None
        logmel = model.frontend.logmel
        self.n_fft, self.hop, self.preemph = f.n_fft, f.hop_length, f.preemphasis
        self.window = torch.nn.functional.pad(logmel.window, ((f.n_fft - f.win_length) // 2,
                                                            (f.n_fft - f.win_length + 1) // 2))
        self.samples_in = 0  # input samples fed, at the input rate
        self.samples = 0  # samples at the model's rate
        self.last_sample = None  # for pre-emphasis
        self.buf = torch.zeros(f.n_fft // 2, device=self.device)  # the STFT's left zero padding, then samples
        self.frames = 0  # STFT frames computed
        self.stack = model.conv.time_stride if model.conv is not None else 1
        self.pending = torch.zeros(0, f.n_mels, device=self.device)  # frames of an incomplete stack
        self.rnn_state = None
        context = model.lookahead.context if model.lookahead is not None else 0
        self.held = torch.zeros(1, 0, model.encoder.output_size, device=self.device)  # RNN outputs the lookahead waits on
        self.context = context
        self.out_frames = 0  # output frames decoded
        self.finished = False

        decoder = decoder or cfg.decode.decoder
        self.beam = None
        if decoder == "beam":
            from .beam_search import DecoderState, OnlineCTCBeamDecoder

            d = cfg.decode
            if lm is None:
                lm = decode_lm(model)
            self.beam = OnlineCTCBeamDecoder(self.vocab.tokens, model_path=lm,
                                             alpha=d.alpha if alpha is None else alpha,
                                             beta=d.beta if beta is None else beta,
                                             beam_width=beam_width or d.beam_width, blank_id=self.vocab.blank_id,
                                             log_probs_input=True)
            self.state = DecoderState(self.beam)
            self.rows: dict[int, torch.Tensor] = {}  # log-posteriors at frames an open label may start on
        elif decoder == "greedy":
            self.path: list[int] = []  # greedy labels of the word being spoken
            self.path_lp: list[torch.Tensor] = []
            self.path_start = 0  # output frame of self.path[0]
            self.prev = self.vocab.blank_id
        else:
            raise StreamError(f"decoder: {decoder!r} is not one of ['beam', 'greedy']")

    # -- audio -> log-probabilities ------------------------------------------------------------

    def _frontend(self, wav: torch.Tensor, final: bool) -> torch.Tensor:
        """Samples at the model's rate -> the log-mel frames (after CMVN) now complete."""
        if len(wav):
            prev = wav.new_tensor([self.last_sample]) if self.last_sample is not None else wav[:1]
            shifted = torch.cat([prev, wav[:-1]])
            # the first sample of the stream is kept as it is, as LogMel does
            emph = wav - self.preemph * shifted if self.preemph > 0 else wav
            if self.last_sample is None and self.preemph > 0:
                emph[0] = wav[0]
            self.last_sample = float(wav[-1])
            self.samples += len(wav)
            self.buf = torch.cat([self.buf, emph])
        total = self.samples // self.hop + 1  # the frames of the whole stream, as torch.stft gives
        if final:
            self.buf = torch.cat([self.buf, self.buf.new_zeros(self.n_fft // 2 + self.n_fft)])
        n = (len(self.buf) - self.n_fft) // self.hop + 1 if len(self.buf) >= self.n_fft else 0
        if final:
            n = max(0, total - self.frames)
        if n <= 0:
            return self.pending.new_zeros(0, self.pending.size(1))
        frames = self.buf[: (n - 1) * self.hop + self.n_fft].unfold(0, self.n_fft, self.hop)
        self.buf = self.buf[n * self.hop:]
        self.frames += n
        spec = torch.fft.rfft(frames * self.window, dim=-1)
        power = spec.real.square() + spec.imag.square()
        logmel = self.model.frontend.logmel
        feats = torch.log(torch.matmul(power, logmel.mel_fb.T) + 1e-6)
        return self.model.frontend.cmvn(feats)

    @torch.inference_mode()
    def _log_probs(self, wav: np.ndarray, final: bool) -> torch.Tensor:
        model = self.model
        feats = self._frontend(torch.from_numpy(wav).to(self.device), final)
        feats = torch.cat([self.pending, feats])
        usable = len(feats) - len(feats) % self.stack
        if final and usable < len(feats):  # the last, incomplete stack is zero-padded, as FrameStack does
            feats = torch.cat([feats, feats.new_zeros(self.stack - len(feats) % self.stack, feats.size(1))])
            usable = len(feats)
        self.pending, feats = feats[usable:], feats[:usable]
        x = feats.reshape(1, usable // self.stack, self.stack * feats.size(1))
        if x.size(1):
            x, self.rnn_state = model.encoder.forward_chunk(x, self.rnn_state)
        else:
            x = x.new_zeros(1, 0, model.encoder.output_size)
        if model.lookahead is not None:
            x = torch.cat([self.held, x], 1)
            if final:
                x = torch.nn.functional.pad(x, (0, 0, 0, self.context))
            ready = max(0, x.size(1) - self.context)
            self.held = x[:, ready:ready + self.context] if not final else x[:, :0]
            x = model.lookahead.forward_frames(x[:, :ready + self.context]) if ready else x[:, :0]
        if x.size(1) == 0:
            return torch.zeros(0, len(self.vocab))
        return model.output(x).float().log_softmax(-1)[0].cpu()

    # -- log-probabilities -> words --------------------------------------------------------------

    def _greedy(self, lp: torch.Tensor, final: bool) -> tuple[list[Word], str]:
        vocab, words = self.vocab, []
        space = vocab.tokens.index(" ") if " " in vocab.tokens else None

        def flush(end: int):
            if self.path:
                words.extend(Word(w.word, round(w.start + self.path_start * self.shift, 3),
                                  round(w.end + self.path_start * self.shift, 3), w.confidence)
                             for w in word_timings(self.path, torch.stack(self.path_lp), vocab, self.shift))
            self.path, self.path_lp, self.path_start = [], [], end

        for t, i in enumerate(lp.argmax(-1).tolist()):
            frame = self.out_frames + t
            if i == space or (not self.path and i == vocab.blank_id):
                flush(frame + 1)  # a space, or blanks between words, belong to no word
            else:
                self.path.append(i)
                self.path_lp.append(lp[t])
                if len(self.path) >= self.MAX_WORD_FRAMES:
                    flush(frame + 1)
            self.prev = i
        self.out_frames += len(lp)
        if final:
            flush(self.out_frames)
        partial = vocab.decode(collapse(self.path, vocab.blank_id)[0]).strip()
        return words, partial

    def _beam_step(self, lp: torch.Tensor, final: bool) -> tuple[list[Word], str]:
        first = self.out_frames
        for t in range(len(lp)):
            self.rows[first + t] = lp[t]
        self.out_frames += len(lp)
        results, _, timesteps, lens = self.beam.decode(lp[None], [self.state], [final])
        # the beams begin with the words every one of them shares: those are final, and forgotten
        done_tokens, done_frames = self.state.pop_committed()
        words, c = self._words(done_tokens, done_frames), len(done_tokens)
        n = int(lens[0, 0])
        tokens, frames = results[0, 0, c:n].tolist(), timesteps[0, 0, c:n].tolist()
        # an open label starts at or after the first open label of some beam: older rows can go
        oldest = min([int(timesteps[0, k, c]) for k in range(lens.size(1)) if int(lens[0, k]) > c],
                     default=self.out_frames)
        if final:
            words += self._words(tokens, frames)
            return words, ""
        for t in [t for t in self.rows if t < oldest]:
            del self.rows[t]
        return words, self.vocab.decode(tokens).strip()

    def _words(self, tokens: list[int], frames: list[int]) -> list[Word]:
        if not tokens:
            return []
        base = frames[0]
        log_probs = torch.stack([self.rows[t] for t in range(base, self.out_frames)])
        return [Word(w.word, round(w.start + base * self.shift, 3), round(w.end + base * self.shift, 3),
                     w.confidence)
                for w in words_from_labels(tokens, [t - base for t in frames], log_probs, self.vocab, self.shift)]

    # -- the API -----------------------------------------------------------------------------------

    def rebind(self, model) -> None:
        """Run the next chunks on `model`, another copy of the package the stream was made with.
        A server's worker threads each hold their own copy of a model (asr.serve.app.WorkerModels)
        and a connection's chunks go to whichever worker is free; the stream's state (buffers, RNN
        state, decoder) is plain tensors and numbers, valid with any copy of the same weights."""
        if model is self.model:
            return
        if model.cfg != self.model.cfg or model.vocab.tokens != self.vocab.tokens:
            raise StreamError("rebind: not a copy of the stream's model (another config or vocabulary)")
        self.model = model.eval()

    def feed(self, samples) -> Update:
        """The next samples (1-D float in [-1, 1] at the stream's sample rate)."""
        return self._step(samples, final=False)

    def finish(self) -> Update:
        """End of input: the last frames (the STFT's and lookahead's right context is zeros, as
        for a whole recording) and the last words."""
        return self._step(np.zeros(0, np.float32), final=True)

    def _step(self, samples, final: bool) -> Update:
        if self.finished:
            raise StreamError("this stream has finished; start a new one with model.stream()")
        x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
        x = x.astype(np.float32, copy=False)
        if x.ndim != 1:
            raise StreamError(f"feed takes 1-D mono samples, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise StreamError("samples contain NaN or Inf")
        self.samples_in += len(x)
        if self.resampler is not None:
            x = self.resampler.push(x)
            if final:
                x = np.concatenate([x, self.resampler.flush()])
        lp = self._log_probs(x, final)
        words, partial = (self._beam_step if self.beam is not None else self._greedy)(lp, final)
        self.finished = final
        end = self.samples_in / self.input_sr
        # output frames can reach past the last sample (frame stacking pads): clamp to the audio
        words = [Word(w.word, min(w.start, end), min(w.end, end), w.confidence) for w in words]
        return Update(words, partial, round(end, 3), lp)

    def state_size(self) -> int:
        """Numbers held between chunks (buffers and decoder state): bounded on an endless stream."""
        n = len(self.buf) + self.pending.numel() + self.held.numel()
        if self.resampler is not None:
            n += len(self.resampler.buf)
        if self.beam is not None:
            n += self.state.size() + len(self.rows) * len(self.vocab)
        else:
            n += len(self.path) * (1 + len(self.vocab))
        return n


def check_streamable(model) -> None:
    """Raise StreamError naming what keeps `model` from running chunk by chunk."""
    problem = streaming_problem(getattr(model, "arch", type(model).__name__), model.cfg)
    if problem:
        raise StreamError(problem)


def streaming_problem(arch: str, cfg) -> str | None:
    """Why a model of this arch and config cannot stream, or None when it can. From the config
    alone, so a server can say which of its packages stream from their headers."""
    if arch != "ctc":
        return f"streaming needs a CTC model, got arch {arch!r}"
    if cfg.model.bidirectional:
        return ("this model is bidirectional (model.bidirectional: true): it reads each utterance "
                "from its end too, so it cannot stream; use a unidirectional model "
                "(conf/english/stream.yaml) or transcribe the whole file")
    if cfg.features.utterance_cmn:
        return ("this model subtracts each utterance's mean (features.utterance_cmn: true), which "
                "needs the whole utterance; streaming needs a model trained with utterance_cmn: false")
    if cfg.model.subsample == "conv":
        return "model.subsample: conv (DeepSpeech2's convolutions) is not streamed; use subsample: stack or none"
    return None


def transcribe_chunks(stream: Stream, chunks, on_update=None):
    """Feed an iterable of sample arrays through `stream`; (all final words, seconds). A
    convenience for callers that do keep the whole transcript; `on_update` sees every update."""
    words: list[Word] = []
    for chunk in chunks:
        u = stream.feed(chunk)
        words += u.final
        if on_update:
            on_update(u)
    u = stream.finish()
    words += u.final
    if on_update:
        on_update(u)
    return words, u.time


# what the first bytes of an audio file say, where raw PCM was expected
FILE_MAGIC = (b"RIFF", b"RIFX", b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04")


def file_header(data: bytes) -> str | None:
    """The audio file header `data` starts with ('RIFF', 'fLaC', ...), or None for raw samples."""
    return data[:4].decode(errors="replace") if data[:4] in FILE_MAGIC else None


def pcm16(data: bytes) -> np.ndarray:
    """Raw 16-bit little-endian samples (an even number of bytes) -> float32 in [-1, 1)."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def pcm_chunks(f, sample_rate: int, chunk_seconds: float = 0.1):
    """Raw 16-bit little-endian mono PCM from a binary file object -> float32 chunks.

    An odd byte left at the end is an error (a stream cut inside a sample, or not 16-bit PCM);
    so is a RIFF/WAVE header, which means a wav file was piped where raw PCM was expected.
    """
    size = max(2, int(sample_rate * chunk_seconds) * 2)
    first = True
    carry = b""
    while True:
        data = f.read(size) if not hasattr(f, "read1") else f.read1(size)
        if not data:
            break
        if first and file_header(data):
            raise StreamError(f"stdin starts with a {file_header(data)!r} header: that is an "
                              "audio file, not raw PCM; pass the file name instead of -, or strip the header")
        first = False
        data = carry + data
        cut = len(data) - len(data) % 2
        carry = data[cut:]
        if cut:
            yield pcm16(data[:cut])
    if carry:
        raise StreamError(f"raw PCM input ended inside a sample ({len(carry)} stray byte): expected 16-bit "
                          "little-endian mono samples (arecord -f S16_LE -c 1)")


def file_chunks(path: str, chunk_seconds: float = 0.1):
    """(sample rate, chunks of float32 mono samples) of an audio file, read block by block."""
    import soundfile as sf

    from .audio import AudioError

    try:
        f = sf.SoundFile(path)
    except Exception as e:
        raise AudioError(f"{path}: not readable as audio ({e})") from None
    block = max(1, int(f.samplerate * chunk_seconds))

    def gen():
        with f:
            for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                yield data.mean(axis=1)
    return f.samplerate, gen()


def format_seconds(t: float) -> str:
    return f"{int(t // 60):02d}:{t % 60:06.3f}" if math.isfinite(t) else "--:--"


def run_transcribe_stream(a, model, out) -> int:
    """`asr transcribe --stream INPUT`: one file or `-` (raw PCM at --raw-rate on stdin).

    Text format: `partial: ...` lines as the guess changes (not with --quiet), `final: ...`
    lines as words become final, then `INPUT<TAB>transcript`. JSON: the transcript with word
    times at the end. Ctrl-C ends the stream as EOF does: the last words are still printed.
    Garbage on stdin (a file header, an odd byte at the end) stops it with an error, after the
    words so far.
    """
    import sys
    import time

    from .transcribe import Transcript, format_transcript

    if len(a.inputs) != 1:
        raise StreamError(f"--stream takes one input (a file, or - for raw PCM on stdin), got {len(a.inputs)}")
    source = a.inputs[0]
    if source == "-":
        if not a.raw_rate:
            raise StreamError("--stream - reads raw 16-bit PCM from stdin and needs its rate: --raw-rate 16000")
        rate, chunks = a.raw_rate, pcm_chunks(sys.stdin.buffer, a.raw_rate, a.chunk)
    else:
        if a.raw_rate:
            raise StreamError("--raw-rate is for raw PCM on stdin (-); a file's header gives its rate")
        rate, chunks = file_chunks(source, a.chunk)
    stream = model.stream(sample_rate=rate, decoder=a.decoder, lm=a.lm, beam_width=a.beam_width,
                          alpha=a.alpha, beta=a.beta)
    words: list[Word] = []
    shown = ""
    text_mode = a.format == "text"

    def show(u: Update) -> None:
        nonlocal shown
        words.extend(u.final)
        if text_mode and u.final:
            out.write("final: " + " ".join(w.word for w in u.final) + "\n")
        if text_mode and not a.quiet and u.partial != shown and u.partial:
            out.write(f"partial: {u.partial}\n")
        shown = u.partial
        out.flush()

    error, started = None, time.monotonic()
    try:
        for chunk in chunks:
            show(stream.feed(chunk))
            if a.realtime and source != "-":  # a file played as if live
                time.sleep(max(0.0, stream.samples_in / rate - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass  # Ctrl-C: end the stream here, as at EOF
    except StreamError as e:
        error = e
    u = stream.finish()
    show(u)
    t = Transcript(source, " ".join(w.word for w in words), u.time, words)
    out.write(format_transcript(t, a.format))
    out.flush()
    if error is not None:
        print(f"asr transcribe: {source}: {error}", file=sys.stderr)
        return 2
    return 0
