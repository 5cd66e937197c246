import pytest

from asr.config import ConfigError, load_config


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_overrides_types_and_unknown_keys(tmp_path):
    p = write(tmp_path, "a.yaml", "model:\n  hidden_size: 32\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(p, ["model.cell=gru", "train.max_epochs=3", "train.train_data=[a, b]"])
    assert cfg.model.hidden_size == 32 and cfg.model.cell == "gru" and cfg.train.lr == 1e-3
    assert cfg.train.train_data == ["a", "b"] and cfg.train.max_epochs == 3
    with pytest.raises(ConfigError, match="model.*hiden_size"):
        load_config(p, ["model.hiden_size=3"])
    with pytest.raises(ConfigError, match="model.bidirectional: expected true/false"):
        load_config(p, ["model.bidirectional=maybe"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(p, ["model.cell"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_base_config_is_merged(tmp_path):
    write(tmp_path, "base.yaml", "model:\n  hidden_size: 32\n  num_layers: 4\ntrain:\n  lr: 0.1\n")
    p = write(tmp_path, "v.yaml", "base: base.yaml\nmodel:\n  num_layers: 2\n")
    cfg = load_config(p)
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.train.lr) == (32, 2, 0.1)
    write(tmp_path, "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="too deep"):
        load_config(tmp_path / "loop.yaml")


def test_a_retired_key_of_an_old_package_header_is_read_and_ignored():
    cfg = load_config(data={"decode": {"decoder": "beam", "batch_size": 16}})
    assert cfg.decode.decoder == "beam" and not hasattr(cfg.decode, "batch_size")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(data={"decode": {"batch_sise": 16}})
