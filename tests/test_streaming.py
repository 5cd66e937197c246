"""Streaming: chunked, stateful inference (asr.streaming), the online beam search it uses, and
`asr transcribe --stream`. Tiny random-init unidirectional models: what is tested is that a
stream computes exactly what the whole-file forward pass computes, not what a model learnt."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import resample
from asr.beam_search import DecoderState, OnlineCTCBeamDecoder, _PrefixSearch
from asr.config import ExperimentConfig, ModelConfig
from asr.decode import Word, greedy_decode
from asr.models import CTCModel
from asr.package import save_package
from asr.streaming import StreamError, StreamingResampler, pcm_chunks
from asr.text import Vocabulary

from .conftest import FSDD, ROOT, needs_fsdd
from .helpers import speech, stream_model, write_arpa

CLIP = FSDD / "7_jackson_3.wav"  # 8 kHz


def whole(model, wav):
    with torch.no_grad():
        lp, n = model(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    hyp = greedy_decode(lp, n, model.vocab, model.frame_shift)[0]
    end = len(wav) / model.cfg.features.sample_rate  # clamped to the audio, as Transcriber does
    hyp.words = [Word(w.word, min(w.start, end), min(w.end, end), w.confidence) for w in hyp.words]
    return lp[0, : int(n[0])], hyp


def run_stream(model, wav, chunk, **options):
    s = model.stream(**options)
    updates = [s.feed(wav[i:i + chunk]) for i in range(0, len(wav), chunk)] + [s.finish()]
    words = [w for u in updates for w in u.final]
    return torch.cat([u.log_probs for u in updates]), words, s


@needs_fsdd
@pytest.mark.parametrize("lookahead,subsample,layer_norm", [(0, "stack", False), (3, "stack", False),
                                                            (2, "none", False), (3, "stack", True)])
def test_any_chunking_gives_the_whole_file_logits_and_words(lookahead, subsample, layer_norm):
    model = stream_model(lookahead=lookahead, subsample=subsample, layer_norm=layer_norm)
    wav, sr = speech(), 8000
    lp, hyp = whole(model, wav)
    assert len(hyp.tokens) >= 2  # a random model babbles: labels (and words) to compare
    for seconds in (0.01, 0.037, 0.25, 2.0):
        got, words, _ = run_stream(model, wav, int(seconds * sr), decoder="greedy")
        assert got.shape == lp.shape
        # rtol: the layer-norm model's log-probs reach hundreds, where 1e-4 is a few float32 ulps
        torch.testing.assert_close(got, lp, atol=1e-4, rtol=1e-6)
        assert [(w.word, w.start, w.end) for w in words] == [(w.word, w.start, w.end) for w in hyp.words]
        assert [w.confidence for w in words] == pytest.approx([w.confidence for w in hyp.words], abs=1e-4)


@needs_fsdd
def test_beam_stream_is_the_same_for_any_chunking():
    model = stream_model(lookahead=1)
    wav, sr = speech(), 8000
    results = []
    for seconds in (0.02, 0.3, 5.0):
        _, words, _ = run_stream(model, wav, int(seconds * sr), decoder="beam", beam_width=8)
        results.append([(w.word, w.start, w.end, w.confidence) for w in words])
    assert results[0] and results[0] == results[1] == results[2]
    # and it is the one-shot prefix beam search over the whole file's posteriors
    lp, _ = whole(model, wav)
    decoder = OnlineCTCBeamDecoder(model.vocab.tokens, beam_width=8, blank_id=model.vocab.blank_id,
                                   log_probs_input=True)
    out, _, _, lens = decoder.decode(lp[None], [DecoderState(decoder)], [True])
    assert " ".join(w[0] for w in results[0]) == model.vocab.decode(out[0, 0, :lens[0, 0]].tolist()).strip()


def test_what_cannot_stream_is_refused_by_name():
    cfg_bi = stream_model(lookahead=0)
    cfg_bi.cfg.model.bidirectional = True
    with pytest.raises(StreamError, match="bidirectional"):
        CTCModel(cfg_bi.cfg, cfg_bi.vocab).stream()
    cmn = stream_model()
    cmn.cfg.features.utterance_cmn = True
    with pytest.raises(StreamError, match="utterance_cmn"):
        cmn.stream()
    with pytest.raises(StreamError, match="subsample: conv"):
        stream_model(lookahead=0, subsample="conv").stream()
    with pytest.raises(ValueError, match="model.lookahead: a bidirectional RNN"):
        stream_model(lookahead=2, seed=0).__class__(
            ExperimentConfig(model=ModelConfig(bidirectional=True, lookahead=2)), Vocabulary.from_texts(["a"]))
    s = stream_model().stream()
    with pytest.raises(StreamError, match="1-D mono"):
        s.feed(np.zeros((10, 2), np.float32))
    s.finish()
    with pytest.raises(StreamError, match="has finished"):
        s.feed(np.zeros(10, np.float32))


def test_lookahead_output_does_not_depend_on_its_batch():
    model = stream_model(lookahead=3)
    wav = torch.randn(3, 6000) * 0.1
    lens = torch.tensor([6000, 3500, 999])
    with torch.no_grad():
        lp, out_lens = model(wav, lens)
        for b in range(3):
            alone, _ = model(wav[b:b + 1, : int(lens[b])], lens[b:b + 1])
            torch.testing.assert_close(lp[b, : int(out_lens[b])], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("orig,target", [(8000, 16000), (44100, 16000), (22050, 16000)])
def test_streaming_resampler_equals_resample_poly(orig, target):
    x = np.random.default_rng(0).standard_normal(orig // 2 + 123).astype(np.float32) * 0.3
    expected = resample(x, orig, target)
    for chunk in (1, 97, 4000, len(x)):
        r = StreamingResampler(orig, target)
        pieces, held = [], 0
        for i in range(0, len(x), chunk):
            pieces.append(r.push(x[i:i + chunk]))
            held = max(held, len(r.buf))
        got = np.concatenate(pieces + [r.flush()])
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert held <= r.taps + chunk  # the state is one filter's reach, not the history


@needs_fsdd
def test_input_at_another_rate_is_resampled_on_the_fly():
    model = stream_model(sample_rate=16000, lookahead=0, subsample="none")
    wav8 = speech()  # 8 kHz, the model wants 16 kHz
    lp, hyp = whole(model, resample(wav8, 8000, 16000))
    got, words, _ = run_stream(model, wav8, 333, sample_rate=8000, decoder="greedy")
    torch.testing.assert_close(got, lp, atol=1e-4, rtol=0)
    assert [w.word for w in words] == [w.word for w in hyp.words] and words


def test_endless_silence_and_noise_keep_the_state_bounded():
    # 10 minutes (8 kHz) of near-silence with noise bursts, fed in 0.5 s chunks
    babbler = stream_model(lookahead=2)  # it hears words in the noise bursts: they must not pile up
    deaf = stream_model(lookahead=2)
    with torch.no_grad():
        deaf.output.weight.zero_()
        deaf.output.bias[deaf.vocab.blank_id] += 30.0  # hears nothing: silence gives no output
    for model, decoder, minutes in ((babbler, "greedy", 10), (babbler, "beam", 2), (deaf, "beam", 1)):
        rng = np.random.default_rng(0)
        s = model.stream(decoder=decoder, beam_width=4)
        sizes, words = [], []
        for k in range(int(minutes * 60 * 2)):
            chunk = rng.standard_normal(4000).astype(np.float32) * (0.3 if k % 20 == 0 else 1e-4)
            words += s.feed(chunk).final
            sizes.append(s.state_size())
        words += s.finish().final
        # greedy holds at most one word's frames (Stream.MAX_WORD_FRAMES), beam search its beams
        assert max(sizes) < s.MAX_WORD_FRAMES * (len(model.vocab) + 1) + 5000, (decoder, max(sizes))
        assert max(sizes[len(sizes) // 2:]) <= 1.1 * max(sizes[:len(sizes) // 2]) + 100, decoder  # no growth
        assert bool(words) == (model is babbler)


def same_beams(out, ref) -> bool:
    """The same beams, labels, start frames and scores (the time axis' padding may differ)."""
    (r, s, t, n), (r2, s2, t2, n2) = out, ref
    return (torch.equal(n, n2) and torch.equal(s, s2)
            and all(torch.equal(r[0, k, :n[0, k]], r2[0, k, :n[0, k]]) and torch.equal(t[0, k, :n[0, k]], t2[0, k, :n[0, k]])
                    for k in range(n.size(1))))


def test_online_search_commits_words_and_stays_exact_for_any_chunking(tmp_path, monkeypatch):
    # "cab tab cab tab ..." said clearly, 60 words, with a word LM: committing the shared words
    # (and compacting the trie) must change no result, whatever the chunks
    labels = ["_", "a", "b", "c", "t", " "]
    seq = [c for w in ["cab", "tab"] * 30 for c in w + " "]
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(len(labels), 1.0), size=3 * len(seq)) * 0.3
    for t, c in enumerate(seq):
        probs[3 * t, labels.index(c)] += 0.7
        probs[3 * t + 1, 0] += 0.7
        probs[3 * t + 2, 0] += 0.7
    lp = torch.from_numpy(np.log(probs / probs.sum(1, keepdims=True)))[None]
    arpa = write_arpa(tmp_path / "w.arpa", {"cab": -1.0, "tab": -1.0, "cat": -0.5})

    def run(chunk):
        decoder = OnlineCTCBeamDecoder(labels, str(arpa), alpha=0.5, beta=0.5, beam_width=8, log_probs_input=True)
        state = DecoderState(decoder)
        peak = 0
        for i in range(0, lp.shape[1], chunk):
            out = decoder.decode(lp[:, i:i + chunk], [state], [i + chunk >= lp.shape[1]])
            peak = max(peak, state._search.size())
        return out, state, peak

    ref, state, peak = run(lp.shape[1])
    text = "".join(labels[i] for i in ref[0][0, 0, :ref[3][0, 0]].tolist())
    assert text == " ".join(["cab", "tab"] * 30) + " "  # the space said last is a label too
    assert len(state._search.committed[0]) > 100  # most of it was settled on the way
    for chunk in (1, 7, 50):
        out, _, chunk_peak = run(chunk)
        assert same_beams(out, ref)
        assert chunk_peak < 1000  # beam 8 with its LM rows, whatever the length
    # without compaction the same beams come out, holding the whole history
    monkeypatch.setattr("asr.beam_search._COMPACT_EVERY", 10**9)
    out, _, uncompacted = run(13)
    assert same_beams(out, ref)
    assert uncompacted > peak


def test_pcm_reader_rejects_headers_and_odd_bytes():
    import io

    pcm = (np.arange(-50, 50) * 300).astype("<i2").tobytes()
    got = np.concatenate(list(pcm_chunks(io.BytesIO(pcm), 8000, 0.001)))
    np.testing.assert_array_equal(got, (np.arange(-50, 50) * 300) / 32768.0)
    with pytest.raises(StreamError, match="1 stray byte"):
        list(pcm_chunks(io.BytesIO(pcm + b"\x01"), 8000))
    with pytest.raises(StreamError, match="'RIFF' header"):
        list(pcm_chunks(io.BytesIO(b"RIFF" + pcm), 8000))


# -- asr transcribe --stream -------------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "stream.safetensors"
    save_package(stream_model(lookahead=2, subsample="none"), path)
    return path


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "asr", "transcribe", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=300)


@needs_fsdd
def test_cli_streams_a_file_and_raw_pcm_on_stdin_the_same(package, tmp_path):
    import json

    wav, sr = speech(), 8000
    clip = tmp_path / "speech.wav"
    sf.write(clip, wav, sr, subtype="FLOAT")
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    from_file = cli("--stream", "--model", package, "--decoder", "greedy", clip)
    assert from_file.returncode == 0, from_file.stderr.decode()
    lines = from_file.stdout.decode().splitlines()
    assert any(x.startswith("partial: ") for x in lines) and any(x.startswith("final: ") for x in lines)
    file_text = lines[-1].split("\t")[1]
    model = stream_model(lookahead=2, subsample="none")  # the packaged one
    _, words, _ = run_stream(model, wav, 800, decoder="greedy")
    assert file_text == " ".join(w.word for w in words) and file_text
    # the same audio as raw PCM on stdin (int16-rounded, so compared with its own stream)
    piped = cli("--stream", "--raw-rate", sr, "--model", package, "--decoder", "greedy", "--format", "json",
                "-", stdin=pcm.tobytes())
    assert piped.returncode == 0, piped.stderr.decode()
    out = json.loads(piped.stdout.decode().splitlines()[-1])
    _, words16, _ = run_stream(model, pcm.astype(np.float32) / 32768.0, 800, decoder="greedy")
    assert out["text"] == " ".join(w.word for w in words16)
    assert [w["start"] for w in out["words"]] == [w.start for w in words16]
    assert out["duration"] == pytest.approx(len(pcm) / sr, abs=1e-3)
    # garbage: a stream cut inside a sample keeps the words so far and says what is wrong
    cut = cli("--stream", "--raw-rate", sr, "--model", package, "--decoder", "greedy", "-",
              stdin=pcm.tobytes() + b"\x07")
    assert cut.returncode == 2 and b"stray byte" in cut.stderr
    assert cut.stdout.decode().splitlines()[-1] == f"-\t{out['text']}"
    header = cli("--stream", "--raw-rate", sr, "--model", package, "-", stdin=CLIP.read_bytes())
    assert header.returncode == 2 and b"'RIFF' header" in header.stderr
    assert cli("--stream", "--model", package, "-").returncode == 2  # no --raw-rate


@needs_fsdd
def test_cli_ends_cleanly_on_sigint_with_the_last_words(package):
    wav, sr = speech(), 8000
    pcm = (np.clip(np.tile(wav, 20), -1, 1) * 32767).astype("<i2").tobytes()
    proc = subprocess.Popen([sys.executable, "-m", "asr", "transcribe", "--stream", "--raw-rate", str(sr),
                             "--model", str(package), "--decoder", "greedy", "-"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(pcm[: len(pcm) // 2])
    proc.stdin.flush()
    first = proc.stdout.readline()  # it is streaming: now interrupt it, stdin still open
    assert first.startswith((b"partial: ", b"final: "))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    proc.stdin.close()
    assert proc.returncode == 0, err.decode()
    last = out.decode().splitlines()[-1]
    assert last.startswith("-\t") and len(last) > 2
