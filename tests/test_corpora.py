"""LibriSpeech, AN4 and LJ Speech preparation on tiny fixtures laid out like the real corpora."""
import http.server
import tarfile
import threading

import numpy as np
import pytest
import soundfile as sf

from asr.audio import load_audio
from asr.datadir import read_data_dir, validate_data_dir
from data_prep import an4, librispeech, ljspeech, speechocean762
from data_prep.common import PrepError


def tone(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * sr)) * 0.1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# LibriSpeech

LIBRI = {  # subset -> {reader-chapter: [(utterance, transcript)]}
    "dev-clean": {"1272-128104": [("0000", "MISTER QUILTER IS THE APOSTLE"),
                                  ("0001", "NOR IS MISTER QUILTER'S MANNER")],
                  "84-121123": [("0000", "GO DO YOU HEAR")]},
    "test-clean": {"1089-134686": [("0000", "HE HOPED THERE WOULD BE STEW"), ("0001", "STUFF IT INTO YOU")]},
}


def make_librispeech(root, subsets=LIBRI):
    for subset, chapters in subsets.items():
        for sc, utts in chapters.items():
            reader, chapter = sc.split("-")
            d = root / "LibriSpeech" / subset / reader / chapter
            d.mkdir(parents=True)
            lines = []
            for n, text in utts:
                sf.write(d / f"{sc}-{n}.flac", tone(0.2 + 0.05 * int(n), 16000), 16000)
                lines.append(f"{sc}-{n} {text}\n")
            (d / f"{sc}.trans.txt").write_text("".join(lines))
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(";ID |SEX| SUBSET\n")


def tarball(src_root, subset, out):
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src_root / "LibriSpeech" / subset, arcname=f"LibriSpeech/{subset}")
        tar.add(src_root / "LibriSpeech" / "SPEAKERS.TXT", arcname="LibriSpeech/SPEAKERS.TXT")
    return out


def test_librispeech_from_local_archives(tmp_path):
    make_librispeech(tmp_path / "src")
    archives = tmp_path / "archives"
    archives.mkdir()
    for subset in LIBRI:
        tarball(tmp_path / "src", subset, archives / f"{subset}.tar.gz")
    out = tmp_path / "data"
    assert librispeech.main(["--corpus-dir", str(archives), "--subsets", "dev-clean,test-clean", str(out)]) == 0
    assert (archives / "LibriSpeech" / "dev-clean" / "84" / "121123").is_dir()  # unpacked next to the archives
    assert (archives / "dev-clean.tar.gz").exists()  # never delete what the user brought

    utts = {u.utt_id: u for u in read_data_dir(out / "dev_clean")}
    assert sorted(utts) == ["1272-128104-0000", "1272-128104-0001", "84-121123-0000"]
    u = utts["1272-128104-0001"]
    assert u.text == "nor is mister quilter's manner" and u.speaker == "1272-128104"
    assert u.duration == pytest.approx(0.25, abs=1e-3)
    assert validate_data_dir(out / "dev_clean") == [] and validate_data_dir(out / "test_clean") == []

    # A re-run with another subset list keeps the finished sets.
    assert librispeech.main(["--corpus-dir", str(archives), "--subsets", "dev-clean", str(out)]) == 0
    assert "dev_clean: already prepared" in (out / "prepare.log").read_text()


def test_librispeech_reports_stray_files_and_missing_subsets(tmp_path, capsys):
    make_librispeech(tmp_path)
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    (chapter / "84-121123-0000.flac").unlink()
    sf.write(chapter / "84-121123-0009.flac", tone(0.2, 16000), 16000)
    with open(chapter / "84-121123.trans.txt", "a") as f:
        f.write("garbage\n")
    out = tmp_path / "data"
    assert librispeech.main(["--corpus-dir", str(tmp_path), "--subsets", "dev-clean", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "84-121123-0000.flac" in summary and "84-121123-0009.flac: no line" in summary
    assert "84-121123.trans.txt:2: expected" in summary
    assert librispeech.main(["--corpus-dir", str(tmp_path), "--subsets", "dev-other", str(out)]) == 1
    assert "add --download" in capsys.readouterr().err


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support, recording the ranges asked for."""
    ranges: list = []

    def send_head(self):
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return None
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        import io

        return io.BytesIO(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: RangeHandler(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    RangeHandler.ranges = []
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_librispeech_download_resumes_and_checks_sha256(tmp_path, server, monkeypatch):
    www, url = server
    make_librispeech(tmp_path / "src", {"dev-clean": LIBRI["dev-clean"]})
    archive = tarball(tmp_path / "src", "dev-clean", www / "dev-clean.tar.gz")
    data = archive.read_bytes()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "dev-clean.tar.gz.part").write_bytes(data[: len(data) // 2])  # an interrupted download

    from asr.checkpoint import sha256_file

    monkeypatch.setitem(librispeech.SHA256, "dev-clean", sha256_file(archive))
    out = tmp_path / "data"
    assert librispeech.main(["--corpus-dir", str(corpus), "--download", "--mirror", url,
                             "--subsets", "dev-clean", str(out)]) == 0
    assert RangeHandler.ranges == [f"bytes={len(data) // 2}-"]
    assert not (corpus / "dev-clean.tar.gz").exists()  # downloaded by us: removed once unpacked
    assert len(read_data_dir(out / "dev_clean")) == 3

    (www / "bad.tar.gz").write_bytes(b"not what was promised")
    with pytest.raises(PrepError, match="sha256"):
        librispeech.fetch(url + "bad.tar.gz", tmp_path / "bad.tar.gz", "0" * 64)
    assert not (tmp_path / "bad.tar.gz").exists() and not (tmp_path / "bad.tar.gz.part").exists()


# ---------------------------------------------------------------------------------------------
# AN4


def write_sphere(path, x, sr=16000):
    """NIST sphere as in an4_sphere.tar.gz: 1024-byte header, big-endian 16-bit PCM."""
    header = (f"NIST_1A\n   1024\nsample_rate -i {sr}\nchannel_count -i 1\nsample_byte_format -s2 10\n"
              f"sample_n_bytes -i 2\nsample_count -i {len(x)}\nsample_sig_bits -i 16\nsample_coding -s3 pcm\n"
              f"end_head\n").encode()
    path.write_bytes(header.ljust(1024, b" ") + (x * 32767).astype(">i2").tobytes())


AN4 = {
    "train": [("fash", "an251-fash-b", "<s> YES </s>"), ("fash", "an253-fash-b", "<s> GO </s>"),
              ("fbbh", "an86-fbbh-b", "<s> R O S E </s>"), ("mgah", "cen1-mgah-b", "<s> TWO SIX EIGHT </s>")],
    "test": [("fcaw", "an406-fcaw-b", "<s> ENTER FOUR </s>"), ("fcaw", "cen2-fcaw-b", "<s> H E N R Y </s>")],
}


def make_an4(root):
    an4_dir = root / "an4"
    (an4_dir / "etc").mkdir(parents=True)
    for split, utts in AN4.items():
        wav_dir = "an4_clstk" if split == "train" else "an4test_clstk"
        trans, ids = [], []
        for i, (spk, fid, text) in enumerate(utts):
            d = an4_dir / "wav" / wav_dir / spk
            d.mkdir(parents=True, exist_ok=True)
            x = tone(0.3 + 0.1 * i, 16000, i)
            if fid == "an253-fash-b":  # the raw big-endian release
                (d / f"{fid}.raw").write_bytes((x * 32767).astype(">i2").tobytes())
            else:
                write_sphere(d / f"{fid}.sph", x)
            trans.append(f"{text} ({fid})\n")
            ids.append(f"{wav_dir}/{spk}/{fid}\n")
        (an4_dir / "etc" / f"an4_{split}.transcription").write_text("".join(trans))
        (an4_dir / "etc" / f"an4_{split}.fileids").write_text("".join(ids))
    return an4_dir


def test_an4_sphere_and_raw_audio(tmp_path):
    make_an4(tmp_path)
    out = tmp_path / "data"
    assert an4.main(["--corpus-dir", str(tmp_path), "--dev-utts", "1", str(out)]) == 0
    train = {u.utt_id: u for u in read_data_dir(out / "train")}
    dev = {u.utt_id: u for u in read_data_dir(out / "dev")}
    test = {u.utt_id: u for u in read_data_dir(out / "test")}
    assert sorted(dev) == ["fash-an251-b", "fash-an253-b"]  # the first speaker, whole
    assert sorted(train) == ["fbbh-an86-b", "mgah-cen1-b"]
    assert sorted(test) == ["fcaw-an406-b", "fcaw-cen2-b"]
    assert dev["fash-an251-b"].text == "yes" and train["fbbh-an86-b"].text == "r o s e"
    assert test["fcaw-an406-b"].text == "enter four" and test["fcaw-an406-b"].speaker == "fcaw"
    samples, sr = load_audio(dev["fash-an251-b"].audio)  # sphere read by soundfile, no sph2pipe
    assert sr == 16000 and np.abs(samples - tone(0.3, 16000, 0)).max() < 1e-3
    raw = dev["fash-an253-b"]
    assert raw.audio.endswith(".wav") and np.abs(load_audio(raw.audio)[0] - tone(0.4, 16000, 1)).max() < 1e-3
    for name in ("train", "dev", "test"):
        assert validate_data_dir(out / name) == [], name


def test_an4_missing_audio_is_skipped_and_named(tmp_path, capsys):
    root = make_an4(tmp_path)
    (root / "wav" / "an4test_clstk" / "fcaw" / "cen2-fcaw-b.sph").unlink()
    with open(root / "etc" / "an4_test.transcription", "a") as f:
        f.write("no parenthesised id here\n")
    assert an4.main(["--corpus-dir", str(root), "--dev-utts", "0", str(tmp_path / "data")]) == 0
    summary = capsys.readouterr().out
    assert "cen2-fcaw-b" in summary and "an4_test.transcription:3: expected" in summary
    assert [u.utt_id for u in read_data_dir(tmp_path / "data" / "test")] == ["fcaw-an406-b"]
    assert not (tmp_path / "data" / "dev").exists()


# ---------------------------------------------------------------------------------------------
# LJ Speech


def make_ljspeech(root, n=12):
    d = root / "LJSpeech-1.1"
    (d / "wavs").mkdir(parents=True)
    lines = []
    for i in range(1, n + 1):
        utt = f"LJ001-{i:04d}"
        sf.write(d / "wavs" / f"{utt}.wav", tone(0.1 + 0.01 * i, 22050, i), 22050, subtype="PCM_16")
        lines.append(f'{utt}|Printing, in the only sense with which we are at present concerned, in 1{i}|'
                     f'Printing, in the only sense with which we are at present concerned, in one {i}')
    lines[2] = 'LJ001-0003|He said "quote unbalanced|'  # no normalized text: the raw one stands in
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return d


def test_ljspeech_fixed_split_and_normalized_text(tmp_path):
    make_ljspeech(tmp_path)
    out = tmp_path / "data"
    assert ljspeech.main(["--corpus-dir", str(tmp_path), "--num-dev", "2", "--num-test", "3", str(out)]) == 0
    sets = {name: read_data_dir(out / name) for name in ("train", "dev", "test")}
    assert [len(sets[s]) for s in ("train", "dev", "test")] == [7, 2, 3]
    assert [u.utt_id for u in sets["dev"]] == ["LJ001-0008", "LJ001-0009"]
    assert [u.utt_id for u in sets["test"]] == ["LJ001-0010", "LJ001-0011", "LJ001-0012"]
    by_id = {u.utt_id: u for s in sets.values() for u in s}
    assert by_id["LJ001-0001"].text.endswith("concerned, in one 1") and by_id["LJ001-0001"].speaker == "lj"
    assert by_id["LJ001-0003"].text == 'He said "quote unbalanced'
    assert by_id["LJ001-0012"].duration == pytest.approx(0.22, abs=1e-3)
    for name in sets:
        assert validate_data_dir(out / name) == [], name
    assert ljspeech.main(["--corpus-dir", str(tmp_path), "--num-dev", "6", "--num-test", "6", str(tmp_path / "x")]) == 1


# ---------------------------------------------------------------------------------------------
# speechocean762

SO762 = {  # split -> speaker -> (age, gender, [(utt, text)])
    "train": {"0001": ("6", "m", [("000010011", "WE CALL IT BEAR"), ("000010035", "ZERO THREE FIVE ONE")]),
              "0005": ("25", "F", [("000050003", "MARK IS\u200b GOING")]),
              "0006": ("30", "f", [("000060015", "IT'S A CAT"), ("000060020", "")])},
    "test": {"1031": ("9", "m", [("010310001", "I LIKE TEA")])},
}


def make_speechocean762(root, ext=".wav"):
    for split, speakers in SO762.items():
        d = root / split
        d.mkdir(parents=True)
        files = {name: [] for name in ("wav.scp", "text", "utt2spk", "spk2age", "spk2gender")}
        for spk, (age, gender, utts) in speakers.items():
            (root / "WAVE" / f"SPEAKER{spk}").mkdir(parents=True, exist_ok=True)
            files["spk2age"].append(f"{spk} {age}")
            files["spk2gender"].append(f"{spk} {gender}")
            for utt, text in utts:
                fmt = {"subtype": "OPUS", "format": "OGG"} if ext == ".opus" else {}
                sf.write(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}{ext}", tone(0.5, 16000), 16000, **fmt)
                files["wav.scp"].append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.wav")  # the release lists .wav
                files["text"].append(f"{utt}\t{text}")
                files["utt2spk"].append(f"{utt}\t{spk}")
        for name, lines in files.items():
            (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("ext", [".wav", ".opus"])
def test_speechocean762_layout_to_data_dirs(tmp_path, ext):
    root = make_speechocean762(tmp_path / "so762", ext)
    out = tmp_path / "data"
    assert speechocean762.main(["--corpus-dir", str(root), "--dev-speakers", "1", str(out)]) == 0
    sets = {s: {u.utt_id: u for u in read_data_dir(out / s)} for s in ("train", "dev", "test")}
    for s in sets:
        validate_data_dir(out / s)
    speakers = {s: {u.speaker for u in utts.values()} for s, utts in sets.items()}
    assert speakers["test"] == {"so1031"}
    assert len(speakers["dev"]) == 1 and not speakers["dev"] & speakers["train"]  # whole speakers
    train_dev = {**sets["train"], **sets["dev"]}
    assert train_dev["so0005-000050003"].text == "mark is going"  # lowercased, zero-width space gone
    assert train_dev["so0006-000060015"].text == "it's a cat"
    assert "so0006-000060020" not in train_dev  # the empty transcript is skipped, and said so
    assert "empty transcript" in (out / "prepare.log").read_text()
    assert all(u.audio.endswith(ext) for u in train_dev.values())
    ages = dict(line.split() for s in ("train", "dev") for line in (out / s / "spk2age").read_text().splitlines())
    assert ages == {"so0001": "6", "so0005": "25", "so0006": "30"}
    assert "so1031 m" in (out / "test" / "spk2gender").read_text()


def test_speechocean762_missing_audio_is_skipped_and_named(tmp_path, capsys):
    root = make_speechocean762(tmp_path / "so762")
    (root / "WAVE" / "SPEAKER0001" / "000010035.wav").unlink()
    assert speechocean762.main(["--corpus-dir", str(root), "--dev-speakers", "0", str(tmp_path / "d")]) == 0
    assert "000010035" in capsys.readouterr().out
    assert "so0001-000010035" not in {u.utt_id for u in read_data_dir(tmp_path / "d" / "train")}


def test_speechocean762_dev_speakers_follow_the_age_mix():
    speakers = [f"s{i:02d}" for i in range(20)]
    ages = {s: "8" if i < 10 else "30" for i, s in enumerate(speakers)}
    dev = speechocean762.dev_speakers(speakers, ages, 4)
    assert len(dev) == 4 and sum(ages[s] == "8" for s in dev) == 2


def test_speechocean762_real_copy_is_speaker_disjoint(tmp_path):
    from .conftest import SHARED_DATA

    corpus = SHARED_DATA / "speechocean762"
    if not corpus.is_dir():
        pytest.skip(f"no speechocean762 at {corpus}")
    out = tmp_path / "so"
    assert speechocean762.main(["--corpus-dir", str(corpus), str(out)]) == 0
    sets = {s: {u.utt_id: u for u in read_data_dir(out / s)} for s in ("train", "dev", "test")}
    assert {s: len(u) for s, u in sets.items()} == {"train": 2300, "dev": 200, "test": 2000}
    speakers = {s: {u.speaker for u in utts.values()} for s, utts in sets.items()}
    assert len(speakers["train"]) == 115 and len(speakers["dev"]) == 10 and len(speakers["test"]) == 100
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["test"] & (speakers["train"] | speakers["dev"]))
    # children and adults in dev, as in training
    groups = {speechocean762.age_group(line.split()[1]) for line in (out / "dev" / "spk2age").read_text().splitlines()}
    assert groups == {"child", "adult"}
