import numpy as np
import pytest
import torch

from asr.audio import load_audio
from asr.config import AugmentConfig, FeatureConfig
from asr.features import Frontend, LogMel, SpecAugment, augment_waveform, compute_cmvn, speed_perturb

from .conftest import FSDD, needs_fsdd


@needs_fsdd
@pytest.mark.parametrize("n_fft,win,hop,n_mels", [(256, 256, 80, 40), (512, 400, 160, 64)])
def test_logmel_matches_librosa(n_fft, win, hop, n_mels):
    import librosa

    wav, sr = load_audio(FSDD / "7_jackson_32.wav")
    cfg = FeatureConfig(sample_rate=sr, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=n_mels,
                        preemphasis=0.0, dither=0.0)
    ours, lens = LogMel(cfg).eval()(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    ref = librosa.feature.melspectrogram(y=wav, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win,
                                         n_mels=n_mels, center=True, pad_mode="constant", power=2.0)
    assert ours.shape[1] == ref.shape[1] == int(lens[0])
    np.testing.assert_allclose(ours[0].numpy(), np.log(ref.T + 1e-6), atol=1e-3)


@pytest.mark.parametrize("utterance_cmn", [False, True])
def test_padding_does_not_change_features(utterance_cmn):
    cfg = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40,
                        utterance_cmn=utterance_cmn)
    fe = Frontend(cfg).eval()
    torch.manual_seed(0)
    a = torch.randn(3000) * 0.1
    alone, la = fe(a[None], torch.tensor([3000]))
    batch = torch.zeros(2, 8000)
    batch[0, :3000] = a
    batch[1] = torch.randn(8000) * 0.1
    both, lb = fe(batch, torch.tensor([3000, 8000]))
    n = int(la[0])
    assert int(lb[0]) == n
    torch.testing.assert_close(both[0, :n], alone[0, :n], atol=1e-4, rtol=1e-4)
    assert both[0, n:].abs().max() == 0  # padding frames are zero after CMVN


def test_cmvn_statistics_normalise():
    cfg = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=20, dither=0.0)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(4000).astype(np.float32) * s for s in (0.01, 0.1, 0.5)]
    stats = compute_cmvn(LogMel(cfg), waves)
    fe = Frontend(cfg).eval()
    fe.cmvn.set_stats(stats["mean"], stats["std"])
    feats = torch.cat([fe(torch.from_numpy(w)[None], torch.tensor([len(w)]))[0][0] for w in waves])
    assert feats.mean(0).abs().max() < 1e-3
    assert (feats.std(0, unbiased=False) - 1).abs().max() < 1e-3


def test_specaugment_only_in_training_and_inside_lengths():
    aug = SpecAugment(AugmentConfig(freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_ratio=0.2))
    x = torch.ones(2, 50, 20)
    aug.eval()
    assert torch.equal(aug(x, torch.tensor([50, 30])), x)
    aug.train()
    torch.manual_seed(1)
    y = aug(x, torch.tensor([50, 30]))
    assert (y == 0).any() and y.shape == x.shape


def test_speed_perturb_changes_length():
    x = np.zeros(8000, dtype=np.float32)
    assert abs(len(speed_perturb(x, 1.1)) - 8000 / 1.1) < 2
    assert abs(len(speed_perturb(x, 0.9)) - 8000 / 0.9) < 2
    assert speed_perturb(x, 1.0) is x


def test_utterance_cmn_removes_a_fixed_channel_gain_per_band():
    # A fixed filter (here a gain) is a constant offset per mel band in the log domain: the
    # utterance mean takes it out, so the same words through two channels give the same features.
    cfg = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=20, dither=0.0,
                        preemphasis=0.0, utterance_cmn=True)
    fe = Frontend(cfg).eval()
    torch.manual_seed(0)
    a = torch.randn(4000) * 0.1
    x, lens = fe(torch.stack([a, 4.0 * a]), torch.tensor([4000, 4000]))
    torch.testing.assert_close(x[0], x[1], atol=5e-3, rtol=0)  # up to the log floor of quiet bins
    assert x[0].mean(0).abs().max() < 1e-4


def test_narrowband_augmentation_removes_the_band_above_4_khz():
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    cfg = AugmentConfig(narrowband_prob=1.0)
    out = augment_waveform(wav, cfg, np.random.default_rng(1), sample_rate=16000)
    spec_in, spec_out = np.abs(np.fft.rfft(wav)) ** 2, np.abs(np.fft.rfft(out)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / 16000)
    high, low = freqs > 4200, freqs < 3500
    assert len(out) == len(wav)
    assert spec_out[high].sum() < 1e-3 * spec_in[high].sum()  # the telephone band only
    assert 0.9 < spec_out[low].sum() / spec_in[low].sum() < 1.1  # what is inside it is kept
    # at 8 kHz there is nothing to remove, and probability 0 leaves the audio alone
    assert np.array_equal(augment_waveform(wav, cfg, np.random.default_rng(1), sample_rate=8000), np.clip(wav, -1, 1))
    assert np.array_equal(augment_waveform(wav, AugmentConfig(), np.random.default_rng(1), 16000), np.clip(wav, -1, 1))
