"""The training losses: FastMTP's recursive K-step loss (with MTP-D's KL and
EAGLE's feature regression) and Medusa's per-head loss, weighted across steps
by beta-decay (:func:`step_weights`); and the draft-vocabulary cut of the LM
heads that the losses see (:func:`restrict_lm_heads`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def step_weights(k: int, beta: float) -> list[float]:
    """alpha_1..alpha_k: beta^(i-1) normalised to sum to 1."""
    w = [beta ** i for i in range(k)]
    s = sum(w)
    return [x / s for x in w]


def restrict_lm_heads(module: torch.nn.Module, ids: np.ndarray) -> torch.Tensor:
    """Cut every ``lm_head`` of ``module`` (shared ones once) to the rows ``ids``
    (frozen copies); returns the map token id -> row (-1 outside the set)."""
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    done: dict[int, torch.nn.Linear] = {}
    n_vocab = None
    for m in list(module.modules()):
        head = getattr(m, "lm_head", None)
        if not isinstance(head, torch.nn.Linear):
            continue
        if id(head) not in done:
            n_vocab = head.weight.shape[0]
            cut = torch.nn.Linear(head.weight.shape[1], len(ids_t), bias=head.bias is not None)
            with torch.no_grad():
                cut.weight.copy_(head.weight[ids_t])
                if head.bias is not None:
                    cut.bias.copy_(head.bias[ids_t])
            cut.requires_grad_(False)
            done[id(head)] = cut
        m.lm_head = done[id(head)]
    if n_vocab is None:
        raise ValueError("train_vocab: the heads module has no lm_head to cut")
    remap = torch.full((n_vocab,), -1, dtype=torch.long)
    remap[ids_t] = torch.arange(len(ids_t))
    return remap


def _denom(mask: torch.Tensor, count) -> torch.Tensor:
    """The positions a mean is taken over: this batch's, or ``count``'s (several
    processes: the global count over the process count, so that averaging the
    processes' gradients gives exactly the one-process gradient of the global batch)."""
    n = mask.sum()
    return (n if count is None else count(n)).clamp(min=1)


def mtp_losses(module, batch: dict[str, torch.Tensor], cfg,
               remap: torch.Tensor | None = None, count=None) -> tuple[torch.Tensor, dict]:
    """The recursive K-step loss of one batch; returns (loss, metrics).
    ``remap`` (:func:`restrict_lm_heads`): the heads' logits are over a draft
    vocabulary; targets are mapped into it and those outside drop out.
    ``count``: see :func:`_denom`."""
    x, h, valid = batch["tokens"], batch["hidden"], batch["valid"]
    labels = batch.get("labels", x)      # what follows each position (finetune.WindowDataset)
    use = valid & batch["response"] if cfg.response_only else valid
    T = x.shape[1]
    n_layers = len(getattr(module, "module", module).layers)   # DistributedDataParallel wraps it
    alphas = step_weights(cfg.n_predict, cfg.beta)
    total = x.new_zeros((), dtype=torch.float32)
    metrics = {"ce": [], "kl": [], "acc": [], "n": []}
    prev = h
    # chain attention: step k's rows attend to what the runtime's MTP cache holds then
    # (heads.fused.chain_mask); one shared layer only (every block runs through it)
    chain = getattr(cfg, "chain_attention", False)
    if chain and n_layers > 1:
        raise ValueError(f"chain_attention needs one shared MTP layer; these heads have {n_layers}")
    blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for k in range(1, cfg.n_predict + 1):
        n = T - k - 1
        if n <= 0:
            break
        ids = x[:, k:k + n]
        pos = torch.arange(k, k + n, device=x.device).expand(x.shape[0], n)
        blocks.append((ids, prev[:, :n], pos))
        if chain and k > 1:
            logits, prev = module(*(torch.cat(b, 1) for b in zip(*blocks)), layer=0,
                                  chain=[b[0].shape[1] for b in blocks])
        else:
            logits, prev = module(ids, prev[:, :n], pos, layer=(k - 1) % n_layers)
        target = labels[:, k + 1:k + 1 + n]
        mask = use[:, k + 1:k + 1 + n]
        if remap is not None:
            target = remap.to(target.device)[target]
            mask = mask & (target >= 0)
            target = target.clamp(min=0)
        logp = F.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        denom = _denom(mask, count)
        ce = (nll * mask).sum() / denom
        step_loss = ce
        if cfg.method == "eagle" and cfg.feature_weight > 0:
            # the predicted feature regresses the target's own post-norm state at that position
            feat = F.smooth_l1_loss(prev.float(), h[:, k:k + n].float(), reduction="none").mean(-1)
            feat = (feat * mask).sum() / denom
            step_loss = step_loss + cfg.feature_weight * feat
            metrics.setdefault("feat", []).append(float(feat.detach()))
        if cfg.method in ("mtp-d", "eagle") and cfg.kl_weight > 0:
            tv, ti = batch["topk_values"][:, k:k + n], batch["topk_indices"][:, k:k + n]
            kl_mask = mask
            if remap is not None:
                # the target's top-k renormalised over those inside the draft vocabulary
                ti = remap.to(ti.device)[ti]
                inside = ti >= 0
                kl_mask = mask & inside.any(-1)          # none inside: no KL there (a softmax of nothing)
                tv = tv.masked_fill(~inside, float("-inf")).masked_fill(~kl_mask.unsqueeze(-1), 0.0)
                ti = ti.clamp(min=0)
            p = F.softmax(tv, dim=-1)
            kl = (p * (torch.log(p.clamp(min=1e-30)) - logp.gather(-1, ti))).sum(-1)
            kl = (kl * kl_mask).sum() / denom
            step_loss = step_loss + cfg.kl_weight * kl
            metrics["kl"].append(float(kl.detach()))
        total = total + alphas[k - 1] * step_loss
        with torch.no_grad():
            acc = ((logits.argmax(-1) == target) & mask).sum() / denom
        metrics["ce"].append(float(ce.detach()))
        metrics["acc"].append(float(acc))
        metrics["n"].append(int(mask.sum()))
    return total, metrics


def medusa_losses(module, batch: dict[str, torch.Tensor], cfg, count=None) -> tuple[torch.Tensor, dict]:
    """Sum over heads of beta-weighted CE (+ kl_weight x KL to the recorded top-k);
    ``count``: see :func:`_denom`."""
    m = getattr(module, "module", module)                 # DistributedDataParallel wraps it
    x, h, valid = batch["tokens"], batch["hidden"], batch["valid"]
    labels = batch.get("labels", x)      # what follows each position (finetune.WindowDataset)
    use = valid & batch["response"] if cfg.response_only else valid
    T = x.shape[1]
    K = m.n_heads
    alphas = step_weights(K, cfg.beta)
    total = h.new_zeros((), dtype=torch.float32)
    metrics = {"ce": [], "kl": [], "acc": [], "n": []}
    for k in range(K):
        n = T - k - 2
        if n <= 0:
            break
        logp = module(h[:, :n], k)
        target = labels[:, k + 2:k + 2 + n]
        mask = use[:, k + 2:k + 2 + n]
        nll = -m.token_logp(logp, target.unsqueeze(-1)).squeeze(-1)
        denom = _denom(mask, count)
        ce = (nll * mask).sum() / denom
        loss = ce
        if cfg.kl_weight > 0:
            tv, ti = batch["topk_values"][:, k + 1:k + 1 + n], batch["topk_indices"][:, k + 1:k + 1 + n]
            p = F.softmax(tv, dim=-1)
            kl = (p * (torch.log(p.clamp(min=1e-30)) - m.token_logp(logp, ti))).sum(-1)
            kl = (kl * mask).sum() / denom
            loss = loss + cfg.kl_weight * kl
            metrics["kl"].append(float(kl.detach()))
        total = total + alphas[k] * loss
        with torch.no_grad():
            acc = ((m.predict(logp) == target) & mask).sum() / denom
        metrics["ce"].append(float(ce.detach()))
        metrics["acc"].append(float(acc))
        metrics["n"].append(int(mask.sum()))
    return total, metrics
