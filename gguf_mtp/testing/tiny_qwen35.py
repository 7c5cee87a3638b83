"""Tiny Qwen3.5 checkpoints with an MTP block, laid out like the real ones.

``make_qwen35_checkpoint`` writes a directory that the pinned converter and
transformers treat exactly as a released text-only Qwen3.5 model:
``config.json`` (``Qwen3_5ForCausalLM`` / ``qwen3_5_text``), safetensors
weights (single file or sharded with an index), ``generation_config.json``
and the real Qwen3.5 tokenizer files (see :mod:`gguf_mtp.testing.qwen35_tokenizer`).

The trunk is transformers' own ``Qwen3_5ForCausalLM`` with seeded random
weights; the MTP block comes from :class:`gguf_mtp.heads.qwen35_torch.Qwen35MTP` and is
stored under the names real checkpoints use (``mtp.fc.weight``,
``mtp.pre_fc_norm_embedding.weight``, ``mtp.layers.0.self_attn.q_proj.weight``
and so on).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .qwen35_tokenizer import qwen35_vocab_info, write_qwen35_tokenizer

#: Real Qwen3.5 models use 1e7 as RoPE base and 0.25 of each head for RoPE.
ROPE_THETA = 10_000_000.0
PARTIAL_ROTARY_FACTOR = 0.25

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def mrope_section(head_dim: int, partial_rotary_factor: float = PARTIAL_ROTARY_FACTOR) -> list[int]:
    """Split the rotary frequencies over (t, h, w) the way Qwen3.5 does.

    Qwen3.5 (head_dim 256, factor 0.25: 32 frequencies) uses [11, 11, 10];
    smaller heads get the same near-even split of their frequency count.
    """
    n_freq = int(head_dim * partial_rotary_factor) // 2
    base, rest = divmod(n_freq, 3)
    return [base + (rest > 0), base + (rest > 1), base]


def layer_types(num_layers: int, full_attention_interval: int, all_full_attention: bool) -> list[str]:
    """Qwen3.5's hybrid pattern: every ``interval``-th layer is full attention."""
    return [
        "full_attention" if all_full_attention or (i + 1) % full_attention_interval == 0
        else "linear_attention"
        for i in range(num_layers)
    ]


def qwen35_text_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    full_attention_interval: int,
    all_full_attention: bool,
    mtp_layers: int,
    intermediate_size: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    linear_conv_kernel_dim: int,
    linear_key_head_dim: int,
    linear_value_head_dim: int,
    linear_num_key_heads: int,
    linear_num_value_heads: int,
    tie_word_embeddings: bool,
    init_std: float,
    bos_token_id: int | None,
    eos_token_id: int | None,
    dtype: torch.dtype,
) -> dict:
    """``config.json`` of a text-only Qwen3.5 model (keys as in the released configs)."""
    return {
        "architectures": ["Qwen3_5ForCausalLM"],
        "model_type": "qwen3_5_text",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "full_attention_interval": 1 if all_full_attention else full_attention_interval,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": init_std,
        "intermediate_size": intermediate_size,
        "layer_types": layer_types(num_layers, full_attention_interval, all_full_attention),
        "linear_conv_kernel_dim": linear_conv_kernel_dim,
        "linear_key_head_dim": linear_key_head_dim,
        "linear_num_key_heads": linear_num_key_heads,
        "linear_num_value_heads": linear_num_value_heads,
        "linear_value_head_dim": linear_value_head_dim,
        "max_position_embeddings": 262144,
        "mtp_num_hidden_layers": mtp_layers,
        "mtp_use_dedicated_embeddings": False,
        "num_attention_heads": num_heads,
        "num_hidden_layers": num_layers,
        "num_key_value_heads": num_kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "mrope_interleaved": True,
            "mrope_section": mrope_section(head_dim),
            "partial_rotary_factor": PARTIAL_ROTARY_FACTOR,
            "rope_theta": ROPE_THETA,
            "rope_type": "default",
        },
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def _perturb_norms(state: dict[str, torch.Tensor], std: float, gen: torch.Generator) -> None:
    """Give the zero-initialised (1-centred) RMSNorm weights random values.

    With all-zero norms a swapped or missing norm (e.g. enorm vs hnorm, or the
    converter's ``+1``) would go unnoticed; small random weights make it show.
    The gated linear-attention norm is 1-initialised and multiplies directly,
    so it is perturbed around 1.
    """
    for name, tensor in state.items():
        if name.endswith("linear_attn.norm.weight"):
            tensor.copy_(1.0 + std * torch.randn(tensor.shape, generator=gen))
        elif "norm" in name and name.endswith(".weight"):
            tensor.copy_(std * torch.randn(tensor.shape, generator=gen))


def build_state_dict(config: dict, *, seed: int, with_mtp: bool, norm_std: float) -> dict[str, torch.Tensor]:
    """Seeded random weights: transformers' trunk, then the ``mtp.*`` block."""
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    from ..heads.qwen35_torch import Qwen35MTP

    text_config = Qwen3_5TextConfig.from_dict(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trunk = Qwen3_5ForCausalLM(text_config)
        mtp = Qwen35MTP(text_config, trunk.model.embed_tokens, trunk.lm_head) if with_mtp else None

    state = {k: v.detach().clone() for k, v in trunk.state_dict().items()}
    if config["tie_word_embeddings"]:
        state.pop("lm_head.weight")  # tied checkpoints store only the embedding
    if mtp is not None:
        state.update({f"mtp.{k}": v.detach().clone() for k, v in mtp.mtp_state_dict().items()})

    gen = torch.Generator().manual_seed(seed + 1)
    _perturb_norms(state, norm_std, gen)
    return state


def save_safetensors(state: dict[str, torch.Tensor], out_dir: Path, shards: int = 1) -> list[Path]:
    """Write ``state`` as ``model.safetensors`` or as ``shards`` files plus an index.

    Tensors keep their order and are split into contiguous runs of (nearly)
    equal count, so every shard holds something and blocks may straddle shards.
    """
    from safetensors.torch import save_file

    names = list(state)
    if not 1 <= shards <= len(names):
        raise ValueError(f"shards must be between 1 and {len(names)}, got {shards}")
    metadata = {"format": "pt"}
    if shards == 1:
        path = out_dir / SINGLE_FILE
        save_file({k: state[k].contiguous() for k in names}, str(path), metadata=metadata)
        return [path]

    per_shard, extra = divmod(len(names), shards)
    paths, weight_map, start = [], {}, 0
    for i in range(shards):
        count = per_shard + (i < extra)
        chunk = names[start:start + count]
        start += count
        path = out_dir / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k].contiguous() for k in chunk}, str(path), metadata=metadata)
        weight_map.update({k: path.name for k in chunk})
        paths.append(path)

    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return paths


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def make_qwen35_checkpoint(
    out_dir: Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    full_attention_interval: int = 4,
    all_full_attention: bool = False,
    mtp_layers: int = 1,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 16,
    linear_conv_kernel_dim: int = 4,
    linear_key_head_dim: int = 16,
    linear_value_head_dim: int = 16,
    linear_num_key_heads: int = 2,
    linear_num_value_heads: int = 4,
    shards: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    tie_word_embeddings: bool = True,
    with_mtp: bool = True,
    init_std: float = 0.02,
    norm_std: float = 0.1,
    vocab_gguf: Path | None = None,
) -> Path:
    """Write a tiny random Qwen3.5 checkpoint (trunk + MTP block) into ``out_dir``.

    ``vocab_gguf`` is the llama.cpp vocab the tokenizer files and
    ``vocab_size`` come from (default: the installed runtime's
    ``ggml-vocab-qwen35.gguf``). ``linear_num_value_heads`` may be a multiple
    of ``linear_num_key_heads``, as in the real models (exercises the
    converter's V-head reordering). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = qwen35_vocab_info(vocab_gguf)
    config = qwen35_text_config(
        vocab_size=vocab["n_tokens"],
        hidden_size=hidden_size,
        num_layers=num_layers,
        full_attention_interval=full_attention_interval,
        all_full_attention=all_full_attention,
        mtp_layers=mtp_layers,
        intermediate_size=intermediate_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        linear_conv_kernel_dim=linear_conv_kernel_dim,
        linear_key_head_dim=linear_key_head_dim,
        linear_value_head_dim=linear_value_head_dim,
        linear_num_key_heads=linear_num_key_heads,
        linear_num_value_heads=linear_num_value_heads,
        tie_word_embeddings=tie_word_embeddings,
        init_std=init_std,
        bos_token_id=vocab["bos_id"],
        eos_token_id=vocab["eos_id"],
        dtype=dtype,
    )
    if not with_mtp:
        del config["mtp_num_hidden_layers"]

    state = build_state_dict(config, seed=seed, with_mtp=with_mtp, norm_std=norm_std)
    save_safetensors({k: v.to(dtype) for k, v in state.items()}, out_dir, shards)
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", {
        "bos_token_id": vocab["bos_id"],
        "eos_token_id": vocab["eos_id"],
        "pad_token_id": vocab["pad_id"],
        "do_sample": False,
    })
    write_qwen35_tokenizer(out_dir, vocab_gguf)
    return out_dir


def load_qwen35_checkpoint(model_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config.json as a dict, all tensors)`` of a single-file or sharded checkpoint."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    index = model_dir / INDEX_FILE
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [SINGLE_FILE]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(model_dir / name)))
    return config, state


def load_qwen35_mtp(model_dir: Path, dtype: torch.dtype = torch.float32):
    """The ``mtp.*`` block (and the shared embedding / LM head) of a checkpoint
    as :class:`gguf_mtp.heads.qwen35_torch.Qwen35MTP`."""
    from ..heads.qwen35_torch import Qwen35MTP

    config, state = load_qwen35_checkpoint(model_dir)
    return Qwen35MTP.from_state_dict(config, state, dtype=dtype)


def load_trunk(model_dir: Path, dtype: torch.dtype = torch.float32):
    """transformers' ``Qwen3_5ForCausalLM`` for a checkpoint (the ``mtp.*`` tensors are ignored)."""
    from transformers import Qwen3_5ForCausalLM

    return Qwen3_5ForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()


@torch.no_grad()
def trunk_forward(model_or_dir, input_ids: torch.Tensor,
                  position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, hidden)`` of the trunk; ``hidden`` is *after* the final norm.

    That is the state llama.cpp exports as ``h_nextn`` and the MTP consumes.
    It is read from ``last_hidden_state`` of the inner model (in transformers
    5.x ``hidden_states[-1]`` is the same tensor, but ``last_hidden_state`` is
    post-norm by definition).
    """
    model = model_or_dir if isinstance(model_or_dir, torch.nn.Module) else load_trunk(model_or_dir)
    out = model.model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    hidden = out.last_hidden_state
    return model.lm_head(hidden), hidden
