"""LoRA adapters for the tests, made with peft from random weights (`init_lora_weights=False`,
so the adapter really changes the answers), and kept in the node's model cache, as the
built-in models are: a second session finds them made."""

from __future__ import annotations

from pathlib import Path

TARGETS = ["q_proj", "v_proj"]


def make_adapter(base: Path, seed: int, rank: int = 8, targets: tuple[str, ...] = tuple(TARGETS)) -> Path:
    """A rank-`rank` LoRA of `base` on `targets` (q_proj and v_proj), its weights drawn from `seed`."""
    from cluster.models.node_cache import fill_once, models_dir

    on = "" if list(targets) == TARGETS else "-" + "-".join(targets)
    dest = models_dir() / f"test-lora-{base.name}-r{rank}-seed{seed}{on}"

    def build(staging: Path) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False,
                            task_type="CAUSAL_LM")
        get_peft_model(model, config).save_pretrained(staging)

    fill_once(dest, build, "adapter_config.json")
    return dest


def peft_greedy(base: Path, adapter: Path | None, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """The tokens transformers (with peft's adapter, if any) generates greedily after `prompt_ids`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_tokens, do_sample=False,
                             temperature=None, top_p=None, top_k=None)
    return out[0, len(prompt_ids):].tolist()
