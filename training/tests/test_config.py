import json

import pytest

from vla_jepa.config import (PRESETS, ActionHeadConfig, TextConfig, VLAJEPAConfig, _build_registry, config_from_dict,
                             config_to_dict, get_config, replace)


def test_presets_roundtrip_through_json():
    for name, cfg in PRESETS.items():
        assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg, name


def test_unknown_preset_suggests_close_name():
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        get_config("tinny")


def test_duplicate_preset_names_rejected():
    with pytest.raises(ValueError, match="duplicate preset"):
        _build_registry([lambda: get_config("tiny"), lambda: get_config("tiny")])


def test_validation_names_value_and_limit():
    with pytest.raises(ValueError, match=r"mrope_section=\(1, 1, 1\) must sum to head_dim/2=16"):
        TextConfig(hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32, mrope_section=(1, 1, 1))
    with pytest.raises(ValueError, match="dropout must be in"):
        ActionHeadConfig(dropout=1.5)
    with pytest.raises(ValueError, match="image_size=100 must be divisible"):
        replace(get_config("tiny"), image_size=100)


def test_contract_fields():
    cfg: VLAJEPAConfig = get_config("paper")
    assert (cfg.action_dim, cfg.horizon, cfg.num_euler_steps, cfg.state_dim, cfg.num_views) == (7, 7, 4, 8, 2)
    assert cfg.image_tokens_per_view == 64 and cfg.num_latent_tokens == 24 and cfg.num_embodied_tokens == 32
