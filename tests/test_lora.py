"""LoRA on the LLM: only adapters train; save / merge / reload give the same embeddings."""

from __future__ import annotations

import pytest
import torch
from _scale_helpers import collate_pair_notes, make_ckpts, make_pairs, tiny_module

from notellm2_pl.model.lora import is_lora, load_lora, merge_lora, save_lora

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    ckpts = make_ckpts(root)
    module = tiny_module(ckpts, llm_kwargs={"lora": LORA}).eval()
    with torch.no_grad():  # B starts at zero (LoRA is a no-op): make the adapters matter
        for name, p in module.encoder.llm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    batch = collate_pair_notes(module, make_pairs(root / "images", 3))
    return root, ckpts, module, batch


def test_only_adapters_and_new_parts_train(setup):
    _, _, module, _ = setup
    assert is_lora(module.encoder.llm.model)
    llm_trainable = [n for n, p in module.encoder.llm.named_parameters() if p.requires_grad]
    assert llm_trainable and all("lora_" in n for n in llm_trainable)
    assert module.encoder.head.weight.requires_grad and module.tau.requires_grad


def test_save_pretrained_merges_a_copy_and_reloads_as_plain_llm(setup):
    from notellm2_pl_backbones.hf_llm import HFCausalLM

    root, _, module, _ = setup
    llm = module.encoder.llm
    ids = torch.tensor([[5, 9, 2, 7, 11, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = llm(llm.embed_tokens(ids), mask).hidden
    llm.save_pretrained(root / "merged_llm")
    assert is_lora(llm.model)  # the backbone keeps its adapters
    plain = HFCausalLM(pretrained=str(root / "merged_llm")).eval()
    assert not is_lora(plain.model) and len(plain.tokenizer) == len(llm.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(plain(plain.embed_tokens(ids), mask).hidden, ref, atol=1e-5, rtol=0)


def test_save_merge_reload_same_embeddings(setup):
    root, ckpts, module, batch = setup
    with torch.no_grad():
        ref = module(batch).e_m
    llm = module.encoder.llm
    save_lora(llm.model, root / "adapter")
    assert (root / "adapter" / "adapter_config.json").exists()

    # reload: base weights (with the same added-token rows) + saved adapters
    base = tiny_module(ckpts)  # same seed: same connector/head; the base LLM gets the same mean-initialised rows
    base.encoder.load_state_dict(_without_llm(module.encoder.state_dict()), strict=False)
    with torch.no_grad():
        base.encoder.llm.model.get_input_embeddings().weight.copy_(llm.model.get_input_embeddings().weight)
    base.encoder.llm.model = load_lora(base.encoder.llm.model, root / "adapter")
    base.eval()
    with torch.no_grad():
        torch.testing.assert_close(base(batch).e_m, ref, atol=1e-5, rtol=0)

    # merge: LoRA folded into the weights, plain transformers model, no peft at inference
    llm.model = merge_lora(llm.model)
    assert not is_lora(llm.model)
    assert not any("lora_" in n for n, _ in llm.model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(module(batch).e_m, ref, atol=1e-5, rtol=0)


def test_lora_gradients_flow(setup):
    _, ckpts, _, batch = setup
    module = tiny_module(ckpts, llm_kwargs={"lora": LORA})
    loss, _ = module.compute_loss(batch)
    loss.backward()
    lora_grads = [p.grad for n, p in module.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None for g in lora_grads)


def test_merge_without_adapters_says_what_to_do():
    with pytest.raises(ValueError, match="no LoRA"):
        merge_lora(torch.nn.Linear(2, 2))


def _without_llm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("llm.")}
