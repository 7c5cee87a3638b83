#!/usr/bin/env python
"""Train gguf-mtp's embedded default model: a small Qwen3.5 with one MTP layer,
co-trained on local text so that its MTP head accepts a real share of drafts.

    . .venv/bin/activate
    python tools/train_default_model.py                 # train, write the artifact, measure, write the card
    python tools/train_default_model.py --steps 20 --out /tmp/a.npz --card /tmp/a.md   # a quick trial
    python tools/train_default_model.py --measure-only  # re-measure the committed artifact, rewrite the card

What it does, in order:

1. Data (:mod:`gguf_mtp.train.corpus`, all local, nothing downloaded): the
   ``*.py`` files of the running Python's standard library (test suites,
   ``idlelib``, ``lib2to3``, ``encodings`` left out), of a fixed list of
   pure-Python site-packages (pip, click, jinja2, packaging, networkx, tqdm,
   markdown-it, filelock), and English prose: the Linux man-pages project's
   pages (sections 2, 3, 4, 5, 7) rendered to plain text. Documents are
   shuffled with the seed, tokenized with the real Qwen3.5 tokenizer
   (``tokenizers``) and joined by ``<|endoftext|>``; the last
   ``--val-fraction`` of the stream is held out for the validation losses.
2. Vocabulary. The ``--vocab`` - 1 most frequent token ids of the training
   stream (``<|endoftext|>`` among them) get embedding rows; every other id of the 151,936
   keeps an all-zero row, which the artifact never stores. The model trains
   in a compact id space: used ids ``0..K-1`` and one *rare* id ``K`` whose
   embedding row is pinned to zero and stands for all other tokens.
3. Exact full-vocabulary loss. Embeddings are tied, so every zero row has
   logit exactly 0 and the full-vocabulary softmax equals a softmax over the
   K used logits plus ONE constant column ``log(n_zero)`` (``n_zero`` =
   151,936 - K): ``CE = logsumexp([z_used, log(n_zero)]) - z_target``, with
   ``z_target = 0`` for a rare target. The compact rare column's logit is 0, so
   adding ``log(n_zero)`` to it gives exactly that. The converted GGUF (full
   vocabulary, zero rows) therefore computes the very distribution trained here.
4. Objective (DeepSeek-V3 style co-training): ``L = L_next + λ·L_MTP``. The
   MTP block (:class:`gguf_mtp.heads.qwen35_torch.Qwen35MTP`, the llama.cpp graph) at
   row p reads ``emb(x_p)`` and the trunk's post-norm ``h_{p-1}`` and predicts
   ``x_{p+1}``: two tokens ahead of ``h_{p-1}``. Its gradient flows into the
   trunk. AdamW, linear warmup then cosine decay, fixed seed, CPU,
   ``torch.set_num_threads(--threads)``.
5. Artifact. float16 weights of the compact model, the used-id list and the
   config as an ``.npz`` (written with fixed zip timestamps, so the same
   weights give the same bytes); :mod:`gguf_mtp.models.default` expands it.
6. Measurement. The artifact is materialized and converted (f32, q8_0) and
   run in llama.cpp through :mod:`gguf_mtp.runtime` on ``DEFAULT_PROMPTS``:
   acceptance per draft position, tau and tokens/s at draft 1..3 against plain
   decoding (whose greedy output must be identical). Results go to the card,
   ``gguf_mtp/data/DEFAULT_MODEL.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# On shared cores a spinning OpenMP barrier waits for descheduled threads: with
# another job on the machine, 2 threads measured 2x slower than 1 under the
# default (active) wait policy and as fast as 1 under the passive one.
# (Set before torch loads its OpenMP runtime.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gguf_mtp.models import default as dm  # noqa: E402
from gguf_mtp.testing.qwen35_tokenizer import (  # noqa: E402
    cached_tokenizer_dir,
    default_vocab_gguf,
    qwen35_vocab_info,
)
from gguf_mtp.testing.tiny_qwen35 import qwen35_text_config  # noqa: E402

# ---------------------------------------------------------------------------- data

def load_corpus(seed: int) -> tuple[list[tuple[str, str]], dict]:
    """Every document of the local corpus (:mod:`gguf_mtp.train.corpus`: the
    standard library, the listed site-packages, the Linux man-pages), in an
    order shuffled by ``seed`` so that the held-out tail mixes all sources;
    and the corpus record for the card."""
    from gguf_mtp.train import corpus

    stdlib = corpus.stdlib_source()
    site, versions = corpus.site_packages_source()
    man = corpus.man_pages_source()
    if not man.docs:
        raise SystemExit(f"no Linux man-pages under {corpus.MAN_ROOT} (Debian: apt install manpages manpages-dev)")
    sources = [stdlib, site, man]
    docs = [(src.name, text) for src in sources for _, text in src.docs]
    order = np.random.default_rng(seed).permutation(len(docs))
    return [docs[i] for i in order], corpus.describe(sources, versions)


def tokenize_corpus(docs: list[tuple[str, str]], eos_id: int) -> tuple[np.ndarray, dict[str, int]]:
    """All documents as one token stream, each followed by ``<|endoftext|>``;
    and the token count per source."""
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(cached_tokenizer_dir(default_vocab_gguf()) / "tokenizer.json"))
    out: list[np.ndarray] = []
    per_source: dict[str, int] = {}
    step = 64
    for i in tqdm(range(0, len(docs), step), desc="tokenize", unit="batch", leave=False):
        chunk = docs[i:i + step]
        for (name, _), enc in zip(chunk, tok.encode_batch([t for _, t in chunk], add_special_tokens=False)):
            out.append(np.asarray(enc.ids + [eos_id], dtype=np.int32))
            per_source[name] = per_source.get(name, 0) + len(enc.ids) + 1
    return np.concatenate(out), per_source


def choose_vocab(train: np.ndarray, k: int, eos_id: int) -> np.ndarray:
    """The ``k`` most frequent ids of ``train`` (ties: lower id first) plus EOS, sorted."""
    counts = np.bincount(train, minlength=eos_id + 1)
    order = np.lexsort((np.arange(counts.size), -counts))  # by count desc, then id asc
    top = [int(i) for i in order[:k] if counts[i] > 0]
    if eos_id not in top:
        top[-1] = eos_id
    return np.array(sorted(top), dtype=np.int32)


# ---------------------------------------------------------------------------- model

def model_config(args, n_compact: int, vocab: dict) -> tuple[dict, dict]:
    """(kwargs for ``qwen35_text_config``, the compact training config dict).

    The kwargs are stored in the artifact; materializing replaces the vocab
    size by the full one.
    """
    kwargs = dict(
        hidden_size=args.hidden,
        num_layers=args.layers,
        full_attention_interval=args.full_attention_interval,
        all_full_attention=args.all_full_attention,
        mtp_layers=1,
        intermediate_size=args.intermediate,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        head_dim=args.head_dim,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=args.linear_head_dim,
        linear_value_head_dim=args.linear_head_dim,
        linear_num_key_heads=args.linear_key_heads,
        linear_num_value_heads=args.linear_value_heads,
        tie_word_embeddings=True,
        init_std=0.02,
        bos_token_id=vocab["bos_id"],
        eos_token_id=vocab["eos_id"],
    )
    # special ids do not exist in the compact id space (they only matter once expanded)
    compact = qwen35_text_config(vocab_size=n_compact, dtype=torch.float32,
                                 **{**kwargs, "bos_token_id": None, "eos_token_id": None})
    return kwargs, compact


def build_model(compact_config: dict, seed: int):
    """transformers' ``Qwen3_5ForCausalLM`` (compact vocab) and the MTP block sharing its embedding."""
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    from gguf_mtp.heads.qwen35_torch import Qwen35MTP

    cfg = Qwen3_5TextConfig.from_dict(compact_config)
    torch.manual_seed(seed)
    trunk = Qwen3_5ForCausalLM(cfg)
    assert trunk.lm_head.weight is trunk.model.embed_tokens.weight, "embeddings must be tied"
    mtp = Qwen35MTP(cfg, trunk.model.embed_tokens, trunk.lm_head)
    return trunk, mtp


class Objective:
    """Full-vocabulary cross-entropies of the compact model (see the module docstring)."""

    def __init__(self, n_compact: int, n_full: int):
        self.rare = n_compact - 1
        # logits + offset: 0 for used ids, log(#zero rows) for the rare column
        self.offset = torch.zeros(n_compact)
        self.offset[self.rare] = math.log(n_full - self.rare)

    def ce(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy((logits + self.offset).flatten(0, 1).float(), targets.flatten())

    def forward(self, trunk, mtp, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk and MTP logits on a batch of compact-id windows ``x [B, T]``,
        both ``[B, T-1, K+1]`` and both predicting ``x[:, 1:]``.

        Trunk row p predicts x_{p+1}. MTP row p pairs x_p with h_{p-1} (row 0
        with zeros, as the runtime's prefill does) and predicts x_{p+1}.
        """
        from gguf_mtp.heads.qwen35_torch import mtp_inputs

        h = trunk.model(input_ids=x, use_cache=False).last_hidden_state  # post final norm
        ids, hid, pos = mtp_inputs(x, h)
        mtp_logits, _ = mtp(ids[:, :-1], hid[:, :-1], pos[:, :-1])
        return trunk.lm_head(h[:, :-1]), mtp_logits

    def losses(self, trunk, mtp, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_next, L_MTP)``: full-vocabulary cross-entropies."""
        next_logits, mtp_logits = self.forward(trunk, mtp, x)
        return self.ce(next_logits, x[:, 1:]), self.ce(mtp_logits, x[:, 1:])


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor * peak + (1 - floor) * peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def param_groups(modules, weight_decay: float):
    """Weight decay on matrices only (not on norms, gates, biases); shared params once."""
    seen, decay, no_decay = set(), [], []
    for module in modules:
        for p in module.parameters():
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def windows(stream: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    return torch.stack([stream[s:s + length] for s in starts.tolist()])


@torch.no_grad()
def evaluate(obj: Objective, trunk, mtp, val: torch.Tensor, seq_len: int, batch: int, n_batches: int):
    """Held-out ``[L_next, L_MTP, agreement]``.

    ``agreement``: teacher-forced share of rows where the MTP's argmax equals
    the trunk's argmax for the same token, i.e. the draft-1 acceptance the
    head would get on real text (MTP row p+1 drafts what trunk row p+1 then
    predicts greedily). Argmaxes are over the full vocabulary: the rare column
    stands for 0-logit tokens and wins only if every used logit is below 0.
    """
    trunk.eval(), mtp.eval()
    n = min(n_batches * batch, (len(val) - 1) // seq_len)
    starts = torch.arange(n) * seq_len
    tot = np.zeros(3)
    count = 0
    for i in range(0, n, batch):
        x = windows(val, starts[i:i + batch], seq_len)
        next_logits, mtp_logits = obj.forward(trunk, mtp, x)
        a, b = obj.ce(next_logits, x[:, 1:]), obj.ce(mtp_logits, x[:, 1:])
        # MTP row p+1 (token x_{p+1}, h_p) vs trunk row p+1: both predict x_{p+2}
        agree = (mtp_logits[:, 1:].argmax(-1) == next_logits[:, 1:].argmax(-1)).float().mean()
        tot += np.array([a.item(), b.item(), agree.item()]) * len(x)
        count += len(x)
    trunk.train(), mtp.train()
    return tot / max(1, count)


# ---------------------------------------------------------------------------- artifact

def export_state(trunk, mtp, used_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Checkpoint-named float16 tensors; the embedding holds the used rows only
    (the rare row is zero by construction and not stored)."""
    state = {}
    for name, t in trunk.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        state[name] = t.detach().float().numpy()
    emb = state["model.embed_tokens.weight"]
    assert not emb[-1].any(), "the rare row must stay zero"
    state["model.embed_tokens.weight"] = emb[: len(used_ids)]
    for name, t in mtp.mtp_state_dict().items():
        state[f"mtp.{name}"] = t.detach().float().numpy()
    return {k: v.astype(np.float16) for k, v in state.items()}


def load_exported(trunk, mtp, tensors: dict[str, np.ndarray]) -> None:
    """Load exported (float16) tensors back into the compact modules."""
    with torch.no_grad():
        own = {k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()}
        emb = trunk.model.embed_tokens.weight
        emb.zero_()
        rows = own.pop("model.embed_tokens.weight")
        emb[: rows.shape[0]] = rows
        mtp_own = {k.removeprefix("mtp."): own.pop(k) for k in list(own) if k.startswith("mtp.")}
        missing = trunk.load_state_dict(own, strict=False)
        assert not missing.unexpected_keys and set(missing.missing_keys) <= {
            "lm_head.weight", "model.embed_tokens.weight"}, missing
        mtp.load_state_dict(mtp_own, strict=False)


# ---------------------------------------------------------------------------- measurement

def measure(artifact: Path, outtypes, drafts, n_predict: int, threads: int, cache: Path) -> dict:
    """Acceptance / tau / tok/s in llama.cpp for each outtype and draft length."""
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    results = {}
    for outtype in outtypes:
        path = dm.default_gguf(outtype, cache=cache, artifact=artifact)
        rows = []
        with Engine(path, RuntimeOptions(n_threads=threads, n_ctx=1024)) as eng:
            for prompt in dm.DEFAULT_PROMPTS:
                generate(eng, prompt, 8, drafter="mtp", draft=1)  # warm-up
                plain = generate(eng, prompt, n_predict, drafter="none")
                row = {"prompt": prompt, "text": plain.text, "plain_tok_s": plain.stats.tokens_per_s,
                       "plain_ms_pass": 1e3 * plain.stats.target_s / max(1, plain.stats.target_passes),
                       "n_generated": plain.stats.n_generated, "drafts": {}}
                for k in drafts:
                    g = generate(eng, prompt, n_predict, drafter="mtp", draft=k)
                    if g.tokens != plain.tokens:
                        raise AssertionError(f"{outtype} draft {k}: MTP output differs from plain for {prompt!r}")
                    st = g.stats
                    row["drafts"][k] = {"acc": st.acceptance_per_position, "tau": st.tau,
                                        "tok_s": st.tokens_per_s, "accepted": sum(st.accepted),
                                        "drafted": sum(st.drafted), "passes": st.target_passes,
                                        "ms_draft": 1e3 * st.draft_s / max(1, sum(st.drafted)),
                                        "acc_counts": _position_counts(st)}
                rows.append(row)
        results[outtype] = {"gguf_bytes": path.stat().st_size, "rows": rows}
    return results


def _position_counts(st) -> list[list[int]]:
    """Per draft position: [accepted, drafted] (pooled later over prompts)."""
    k_max = max(st.drafted, default=0)
    return [[sum(1 for d, a in zip(st.drafted, st.accepted) if d >= i and a >= i),
             sum(1 for d in st.drafted if d >= i)] for i in range(1, k_max + 1)]


def pooled(results: dict, outtype: str, k: int) -> dict:
    """Acceptance per position, tau and speeds pooled over the prompts."""
    rows = results[outtype]["rows"]
    counts = np.zeros((k, 2))
    gen = passes = 0
    for r in rows:
        d = r["drafts"][k]
        for i, (a, n) in enumerate(d["acc_counts"]):
            counts[i] += (a, n)
        gen += r["n_generated"] - 1
        passes += d["passes"]
    return {
        "acc": [a / n if n else 0.0 for a, n in counts],
        "tau": gen / passes if passes else 0.0,
        "tok_s": float(np.mean([r["drafts"][k]["tok_s"] for r in rows])),
        "plain_tok_s": float(np.mean([r["plain_tok_s"] for r in rows])),
        "ms_draft": float(np.mean([r["drafts"][k]["ms_draft"] for r in rows])),
        "plain_ms_pass": float(np.mean([r["plain_ms_pass"] for r in rows])),
    }


# ---------------------------------------------------------------------------- card

def _data_lines(m: dict) -> list[str]:
    """The card's description of the corpus (``meta["corpus"]``, :mod:`gguf_mtp.train.corpus`)."""
    c, toks = m["corpus"], m["tokens_per_source"]
    src = c["sources"]
    site = ", ".join(f"{k} {v}" for k, v in c["site_packages"].items())
    return [
        f"- data: {m['n_docs']:,} documents, {m['n_tokens']:,} Qwen3.5 tokens, shuffled (seed {m['seed']}), "
        f"last {m['val_fraction']:.0%} held out:",
        f"  - code: {src['stdlib']['docs']} `*.py` files of the Python {m['python']} standard library (test "
        f"suites, idlelib, lib2to3, encodings left out), {toks['stdlib']:,} tokens; "
        f"{src['site-packages']['docs']} `*.py` files of site-packages ({site}), {toks['site-packages']:,} tokens",
        f"  - English prose: {src['man-pages']['docs']:,} pages of the Linux man-pages project (sections 2, 3, 4, "
        f"5, 7; Debian's `manpages`, `manpages-dev`) rendered to plain text by `gguf_mtp.train.corpus`, "
        f"{toks['man-pages']:,} tokens; plus the docstrings and comments of the code",
        f"  - corpus SHA-256 `{c['sha256'][:16]}…` (over every document's path and text)",
    ]


def write_card(path: Path, meta: dict, results: dict, drafts, n_predict: int, threads: int,
               artifact: Path) -> None:
    m, c = meta, meta["config"]
    arch = ("all full attention" if c["all_full_attention"] else
            f"hybrid: {', '.join(m['layer_types'])}")
    lines = [
        "# The default model",
        "",
        "gguf-mtp's embedded default model (`gguf_mtp/data/default_model.npz`, expanded by",
        "`gguf_mtp.models.default`): a small Qwen3.5 (`Qwen3_5ForCausalLM`) with one MTP layer,",
        "trunk and MTP head co-trained from scratch so that the head's drafts are really accepted.",
        "Written by `tools/train_default_model.py`; every number below comes from that run.",
        "",
        "## Model",
        "",
        f"- hidden {c['hidden_size']}, {c['num_layers']} layers ({arch}), MLP {c['intermediate_size']}",
        f"- attention: {c['num_heads']} heads / {c['num_kv_heads']} KV heads of dim {c['head_dim']}, "
        f"output gate, partial RoPE 0.25 (M-RoPE sections {m['mrope_section']})",
        f"- Gated DeltaNet: {c['linear_num_key_heads']} key / {c['linear_num_value_heads']} value heads of "
        f"dim {c['linear_key_head_dim']}, conv kernel 4 (transformers' torch fallback in training)",
        "- 1 MTP layer (`mtp.*`: enorm, hnorm, fc, one full-attention decoder layer, shared final norm)",
        f"- tied embeddings; {m['n_used']:,} of the 151,936 token ids have trained rows, all others are "
        "exactly zero (not stored)",
        f"- parameters: {m['n_params']:,} trained ({m['n_params_mtp']:,} in the MTP block); "
        f"artifact {artifact.stat().st_size / 1e6:.2f} MB (float16)",
        "",
        "## Data and training",
        "",
        *_data_lines(m),
        f"- the {m['n_used']:,} most frequent ids cover {m['coverage']:.1%} of the training tokens; the rest "
        "train as the exact full-vocabulary zero-row bucket",
        f"- objective L = L_next + {m['mtp_weight']} * L_MTP (MTP row p: emb(x_p) with trunk post-norm h_(p-1) "
        "predicts x_(p+1)); exact full-vocabulary softmax",
        f"- {m['steps']} steps x {m['batch']} x {m['seq_len']} tokens = {m['tokens_seen']:,} tokens seen "
        f"({m['tokens_seen'] / m['n_train_tokens']:.2f} epochs); AdamW lr {m['lr']} "
        f"(warmup {m['warmup']}, cosine to {m['lr_floor']:.0%}), weight decay {m['weight_decay']}, seed {m['seed']}",
        f"- {m['train_s'] / 60:.1f} min on {m['threads']} CPU threads (torch {m['torch']})",
        "",
        "| loss (nats, full vocab) | next token | MTP (token after next) |",
        "|---|---|---|",
        f"| train, last 50 steps | {m['train_next']:.3f} | {m['train_mtp']:.3f} |",
        f"| validation (float32) | {m['val_next_f32']:.3f} | {m['val_mtp_f32']:.3f} |",
        f"| validation (float16 artifact) | {m['val_next']:.3f} | {m['val_mtp']:.3f} |",
        "",
        f"Teacher-forced on the held-out text, the MTP head's argmax equals the trunk's greedy "
        f"choice for the same token in {m['val_agreement']:.1%} of positions (the draft-1 acceptance "
        "it would get on real text, as opposed to on the model's own greedy output below).",
        "",
        "## MTP drafting in llama.cpp",
        "",
        f"Greedy, {n_predict} tokens per prompt, {threads} threads, `gguf_mtp.runtime.generate` on "
        f"`DEFAULT_PROMPTS` ({len(dm.DEFAULT_PROMPTS)} prompts); acceptance pooled over the prompts. "
        "MTP output was identical to plain decoding in every run. Speeds are from a small shared "
        "machine and vary from run to run. The draft step and plain pass columns say what drafting costs "
        "against what it saves on this model; `gguf-mtp bench` has the full sweep.",
        "",
        "Position-1 acceptance depends on the draft length: greedy output of so small a model soon falls "
        "into short loops, and how far each pass advances decides which positions of a loop get drafted "
        "(a PyTorch replay of the draft-1 loop with the reference MTP reproduces llama.cpp's figure). "
        "The teacher-forced agreement above does not depend on it.",
        "",
    ]
    for outtype, res in results.items():
        lines += [f"### {outtype} ({res['gguf_bytes'] / 1e6:.1f} MB GGUF)", "",
                  "| draft | acceptance per position | tau (tok/pass) | tok/s mtp | tok/s plain "
                  "| ms per draft step | ms per plain target pass |",
                  "|---|---|---|---|---|---|---|"]
        for k in drafts:
            p = pooled(results, outtype, k)
            acc = " / ".join(f"{a:.2f}" for a in p["acc"])
            lines.append(f"| {k} | {acc} | {p['tau']:.2f} | {p['tok_s']:.0f} | {p['plain_tok_s']:.0f} "
                         f"| {p['ms_draft']:.1f} | {p['plain_ms_pass']:.1f} |")
        lines.append("")
    first = next(iter(results.values()))["rows"]
    lines += ["## Greedy samples (f32)", ""]
    for r in first:
        lines += ["```", r["prompt"] + r["text"], "```", ""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, default=192)
    g.add_argument("--layers", type=int, default=6)
    g.add_argument("--full-attention-interval", type=int, default=3)
    g.add_argument("--all-full-attention", action="store_true")
    g.add_argument("--intermediate", type=int, default=576)
    g.add_argument("--heads", type=int, default=6)
    g.add_argument("--kv-heads", type=int, default=2)
    g.add_argument("--head-dim", type=int, default=32)
    g.add_argument("--linear-head-dim", type=int, default=32)
    g.add_argument("--linear-key-heads", type=int, default=3)
    g.add_argument("--linear-value-heads", type=int, default=6)
    g.add_argument("--vocab", type=int, default=8192,
                   help="compact vocabulary: the K-1 most frequent ids get rows, plus the zero-row bucket")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=2000)
    g.add_argument("--batch", type=int, default=8)
    g.add_argument("--seq-len", type=int, default=256)
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--lr-floor", type=float, default=0.1, help="final lr as a fraction of the peak")
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--mtp-weight", type=float, default=0.3, help="lambda in L_next + lambda * L_MTP")
    g.add_argument("--val-fraction", type=float, default=0.01)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=2)
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=dm.ARTIFACT)
    g.add_argument("--card", type=Path, default=dm.CARD)
    g.add_argument("--no-measure", action="store_true", help="skip the llama.cpp measurement and the card")
    g.add_argument("--measure-only", action="store_true", help="measure --out and rewrite --card, no training")
    g.add_argument("--n-predict", type=int, default=64)
    g.add_argument("--drafts", type=int, nargs="+", default=[1, 2, 3])
    g.add_argument("--outtypes", nargs="+", default=["f32", "q8_0"])
    g.add_argument("--cache", type=Path, default=None, help="where to materialize/convert (default: a temp dir)")
    return p.parse_args(argv)


def train(args) -> dict:
    torch.set_num_threads(args.threads)
    vocab = qwen35_vocab_info()
    eos = vocab["eos_id"]

    t0 = time.perf_counter()
    docs, corpus_record = load_corpus(args.seed)
    stream, per_source = tokenize_corpus(docs, eos)
    n_val = int(len(stream) * args.val_fraction)
    train_ids, val_ids = stream[: len(stream) - n_val], stream[len(stream) - n_val:]
    used = choose_vocab(train_ids, args.vocab - 1, eos) if args.vocab else np.unique(train_ids)
    rare = len(used)
    to_compact = np.full(vocab["n_tokens"], rare, dtype=np.int64)
    to_compact[used] = np.arange(rare)
    train_c = torch.from_numpy(to_compact[train_ids])
    val_c = torch.from_numpy(to_compact[val_ids])
    coverage = float((train_c != rare).float().mean())
    print(f"data: {len(docs)} documents {per_source}, {len(stream):,} tokens ({len(train_ids):,} train), "
          f"{rare:,} used ids cover {coverage:.1%} [{time.perf_counter() - t0:.0f}s]", file=sys.stderr)

    kwargs, compact = model_config(args, rare + 1, vocab)
    trunk, mtp = build_model(compact, args.seed)
    emb = trunk.model.embed_tokens.weight
    with torch.no_grad():
        emb[rare].zero_()
    # the rare row stands for the zero rows of the full vocabulary: keep it zero
    emb.register_hook(lambda g: g.index_fill(0, torch.tensor([rare]), 0.0))
    obj = Objective(rare + 1, vocab["n_tokens"])
    n_params = sum(p.numel() for p in {id(p): p for m in (trunk, mtp) for p in m.parameters()}.values())
    n_params -= emb.shape[1]  # the pinned rare row
    n_params_mtp = sum(v.numel() for v in mtp.mtp_state_dict().values())

    opt = torch.optim.AdamW(param_groups([trunk, mtp], args.weight_decay), lr=args.lr,
                            betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    hist = []
    t_train = time.perf_counter()
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for step in bar:
        lr = lr_at(step, args.steps, args.lr, args.warmup, args.lr_floor)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train_c) - args.seq_len, (args.batch,), generator=gen)
        x = windows(train_c, starts, args.seq_len)
        l_next, l_mtp = obj.losses(trunk, mtp, x)
        loss = l_next + args.mtp_weight * l_mtp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        hist.append((l_next.item(), l_mtp.item()))
        if step % 10 == 0 or step == args.steps - 1:
            bar.set_postfix(next=f"{l_next.item():.3f}", mtp=f"{l_mtp.item():.3f}", lr=f"{lr:.1e}")
    train_s = time.perf_counter() - t_train

    val_f32 = evaluate(obj, trunk, mtp, val_c, args.seq_len, args.batch, 16)
    tensors = export_state(trunk, mtp, used)
    load_exported(trunk, mtp, tensors)  # evaluate what is actually shipped
    val_f16 = evaluate(obj, trunk, mtp, val_c, args.seq_len, args.batch, 16)
    last = np.array(hist[-50:]).mean(axis=0)
    print(f"trained {args.steps} steps in {train_s / 60:.1f} min: train next {last[0]:.3f} mtp {last[1]:.3f}; "
          f"val next {val_f16[0]:.3f} mtp {val_f16[1]:.3f} (f32 {val_f32[0]:.3f} / {val_f32[1]:.3f}); "
          f"teacher-forced MTP/trunk argmax agreement {val_f16[2]:.3f}",
          file=sys.stderr)

    meta = {
        "config": kwargs,
        "layer_types": compact["layer_types"],
        "mrope_section": compact["rope_parameters"]["mrope_section"],
        "n_vocab": int(vocab["n_tokens"]), "n_used": int(rare), "coverage": coverage,
        "n_params": int(n_params), "n_params_mtp": int(n_params_mtp),
        "python": platform.python_version(), "torch": torch.__version__,
        "corpus": corpus_record, "tokens_per_source": per_source, "n_docs": len(docs),
        "n_tokens": int(len(stream)),
        "n_train_tokens": int(len(train_ids)), "val_fraction": args.val_fraction,
        "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len,
        "tokens_seen": args.steps * args.batch * args.seq_len,
        "lr": args.lr, "lr_floor": args.lr_floor, "warmup": args.warmup,
        "weight_decay": args.weight_decay, "mtp_weight": args.mtp_weight, "seed": args.seed,
        "threads": args.threads, "train_s": train_s,
        "train_next": float(last[0]), "train_mtp": float(last[1]),
        "val_next_f32": float(val_f32[0]), "val_mtp_f32": float(val_f32[1]),
        "val_next": float(val_f16[0]), "val_mtp": float(val_f16[1]),
        "val_agreement": float(val_f16[2]),
        "loss_curve": [[round(a, 4), round(b, 4)] for a, b in hist[::10]],
    }
    dm.write_artifact(args.out, used, tensors, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure_only:
        meta = dm.load_artifact(args.out).meta
    else:
        meta = train(args)
    if args.no_measure:
        return 0
    with tempfile.TemporaryDirectory(prefix="default-model-") as tmp:
        cache = args.cache or Path(tmp)
        results = measure(args.out, args.outtypes, args.drafts, args.n_predict, args.threads, cache)
    for outtype in results:
        for k in args.drafts:
            p = pooled(results, outtype, k)
            print(f"{outtype} draft {k}: acceptance {' / '.join(f'{a:.2f}' for a in p['acc'])}  "
                  f"tau {p['tau']:.2f}  {p['tok_s']:.0f} tok/s (plain {p['plain_tok_s']:.0f}); "
                  f"{p['ms_draft']:.1f} ms per draft step, {p['plain_ms_pass']:.1f} ms per plain pass", file=sys.stderr)
    args.card.parent.mkdir(parents=True, exist_ok=True)
    write_card(args.card, meta, results, args.drafts, args.n_predict, args.threads, args.out)
    print(f"wrote {args.card}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
