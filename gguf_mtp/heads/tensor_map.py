"""The MTP tensor map of every supported family: ONE table whose rows drive the
converter (:mod:`gguf_mtp.convert.archs`), the PyTorch heads loader and
stitcher (:mod:`gguf_mtp.heads.common`'s :class:`TensorRule` lists, the
transform and its inverse) and ``gguf-mtp archs --tensors / --markdown``, as
gguf-py's ``tensor_mapping.py`` drives its converter.

A row (:class:`MTPTensor`) names one tensor three ways:

``hf``
    the checkpoint's name. ``{N}`` is ``num_hidden_layers + i`` (DeepSeek's
    appended layout), ``{i}`` the MTP layer, ``{e}`` an expert;
``gguf``
    the GGUF name after ``blk.{N+i}.`` (two names for a tensor the converter
    splits);
``state``
    the name under which a heads directory stores it (``heads.safetensors``:
    ``mtp.<state>``), ``None`` for tensors the heads never train (an MTP
    layer's own embedding and shared head, frozen like the trunk's);

plus ``transform`` (what the converter does on the way to the GGUF; the heads
loader inverts it), ``when`` (a feature of the file that must hold for the row
to exist: ``q_lora``, ``qkv_bias``, ``moe`` ...; rows with ``optional`` exist
only when the file has them) and ``shared`` (one tensor in block N shared by a
stack of MTP layers: the Qwen families' fusion).
"""

from __future__ import annotations

from dataclasses import dataclass

#: transforms between the checkpoint (and heads state) and the GGUF
NONE = "none"
PLUS_ONE = "1 + w"                   # zero-centred RMSNorm weight w stored as 1 + w
ROPE_Q = "RoPE rows permuted (q heads)"      # llama: half-split rows -> interleaved, per q head
ROPE_K = "RoPE rows permuted (kv heads)"     # ... per kv head
GATE_UP = "experts [E, 2I, H] split into gate and up [E, I, H]"
KV_B = "kv_b [H*(nope+v), r] split into k_b [H, r, nope] (transposed) and v_b [H, v, r]"
SWAP_HALVES = "column halves swapped ([W_h | W_e] -> [W_e | W_h])"
STACKED = "experts stacked into one [E, ...] tensor"   # checkpoint experts one by one; state is transformers' fused form


@dataclass(frozen=True)
class MTPTensor:
    hf: str
    gguf: tuple[str, ...]
    state: str | None
    transform: str = NONE
    when: str = ""
    shared: bool = False


def T(hf: str, gguf: str | tuple[str, ...], state: str | None, transform: str = NONE, when: str = "",
      shared: bool = False) -> MTPTensor:
    return MTPTensor(hf, (gguf,) if isinstance(gguf, str) else tuple(gguf), state, transform, when, shared)


# -- DeepSeek's appended layout: model.layers.{N} (DeepSeek-V3, GLM-4.5, the dense families) --------

_A = "model.layers.{N}."
_S = "layers.{i}."

#: the fusion, the shared-head norm and the layer's own (frozen) embedding / head
APPENDED_FUSION = (
    T(_A + "enorm.weight", "nextn.enorm.weight", _S + "enorm.weight"),
    T(_A + "hnorm.weight", "nextn.hnorm.weight", _S + "hnorm.weight"),
    T(_A + "eh_proj.weight", "nextn.eh_proj.weight", _S + "eh_proj.weight"),
    T(_A + "shared_head.norm.weight", "nextn.shared_head_norm.weight", _S + "shared_head.norm.weight"),
    T(_A + "shared_head.head.weight", "nextn.shared_head_head.weight", None, when="optional"),
    T(_A + "embed_tokens.weight", "nextn.embed_tokens.weight", None, when="optional"),
)


def _dense_ffn(a: str, s: str) -> tuple[MTPTensor, ...]:
    return tuple(T(f"{a}mlp.{w}_proj.weight", f"ffn_{w}.weight", f"{s}mlp.{w}_proj.weight", when=w_when)
                 for w, w_when in (("gate", "dense_ffn"), ("up", "dense_ffn"), ("down", "dense_ffn")))


def _moe(a: str, s: str, shared_name: str) -> tuple[MTPTensor, ...]:
    """Router, stacked experts and shared expert (DeepSeek / GLM names)."""
    return (
        T(a + "mlp.gate.weight", "ffn_gate_inp.weight", s + "mlp.gate.weight", when="moe"),
        T(a + "mlp.gate.e_score_correction_bias", "exp_probs_b.bias", s + "mlp.gate.e_score_correction_bias",
          when="exp_probs_b"),
        T(a + "mlp.experts.{e}.{gate,up}_proj.weight", ("ffn_gate_exps.weight", "ffn_up_exps.weight"),
          s + "mlp.experts.gate_up_proj", GATE_UP, when="moe"),
        T(a + "mlp.experts.{e}.down_proj.weight", "ffn_down_exps.weight", s + "mlp.experts.down_proj", STACKED,
          when="moe"),
        *(T(f"{a}mlp.{shared_name}.{w}_proj.weight", f"ffn_{w}_shexp.weight", f"{s}mlp.{shared_name}.{w}_proj.weight",
            when="moe") for w in ("gate", "up", "down")),
    )


DEEPSEEK_V3 = APPENDED_FUSION + (
    T(_A + "input_layernorm.weight", "attn_norm.weight", _S + "input_layernorm.weight"),
    T(_A + "self_attn.q_a_proj.weight", "attn_q_a.weight", _S + "self_attn.q_a_proj.weight", when="q_lora"),
    T(_A + "self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight", _S + "self_attn.q_a_layernorm.weight",
      when="q_lora"),
    T(_A + "self_attn.q_b_proj.weight", "attn_q_b.weight", _S + "self_attn.q_b_proj.weight", when="q_lora"),
    T(_A + "self_attn.q_proj.weight", "attn_q.weight", _S + "self_attn.q_proj.weight", when="no_q_lora"),
    T(_A + "self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight", _S + "self_attn.kv_a_proj_with_mqa.weight"),
    T(_A + "self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight", _S + "self_attn.kv_a_layernorm.weight"),
    T(_A + "self_attn.kv_b_proj.weight", ("attn_k_b.weight", "attn_v_b.weight"), _S + "self_attn.kv_b_proj.weight",
      KV_B),
    T(_A + "self_attn.o_proj.weight", "attn_output.weight", _S + "self_attn.o_proj.weight"),
    T(_A + "post_attention_layernorm.weight", "ffn_norm.weight", _S + "post_attention_layernorm.weight"),
) + _moe(_A, _S, "shared_experts") + _dense_ffn(_A, _S)

GLM4_MOE = APPENDED_FUSION + (
    T(_A + "input_layernorm.weight", "attn_norm.weight", _S + "input_layernorm.weight"),
    *(T(f"{_A}self_attn.{w}_proj.weight", f"attn_{w}.weight", f"{_S}self_attn.{w}_proj.weight") for w in "qkv"),
    *(T(f"{_A}self_attn.{w}_proj.bias", f"attn_{w}.bias", f"{_S}self_attn.{w}_proj.bias", when="qkv_bias")
      for w in "qkv"),
    T(_A + "self_attn.q_norm.weight", "attn_q_norm.weight", _S + "self_attn.q_norm.weight", when="qk_norm"),
    T(_A + "self_attn.k_norm.weight", "attn_k_norm.weight", _S + "self_attn.k_norm.weight", when="qk_norm"),
    T(_A + "self_attn.o_proj.weight", "attn_output.weight", _S + "self_attn.o_proj.weight"),
    T(_A + "post_attention_layernorm.weight", "post_attention_norm.weight", _S + "post_attention_layernorm.weight"),
) + _moe(_A, _S, "shared_experts") + _dense_ffn(_A, _S)


def _dense_layer(q_k: tuple[MTPTensor, ...], norm: str = NONE, extra_norms: tuple[MTPTensor, ...] = (),
                 ffn_norm: tuple[str, str] = ("post_attention_layernorm", "ffn_norm")) -> tuple[MTPTensor, ...]:
    return APPENDED_FUSION + (
        T(_A + "input_layernorm.weight", "attn_norm.weight", _S + "input_layernorm.weight", norm),
        *q_k,
        T(_A + "self_attn.v_proj.weight", "attn_v.weight", _S + "self_attn.v_proj.weight"),
        T(_A + "self_attn.o_proj.weight", "attn_output.weight", _S + "self_attn.o_proj.weight"),
        T(f"{_A}{ffn_norm[0]}.weight", f"{ffn_norm[1]}.weight", f"{_S}{ffn_norm[0]}.weight", norm),
        *extra_norms,
        *(T(f"{_A}mlp.{w}_proj.weight", f"ffn_{w}.weight", f"{_S}mlp.{w}_proj.weight") for w in ("gate", "up", "down")),
    )


def _qk(transform_q: str = NONE, transform_k: str = NONE) -> tuple[MTPTensor, ...]:
    return (T(_A + "self_attn.q_proj.weight", "attn_q.weight", _S + "self_attn.q_proj.weight", transform_q),
            T(_A + "self_attn.k_proj.weight", "attn_k.weight", _S + "self_attn.k_proj.weight", transform_k))


def _qk_norms(norm: str = NONE) -> tuple[MTPTensor, ...]:
    return (T(_A + "self_attn.q_norm.weight", "attn_q_norm.weight", _S + "self_attn.q_norm.weight", norm),
            T(_A + "self_attn.k_norm.weight", "attn_k_norm.weight", _S + "self_attn.k_norm.weight", norm))


def _qkv_bias() -> tuple[MTPTensor, ...]:
    return tuple(T(f"{_A}self_attn.{w}_proj.bias", f"attn_{w}.bias", f"{_S}self_attn.{w}_proj.bias") for w in "qkv")


# LlamaForCausalLM (SmolLM2, Llama): the converter permutes q/k rows for llama.cpp's RoPE
LLAMA = _dense_layer(_qk(ROPE_Q, ROPE_K))
# Qwen2ForCausalLM (Qwen2.5): q/k/v biases
QWEN2 = _dense_layer(_qk() + _qkv_bias())
# Qwen3ForCausalLM: per-head q/k RMSNorms
QWEN3 = _dense_layer(_qk() + _qk_norms())
# Gemma3ForCausalLM (text): Gemma's x * (1 + w) norms (stored 1 + w), sandwich norms
GEMMA3 = _dense_layer(_qk() + _qk_norms(PLUS_ONE), PLUS_ONE, extra_norms=(
    T(_A + "post_attention_layernorm.weight", "post_attention_norm.weight", _S + "post_attention_layernorm.weight",
      PLUS_ONE),
    T(_A + "post_feedforward_layernorm.weight", "post_ffw_norm.weight", _S + "post_feedforward_layernorm.weight",
      PLUS_ONE),
), ffn_norm=("pre_feedforward_layernorm", "ffn_norm"))

# MiMoForCausalLM (MiMo-7B) -> arch qwen2: model.mtp_layers.{i}, hidden-first input_proj
_M = "model.mtp_layers.{i}."
MIMO = (
    T(_M + "token_layernorm.weight", "nextn.enorm.weight", _S + "enorm.weight"),
    T(_M + "hidden_layernorm.weight", "nextn.hnorm.weight", _S + "hnorm.weight"),
    T(_M + "input_proj.weight", "nextn.eh_proj.weight", _S + "eh_proj.weight", SWAP_HALVES),
    T(_M + "final_layernorm.weight", "nextn.shared_head_norm.weight", _S + "shared_head.norm.weight"),
) + tuple(
    T(r.hf.replace(_A, _M), r.gguf, r.state, r.transform, r.when)
    for r in QWEN2 if not r.gguf[0].startswith("nextn.")
)

# -- the Qwen layout: mtp.* (Qwen3.5, Qwen3.5-MoE, Qwen3-Next); every norm is stored 1 + w -------------

_Q = "mtp.layers.{i}."
QWEN_FUSION = (
    T("mtp.pre_fc_norm_embedding.weight", "nextn.enorm.weight", "pre_fc_norm_embedding.weight", PLUS_ONE,
      shared=True),
    T("mtp.pre_fc_norm_hidden.weight", "nextn.hnorm.weight", "pre_fc_norm_hidden.weight", PLUS_ONE, shared=True),
    T("mtp.fc.weight", "nextn.eh_proj.weight", "fc.weight", shared=True),
    T("mtp.norm.weight", "nextn.shared_head_norm.weight", "norm.weight", PLUS_ONE, shared=True),
)
QWEN_ATTENTION = (
    T(_Q + "input_layernorm.weight", "attn_norm.weight", "layers.{i}.input_layernorm.weight", PLUS_ONE),
    *(T(f"{_Q}self_attn.{w}_proj.weight", f"attn_{g}.weight", f"layers.{{i}}.self_attn.{w}_proj.weight")
      for w, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))),
    T(_Q + "self_attn.q_norm.weight", "attn_q_norm.weight", "layers.{i}.self_attn.q_norm.weight", PLUS_ONE),
    T(_Q + "self_attn.k_norm.weight", "attn_k_norm.weight", "layers.{i}.self_attn.k_norm.weight", PLUS_ONE),
    T(_Q + "post_attention_layernorm.weight", "post_attention_norm.weight",
      "layers.{i}.post_attention_layernorm.weight", PLUS_ONE),
)
QWEN35 = QWEN_FUSION + QWEN_ATTENTION + tuple(
    T(f"{_Q}mlp.{w}_proj.weight", f"ffn_{w}.weight", f"layers.{{i}}.mlp.{w}_proj.weight")
    for w in ("gate", "up", "down"))
QWEN_MOE = QWEN_FUSION + QWEN_ATTENTION + (
    T(_Q + "mlp.gate.weight", "ffn_gate_inp.weight", "layers.{i}.mlp.gate.weight"),
    T(_Q + "mlp.experts.{e}.{gate,up}_proj.weight", ("ffn_gate_exps.weight", "ffn_up_exps.weight"),
      "layers.{i}.mlp.experts.gate_up_proj", GATE_UP),
    T(_Q + "mlp.experts.{e}.down_proj.weight", "ffn_down_exps.weight", "layers.{i}.mlp.experts.down_proj", STACKED),
    *(T(f"{_Q}mlp.shared_expert.{w}_proj.weight", f"ffn_{w}_shexp.weight",
        f"layers.{{i}}.mlp.shared_expert.{w}_proj.weight") for w in ("gate", "up", "down")),
    T(_Q + "mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight", "layers.{i}.mlp.shared_expert_gate.weight"),
)

#: Hugging Face architecture -> its rows (one per family; the GGUF arch is in gguf_mtp.convert.archs)
BY_HF_ARCH: dict[str, tuple[MTPTensor, ...]] = {
    "Qwen3_5ForCausalLM": QWEN35,
    "Qwen3_5MoeForCausalLM": QWEN_MOE,
    "Qwen3NextForCausalLM": QWEN_MOE,
    "DeepseekV3ForCausalLM": DEEPSEEK_V3,
    "Glm4MoeForCausalLM": GLM4_MOE,
    "LlamaForCausalLM": LLAMA,
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": QWEN3,
    "Gemma3ForCausalLM": GEMMA3,
    "MiMoForCausalLM": MIMO,
}

#: GGUF architecture -> the rows its heads are loaded and stitched with (MiMo
#: converts to qwen2 in the appended layout, so qwen2's rows cover it)
BY_GGUF_ARCH: dict[str, tuple[MTPTensor, ...]] = {
    "qwen35": QWEN35, "qwen35moe": QWEN_MOE, "qwen3next": QWEN_MOE, "deepseek2": DEEPSEEK_V3,
    "glm4moe": GLM4_MOE, "llama": LLAMA, "qwen2": QWEN2, "qwen3": QWEN3, "gemma3": GEMMA3,
}


def appended_renames(rows: tuple[MTPTensor, ...]) -> dict[str, str]:
    """For a family stored outside the appended layout (MiMo): checkpoint suffix
    after ``model.mtp_layers.{i}.`` -> the appended layout's suffix after
    ``model.layers.{N}.`` (the rows with the same GGUF name in qwen2's table)."""
    by_gguf = {r.gguf: r for r in QWEN2}
    out = {}
    for r in rows:
        if r.hf.startswith(_M) and r.gguf in by_gguf:
            out[r.hf[len(_M):]] = by_gguf[r.gguf].hf[len(_A):]
    return out


def nextn_renames(rows: tuple[MTPTensor, ...]) -> dict[str, str]:
    """Appended-layout suffix (after ``model.layers.{N}.``) -> GGUF suffix, for
    the tensors only an MTP layer has (``nextn.*``): what a converter that
    knows nothing of MTP layers must name itself."""
    return {r.hf[len(_A):]: r.gguf[0] for r in rows if r.hf.startswith(_A) and r.gguf[0].startswith("nextn.")}


def display(rows: tuple[MTPTensor, ...]) -> list[tuple[str, str, str]]:
    """(checkpoint, GGUF, transform) for documentation: ``N`` = the trunk's
    layer count + the MTP layer, ``i`` = the MTP layer, ``e`` = an expert."""
    out = []
    for r in rows:
        hf = r.hf.replace("{N}", "N").replace("{i}", "i").replace("{e}", "e")
        g = " + ".join(f"blk.{'N' if r.shared else 'N+i'}.{x}" for x in r.gguf)
        note = [] if r.transform == NONE else [r.transform]
        if r.when == "optional":
            note.append("optional")
        elif r.when:
            note.append(f"when {r.when.replace('_', ' ')}")
        if r.state is None:
            note.append("frozen")
        out.append((hf, g, "; ".join(note)))
    return out
