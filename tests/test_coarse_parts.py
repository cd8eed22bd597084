"""Building blocks of the coarse trainer: LoRA merge, caches, data order, prompts, checkpoints."""

from __future__ import annotations

import pytest
import torch

from generation.coarse.lora import UNET_TARGET_MODULES, add_lora, has_lora, merge_lora
from generation.coarse.prompts import background_words, combine_prompt, token_count
from generation.models import TinyModelConfig, build_tiny_unet, build_tiny_vae
from generation.tokenizer import build_clip_tokenizer
from generation.training.caching import LatentCache, cached_latents, encode_latent_cache
from generation.training.checkpoint import prune_checkpoints, resolve_resume
from generation.training.randomness import batch_indices

SMALL = TinyModelConfig(
    resolution=32,
    vae_block_out_channels=(16, 16),
    vae_norm_num_groups=8,
    unet_block_out_channels=(16, 32, 32),
    unet_attention_head_dim=8,
    unet_norm_num_groups=8,
    text_hidden_size=32,
)


def test_lora_merge_equals_lora_applied_output():
    torch.manual_seed(0)
    unet = build_tiny_unet(SMALL).eval()
    params = add_lora(unet, rank=4, alpha=8, target_modules=UNET_TARGET_MODULES)
    with torch.no_grad():
        for param in params:  # lora_B starts at zero: make the adapters actually do something
            param.add_(0.05 * torch.randn_like(param))
    inputs = (torch.randn(2, 4, 16, 16), torch.tensor([10, 500]), torch.randn(2, 77, 32))
    with torch.no_grad():
        applied = unet(*inputs).sample
        unet.disable_adapters()
        base = unet(*inputs).sample
        unet.enable_adapters()
        assert has_lora(unet)
        merged_model = merge_lora(unet).eval()
        merged = merged_model(*inputs).sample
    assert merged_model is unet and not has_lora(merged_model)  # in place: no second copy
    assert set(merged_model.state_dict()) == set(build_tiny_unet(SMALL).state_dict())
    assert (applied - base).abs().max() > 1e-3, "adapters must change the output"
    torch.testing.assert_close(merged, applied, atol=1e-5, rtol=1e-4)


def test_latent_cache_flips_and_sampling(tmp_path):
    torch.manual_seed(0)
    vae = build_tiny_vae(SMALL).eval()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    cache = encode_latent_cache(vae, lambda idx: images[idx], 3, with_flips=True, batch_size=2)
    assert cache.mean.shape == (3, 2, 4, 16, 16)
    with torch.no_grad():
        flipped = vae.encode(images.flip(-1)).latent_dist
    # The mirrored variant is the encoding of the mirrored image, not a mirrored latent.
    torch.testing.assert_close(cache.mean[:, 1], flipped.mean)
    assert not torch.allclose(cache.mean[:, 1], cache.mean[:, 0].flip(-1), atol=1e-4)
    indices, flips = torch.tensor([2, 0]), torch.tensor([True, False])
    first = cache.sample(indices, flips, torch.Generator().manual_seed(5))
    again = cache.sample(indices, flips, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(5))
    expected = cache.mean[indices, flips.long()] + cache.std[indices, flips.long()] * noise
    torch.testing.assert_close(first, expected)
    target = tmp_path / "latents.safetensors"
    built = cached_latents(target, lambda: cache)
    reloaded = cached_latents(target, lambda: pytest.fail("cache file must be reused"))
    assert torch.equal(built.mean, reloaded.mean) and isinstance(reloaded, LatentCache)


def test_data_order_covers_each_epoch_and_shards_disjoint():
    seen = torch.cat([batch_indices(10, 4, step, seed=1) for step in range(2)])
    assert len(set(seen.tolist())) == 8  # drop_last epoch of 2 batches, no repeats
    assert not torch.equal(batch_indices(10, 4, 0, seed=1), batch_indices(10, 4, 2, seed=1))
    shards = [batch_indices(10, 4, 3, 1, process, 2) for process in range(2)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert torch.equal(torch.cat(shards), batch_indices(10, 4, 3, seed=1))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        batch_indices(3, 4, 0, seed=1)


def test_prompt_keeps_nodule_words_within_77_tokens():
    text_nd = "malignant, follicular, solid, hypoechoic, taller-than-wide, ill-defined margins"
    text_bg = "128.820089, 31.687319, 1.290799, bright, high contrast, coarse texture"
    assert background_words(text_bg) == "bright, high contrast, coarse texture"
    full = combine_prompt(text_nd, text_bg)
    assert full.startswith(text_nd + "; 128.82")
    assert combine_prompt(text_nd, text_bg, "words").endswith(
        "; bright, high contrast, coarse texture"
    )
    assert combine_prompt(text_nd, text_bg, "none") == text_nd
    with pytest.raises(ValueError, match="background mode"):
        combine_prompt(text_nd, text_bg, "some")
    tokenizer = build_clip_tokenizer()
    long = combine_prompt(text_nd, ", ".join([text_bg] * 4))
    assert token_count(tokenizer, long) > 77
    kept = tokenizer(long, truncation=True, max_length=77).input_ids
    nodule = tokenizer(text_nd).input_ids[1:-1]
    assert kept[1 : 1 + len(nodule)] == nodule and len(kept) == 77


def test_checkpoint_resolution_and_retention(tmp_path):
    assert resolve_resume(tmp_path, "latest") is None
    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-20").mkdir()  # incomplete (killed while saving): ignored
    assert resolve_resume(tmp_path, "latest").name == "checkpoint-15"
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-10",
        "checkpoint-15",
        "checkpoint-20",
    ]
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(tmp_path, "checkpoint-20")


def test_cli_profile_and_overrides(tmp_path):
    from generation.coarse.cli import config_from_args
    from generation.coarse.config import PROFILES, CoarseConfig

    base = ["--train_data_dir", "d", "--output_dir", "o"]
    quick = config_from_args([*base, "--profile", "quick", "--max_train_steps", "7"])
    assert quick.max_train_steps == 7
    assert quick.autoencoder_steps == PROFILES["quick"]["autoencoder_steps"]
    flags = config_from_args([*base, "--snr_gamma", "none", "--validation_seeds", "4", "5"])
    assert flags.snr_gamma is None and flags.validation_seeds == [4, 5]
    assert flags.use_ema == CoarseConfig().use_ema
    file = tmp_path / "run.json"
    file.write_text('{"train_data_dir": "d", "output_dir": "o", "lora_rank": 4}')
    assert config_from_args(["--config", str(file), "--lora_rank", "2"]).lora_rank == 2


def test_text_encoder_groups_lower_rate_and_no_decay_on_embeddings():
    from generation.coarse.config import CoarseConfig
    from generation.coarse.train import text_param_groups
    from generation.models import TinyModelConfig, build_tiny_components

    tiny = TinyModelConfig(
        resolution=32, text_hidden_size=32, text_num_layers=1, text_intermediate_size=64
    )
    encoder = build_tiny_components(tiny).text_encoder
    params = list(encoder.parameters())
    config = CoarseConfig(learning_rate=4e-4)
    assert config.effective_text_encoder_learning_rate == pytest.approx(4e-5)
    explicit = CoarseConfig(text_encoder_learning_rate=1e-3)
    assert explicit.effective_text_encoder_learning_rate == 1e-3
    groups = text_param_groups(encoder, params, config.effective_text_encoder_learning_rate)
    assert sum(len(g["params"]) for g in groups) == len(params)
    no_decay = [g for g in groups if g.get("weight_decay") == 0.0]
    assert len(no_decay) == 1 and all(g["lr"] == pytest.approx(4e-5) for g in groups)
    token_embedding = encoder.get_input_embeddings().weight
    assert any(p is token_embedding for p in no_decay[0]["params"])
    fc1 = dict(encoder.named_parameters())["encoder.layers.0.mlp.fc1.weight"]
    assert not any(p is fc1 for p in no_decay[0]["params"])
    assert text_param_groups(encoder, [], 1e-4) == []


def test_toy_and_quick_profiles_are_valid_configs():
    from generation.coarse.config import PROFILES, CoarseConfig

    assert {"quick", "long", "toy"} <= set(PROFILES)
    for values in PROFILES.values():
        config = CoarseConfig(train_data_dir="d", output_dir="o", **values).validate()
        assert config.autoencoder_crop_size <= config.resolution
    assert PROFILES["toy"]["max_train_steps"] < PROFILES["quick"]["max_train_steps"]
    from generation.coarse.train import load_tiny_config

    # the long profile's 8x autoencoder keeps the quick profile's latent grid at twice the pixels
    latent = {
        name: load_tiny_config(CoarseConfig(train_data_dir="d", output_dir="o", **PROFILES[name]))
        for name in ("quick", "long")
    }
    assert latent["long"].resolution == 2 * latent["quick"].resolution
    assert latent["long"].latent_size == latent["quick"].latent_size == 16


def test_prompt_separation_sees_collapse():
    from generation.coarse.train import COLLAPSE_WARNING, prompt_separation
    from generation.models import TinyModelConfig, build_tiny_components

    torch.manual_seed(0)
    tiny = TinyModelConfig(
        resolution=32, text_hidden_size=32, text_num_layers=1, text_intermediate_size=64
    )
    parts = build_tiny_components(tiny)
    prompts = ["benign, taller-than-wide", "malignant, wider-than-tall"]
    separated = prompt_separation(parts.text_encoder, parts.tokenizer, prompts, "cpu")
    assert separated > COLLAPSE_WARNING
    same = prompt_separation(parts.text_encoder, parts.tokenizer, [prompts[0]] * 2, "cpu")
    assert same == pytest.approx(0.0, abs=1e-6)


def test_nodule_weights_follow_the_mask_and_its_flip():
    from generation.coarse.train import nodule_weight_maps
    from generation.training.loss import diffusion_loss

    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, :4, :2] = 1.0  # top-left nodule; latent 4x4 -> cell (0,0) full, (1,0) full
    weights = nodule_weight_maps(masks, (4, 4), 10.0)
    assert weights[0, 0, 0, 0] == 10.0 and weights[0, 0, 1, 0] == 10.0
    assert weights[0, 0, 0, 1] == 1.0 and weights.sum() == 14 + 2 * 10.0
    # The weighted loss is a weighted mean: an error only inside the nodule counts 10x more
    # than the same error only outside it, and uniform errors give the plain MSE.
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler()
    target = torch.zeros(1, 4, 4, 4)
    inside, outside = target.clone(), target.clone()
    inside[..., 0, 0] = 1.0
    outside[..., 3, 3] = 1.0
    steps = torch.tensor([500])
    loss_in = diffusion_loss(inside, target, steps, scheduler, None, weights)
    loss_out = diffusion_loss(outside, target, steps, scheduler, None, weights)
    assert torch.isclose(loss_in / loss_out, torch.tensor(10.0))
    uniform = torch.ones_like(target)
    assert torch.isclose(
        diffusion_loss(uniform, target, steps, scheduler, 5.0, weights),
        diffusion_loss(uniform, target, steps, scheduler, 5.0),
    )
