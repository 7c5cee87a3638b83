"""PyTorch reference of the Qwen3.5 trunk and its MTP head.

The MTP head computes what llama.cpp's ``llama_model_qwen35::graph_mtp``
(src/models/qwen35.cpp) computes, in the same order:

    e      = enorm(embed(x_p))                    # mtp.pre_fc_norm_embedding
    hn     = hnorm(h_{p-1})                       # mtp.pre_fc_norm_hidden
    x      = fc(concat[e, hn])                    # mtp.fc, embedding first
    x      = one full-attention Qwen3.5 decoder layer (causal, over the MTP sequence)
    h_next = norm(x)                              # mtp.norm, the shared head norm
    logits = lm_head(h_next)                      # tied to embed_tokens if so configured

``h`` is the trunk's hidden state *after* its final norm (llama.cpp's
``h_nextn`` / transformers' ``last_hidden_state``), and ``h_next`` is the MTP's
own ``h_nextn``: what llama.cpp feeds into the next recursive draft step.

The decoder layer, attention (output gate, q/k norms, partial interleaved
M-RoPE) and RMSNorm are transformers' own Qwen3.5 classes, so only the
MTP-specific wiring lives here.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .fused import causal_mask, mtp_inputs  # noqa: F401  (re-exported)


def _qwen35_modules():
    from transformers.models.qwen3_5 import modeling_qwen3_5 as m

    return m


def _text_config(config):
    """A ``Qwen3_5TextConfig`` from a config.json dict (or pass one through)."""
    from transformers import Qwen3_5TextConfig

    return config if isinstance(config, Qwen3_5TextConfig) else Qwen3_5TextConfig.from_dict(config)


def _mtp_layer_config(config, n_layers: int):
    """The trunk config, re-shaped so that layer ``i`` is a full-attention layer.

    Eager attention keeps the softmax in float32 and takes an explicit mask.
    """
    layer_config = copy.deepcopy(config)
    layer_config.num_hidden_layers = n_layers
    layer_config.layer_types = ["full_attention"] * n_layers
    layer_config._attn_implementation = "eager"
    return layer_config


class Qwen35MTP(nn.Module):
    """The Qwen3.5 MTP block, with attribute names matching the checkpoint's ``mtp.*``.

    ``embed_tokens`` and ``lm_head`` are the trunk's (Qwen3.5 MTP has no
    dedicated embeddings); they are submodules here but not part of
    :meth:`mtp_state_dict`.
    """

    def __init__(self, config, embed_tokens: nn.Embedding, lm_head: nn.Linear):
        super().__init__()
        m = _qwen35_modules()
        config = _text_config(config)
        n_layers = int(getattr(config, "mtp_num_hidden_layers", 1) or 1)
        hidden, eps = config.hidden_size, config.rms_norm_eps
        layer_config = _mtp_layer_config(config, n_layers)

        self.config = layer_config
        self.embed_tokens = embed_tokens
        self.lm_head = lm_head
        self.pre_fc_norm_embedding = m.Qwen3_5RMSNorm(hidden, eps=eps)
        self.pre_fc_norm_hidden = m.Qwen3_5RMSNorm(hidden, eps=eps)
        self.fc = nn.Linear(2 * hidden, hidden, bias=False)
        self.layers = nn.ModuleList(m.Qwen3_5DecoderLayer(layer_config, i) for i in range(n_layers))
        self.norm = m.Qwen3_5RMSNorm(hidden, eps=eps)
        self.rotary_emb = m.Qwen3_5TextRotaryEmbedding(layer_config)
        self._init_like_hf(config.initializer_range)

    def _init_like_hf(self, std: float) -> None:
        """transformers' init for Qwen3.5: linear weights N(0, std), RMSNorm weights 0."""
        with torch.no_grad():
            for name, module in self.named_modules():
                if name.startswith(("embed_tokens", "lm_head")):
                    continue
                if isinstance(module, nn.Linear):
                    module.weight.normal_(0.0, std)

    def mtp_state_dict(self) -> dict[str, torch.Tensor]:
        """The MTP's own weights, named as in checkpoints without the ``mtp.`` prefix."""
        return {
            k: v for k, v in self.state_dict().items()
            if not k.startswith(("embed_tokens.", "lm_head."))
        }

    @classmethod
    def from_state_dict(cls, config, state: dict[str, torch.Tensor],
                        dtype: torch.dtype = torch.float32) -> "Qwen35MTP":
        """Build from a config (dict or ``Qwen3_5TextConfig``) and a full checkpoint state dict."""
        config = _text_config(config)
        embed_w = state["model.embed_tokens.weight"]
        embed = nn.Embedding(*embed_w.shape)
        lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        mtp = cls(config, embed, lm_head)

        own = {k.removeprefix("mtp."): v for k, v in state.items() if k.startswith("mtp.")}
        if not own:
            raise ValueError("the checkpoint has no mtp.* tensors")
        mtp.load_state_dict(own, strict=False)
        missing = set(mtp.mtp_state_dict()) - set(own)
        unexpected = set(own) - set(mtp.mtp_state_dict())
        if missing or unexpected:
            raise ValueError(f"mtp.* mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")

        with torch.no_grad():
            embed.weight.copy_(embed_w)
            if config.tie_word_embeddings or "lm_head.weight" not in state:
                lm_head.weight = embed.weight
            else:
                lm_head.weight.copy_(state["lm_head.weight"])
        return mtp.to(dtype).eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        hidden: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        layer: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MTP over a sequence: row ``p`` pairs token ``x_p`` with trunk hidden ``h_{p-1}``.

        ``input_ids`` ``[B, T]``, ``hidden`` ``[B, T, H]`` (post-final-norm trunk
        states), ``position_ids`` ``[B, T]`` (default ``0..T-1``). Attention is
        causal over the T rows, like the MTP's own KV cache in llama.cpp.
        Returns ``(logits [B, T, V], h_next [B, T, H])``.
        """
        # a stack of MTP layers (Qwen3-Next style) shares fc, the input norms and
        # the final norm; ``layer`` picks the decoder layer (chained heads)
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(batch, length)

        e = self.pre_fc_norm_embedding(self.embed_tokens(input_ids))
        hn = self.pre_fc_norm_hidden(hidden.to(e.dtype))
        x = self.fc(torch.cat([e, hn], dim=-1))

        x = self.layers[layer](
            x,
            position_embeddings=self.rotary_emb(x, position_ids),
            attention_mask=causal_mask(length, x.dtype, x.device),
            position_ids=position_ids,
        )
        h_next = self.norm(x)
        return self.lm_head(h_next), h_next
