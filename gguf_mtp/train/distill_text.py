"""Teacher-forced distillation data: the target reads local text, and records
what it would say at every position.

:func:`gguf_mtp.train.distill.distill` has the target answer prompts, one
token at a time: ~80 recorded tokens a second on SmolLM2-135M (2 threads), so
its 125k tokens took 26 minutes. Heads trained for 900 steps on them reach
0.90 / 0.85 / 0.82 accuracy at positions 1-3 on their own data, and 0.40 /
0.11 / 0.06 acceptance on held-out prompts: they learn the data, not the
target. Reading text is one batched pass per window (~1,000 tokens a second
on the same machine), so a million tokens of other kinds of text cost 21
minutes.

A window is ``window`` tokens of one document of the local corpus
(:mod:`gguf_mtp.train.corpus`: the Python standard library, pure-Python
packages, the Linux man-pages, the system C headers, in the shares of
``corpus.TEXT_MIX``), starting at a line start chosen at random, the
target's BOS first. The target runs over it in one prompt pass (normal
kernels: training data need not be batch-invariant), and each position
records the same arrays as ``distill-data`` (tokens, the hidden row the MTP
head reads, the top-k logits), with ``n_prompt = 0``.

The text is not the target's: the token after position p is the corpus's,
and the head must learn the target's choice there, not the text's. The
manifest says ``"source": "text"``, and training takes the label of position
p + 1 from the target's own winner at p (``topk_indices[p, 0]``), as
:class:`gguf_mtp.train.finetune.WindowDataset` does. On greedy
distilled data that is the recorded token anyway (checked on one shard of the SmolLM2 mix:
all 11,103 response tokens equal the previous position's winner).

Shard ``s`` holds windows ``[s*N, (s+1)*N)`` of a plan fixed by the seed and
the corpus, so a rerun resumes at the first unfinished shard.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .distill import (
    DistillResult,
    finish_manifest,
    open_manifest,
    record_sequence,
    require_mtp_layers,
    write_shard,
)

#: manifest "source" of teacher-forced data (distill-data's own data has none: "generate")
SOURCE = "text"


@dataclass
class TextDistillConfig:
    target: str                      # the target GGUF (with MTP layers: they make the runtime export hidden rows)
    out: str                         # output directory
    n_windows: int = 4000            # windows to record
    window: int = 256                # tokens per window, BOS included
    seed: int = 0                    # the plan: which document and where in it, per window
    topk_logits: int = 32
    shard_size: int = 64             # windows per shard
    hidden_dtype: str = "f16"
    n_threads: int | None = None
    progress: bool = True

    def identity(self) -> dict:
        keys = ("n_windows", "window", "seed", "topk_logits", "shard_size", "hidden_dtype")
        return {k: getattr(self, k) for k in keys}


#: characters of a document read for one window: enough for ``window`` tokens of code or prose
_CHARS_PER_TOKEN = 6
#: shorter documents are left out of the plan
_MIN_CHARS = 200


def plan_windows(sources, mix: dict[str, float], n: int, seed: int, window: int) -> list[tuple[str, str]]:
    """``n`` (document path, text) excerpts: each source gives its share of
    ``mix`` (renormalised over the sources present), documents of at least
    200 characters at random and an excerpt from a random line start of a long one. Deterministic in the
    sources and the seed."""
    rng = random.Random(seed)
    # empty files (package __init__.py) and stubs give no window worth a pass
    docs = {s.name: [d for d in s.docs if len(d[1].strip()) >= _MIN_CHARS] for s in sources}
    present = [s for s in sources if docs[s.name] and mix.get(s.name, 0) > 0]
    if not present:
        raise ValueError("no local text for the teacher-forced mix (corpus.TEXT_MIX)")
    total = sum(mix[s.name] for s in present)
    counts = [round(n * mix[s.name] / total) for s in present]
    counts[0] += n - sum(counts)
    span = window * _CHARS_PER_TOKEN
    plan = []
    for s, k in zip(present, counts):
        pool = docs[s.name]
        for _ in range(k):
            path, text = pool[rng.randrange(len(pool))]
            if len(text) > span:
                a = text.rfind("\n", 0, rng.randrange(len(text) - span // 2)) + 1
                text = text[a:a + span]
            plan.append((path, text))
    rng.shuffle(plan)
    return plan


def distill_text(cfg: TextDistillConfig, sources=None) -> DistillResult:
    """Record ``cfg.n_windows`` windows of local text (``sources``: a list of
    :class:`gguf_mtp.train.corpus.Source`, default :func:`corpus.text_mix_sources`);
    resumes a directory written with the same settings and corpus."""
    from ..runtime import Engine, RuntimeOptions
    from . import corpus

    if cfg.hidden_dtype not in ("f16", "f32"):
        raise ValueError(f"hidden_dtype must be 'f16' or 'f32', got {cfg.hidden_dtype!r}")
    if cfg.n_windows < 1 or cfg.window < 8 or cfg.topk_logits < 1 or cfg.shard_size < 1:
        raise ValueError("n_windows and topk_logits, shard_size must be >= 1, window >= 8")
    header = require_mtp_layers(cfg.target)
    versions = {}
    if sources is None:
        sources, versions = corpus.text_mix_sources()
    plan = plan_windows(sources, corpus.TEXT_MIX, cfg.n_windows, cfg.seed, cfg.window)
    plan_sha = hashlib.sha256("\0".join(p + "\0" + t for p, t in plan).encode("utf-8", "replace")).hexdigest()[:32]
    identity = {**cfg.identity(), "source": SOURCE, "plan_sha256": plan_sha}
    out = Path(cfg.out)
    manifest, done = open_manifest(out, cfg.target, identity,
                                   lambda first: len(range(first, min(len(plan), first + cfg.shard_size))), header)
    manifest["source"] = SOURCE
    manifest["corpus"] = {"mix": corpus.TEXT_MIX, "sources": {s.name: {"docs": len(s.docs), "chars": s.n_chars}
                                                                for s in sources}, "site_packages": versions}
    n_shards = -(-len(plan) // cfg.shard_size)
    todo = [s for s in range(n_shards) if f"shard-{s:05d}.safetensors" not in done]
    hidden_dtype = np.float16 if cfg.hidden_dtype == "f16" else np.float32
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - sum(min(cfg.shard_size, len(plan) - s * cfg.shard_size)
                                                            for s in todo), unit="window", desc="Reading text")
    written = []
    opts = RuntimeOptions(n_ctx=max(512, cfg.window), n_threads=cfg.n_threads, n_batch=max(512, cfg.window))
    with Engine(cfg.target, opts) as eng:
        manifest.update(n_embd=eng.n_embd, n_vocab=eng.n_vocab, arch=eng.meta("general.architecture"))
        bos = eng.tokenize("", add_special=True)
        for s in todo:
            seqs = []
            for wi in range(s * cfg.shard_size, min(len(plan), (s + 1) * cfg.shard_size)):
                toks = (bos + eng.tokenize(plan[wi][1], add_special=False))[:cfg.window]
                seq = record_sequence(eng, toks, cfg.topk_logits, prefill=True)
                seq.update(n_prompt=0, prompt_index=wi)
                seqs.append(seq)
                if bar is not None:
                    bar.update(1)
            written.append(write_shard(out, manifest, s, s * cfg.shard_size, seqs, hidden_dtype, n_shards,
                                       len(plan)))
    if bar is not None:
        bar.close()
    if not todo:
        out.mkdir(parents=True, exist_ok=True)
        finish_manifest(out, manifest, n_shards, len(plan))
    return DistillResult(out, sum(e["n_sequences"] for e in manifest["shards"]),
                         sum(e["n_tokens"] for e in manifest["shards"]), written, n_shards - len(todo))


__all__ = ["SOURCE", "TextDistillConfig", "distill_text", "plan_windows"]
