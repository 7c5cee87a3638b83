"""Fine-tune the MTP heads of a target GGUF on self-distilled data.

Two methods share one loop (Hugging Face accelerate: the same code runs on a
CPU and on several GPUs, ``accelerate launch -m gguf_mtp.train ...``):

``fastmtp``
    One MTP layer shared across K recursive steps. Step 1 pairs the target's
    post-norm hidden state h_t with the embedding of token t+1 and predicts
    token t+2; step k pairs the previous step's output hidden state (the
    shared-head norm's output, what the runtime feeds the next draft step) with
    the embedding of token t+k and predicts token t+k+1. The loss is
    sum_k alpha_k CE_k with alpha_k = beta^(k-1) / sum_j beta^(j-1)
    (beta = 0.6, K = 3: 0.51, 0.31, 0.18). With several MTP layers, step k runs
    layer (k-1) mod H, as the runtime's chained drafter does.
``mtp-d``
    The same recursion; each step's loss adds ``kl_weight`` x KL(target || head)
    on the recorded top-k target logits (the target's distribution renormalised
    over its top k, the head's full-vocabulary log-probabilities at those ids).
``eagle``
    The MTP block as an EAGLE drafter (:mod:`gguf_mtp.heads.eagle`): the same
    recursion (step k reads step k-1's predicted feature), and each step's loss
    is CE + ``kl_weight`` x KL + ``feature_weight`` x SmoothL1(predicted
    feature, the target's post-norm hidden state at that position).
``medusa``
    The target GGUF's Medusa heads (``convert --heads medusa``): head k reads
    h_t and predicts token t+k+2; per-head loss CE + ``kl_weight`` x KL to the
    recorded top-k, heads weighted by beta^k normalised
    (:mod:`gguf_mtp.heads.medusa_torch`). ``n_predict`` is not used.

The trunk's embedding and LM head are frozen (shared with the trunk); only the
MTP block trains. ``train_vocab`` N (the MTP methods) trains over a draft
vocabulary: the N most frequent tokens of the data (end-of-generation tokens
always in; the selection of ``gguf-mtp compress-vocab``,
:mod:`gguf_mtp.train.vocab`). The LM head the loss sees is cut to those rows
and the softmax runs over them; positions whose target token is outside the
set drop out of the loss. With a 262k vocabulary (Gemma 3) this is the
difference between a step dominated by the LM head and one that is not; the
head it trains is the one a drafter with the same compressed vocabulary runs. AdamW, linear warmup then cosine decay to ``min_lr_ratio``.
Every ``save_every`` steps a checkpoint (accelerate's ``save_state``: model,
optimizer, scheduler, RNG) goes to ``OUT/checkpoints/step-NNNNNN``; a rerun
with the same OUT resumes from the latest one. ``OUT/train_log.jsonl`` has
one line per step: loss, per-step losses and per-position accuracy (the share
of positions where step k's argmax is the recorded token t+k+1). The trained
heads go to ``OUT/heads.safetensors`` + ``OUT/heads.json``
(:func:`gguf_mtp.heads.mtp.save_heads`), ready for ``gguf-mtp stitch``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .distill import check_shard
from .losses import medusa_losses, mtp_losses, restrict_lm_heads, step_weights  # noqa: F401 (re-exported)

METHODS = ("fastmtp", "mtp-d", "eagle", "medusa")


@dataclass
class FinetuneConfig:
    data: str | list[str]            # directories written by gguf-mtp distill-data (run or text): one or several
    target: str                      # the target GGUF (heads, embedding, LM head are read from it)
    out: str                         # heads directory
    method: str = "fastmtp"          # "fastmtp" or "mtp-d"
    steps: int = 200                 # optimizer steps
    n_predict: int = 3               # K: recursive steps per position
    beta: float = 0.6                # step-weight decay: alpha_k proportional to beta^(k-1)
    kl_weight: float = 1.0           # mtp-d, eagle, medusa: weight of KL(target || head)
    feature_weight: float = 1.0      # eagle: weight of the feature regression (smooth L1)
    batch_size: int = 8              # sequences per step (per process)
    seq_len: int = 128               # window length in tokens
    lr: float = 1e-4
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    response_only: bool = False      # loss only where the predicted token belongs to the response
    #: MTP methods, one shared layer: draft step k's rows attend to the entries the runtime's MTP
    #: cache holds when step k runs (the target's true states, then the chain's earlier steps;
    #: heads.fused.chain_mask), not to step k's rows at earlier positions. Costs K(K+1)/2 layer passes.
    chain_attention: bool = False
    train_vocab: int = 0             # MTP methods: softmax over the N most frequent data tokens only (0: all)
    #: MTP methods: start from the MTP block of this GGUF (a heads file, e.g. a shipped one, or a full
    #: file with the same block) instead of TARGET's: continue a training on more data or steps
    init_heads: str | None = None
    save_every: int = 100
    seed: int = 0
    resume: bool = True
    cpu: bool = False                # force the CPU even if a GPU is there
    mixed_precision: str = "no"      # accelerate's: "no", "fp16", "bf16"
    progress: bool = True

    @property
    def data_dirs(self) -> list[str]:
        return data_dirs(self.data)

    def __post_init__(self):
        if not self.data_dirs:
            raise ValueError("data: give at least one distilled data directory")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.n_predict < 1:
            raise ValueError("n_predict must be >= 1")
        if self.seq_len < self.n_predict + 2:
            raise ValueError(f"seq_len must be >= n_predict + 2 = {self.n_predict + 2}")
        if self.train_vocab < 0:
            raise ValueError("train_vocab must be >= 0")
        if self.train_vocab and self.method == "medusa":
            raise ValueError("train_vocab is implemented for the MTP methods (fastmtp, mtp-d, eagle), not medusa")
        if self.init_heads and self.method == "medusa":
            raise ValueError("init_heads is implemented for the MTP methods (fastmtp, mtp-d, eagle), not medusa")


# -- data ---------------------------------------------------------------------

def data_dirs(data) -> list[str]:
    """One data directory or several, as a list."""
    return [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``seq_len`` tokens of the recorded sequences of one or more
    data directories, read lazily from the shards (one open handle per shard,
    slices only).

    Each window carries ``labels``: the token that should follow each position,
    what the heads learn to predict. Data the target generated (``distill-data
    run``) is its own answer, so the label is the next recorded token. In
    teacher-forced text (``distill-data text``, manifest ``"source": "text"``)
    the next token is the corpus's, so the label is the target's winner at the
    previous position (``topk_indices[p - 1, 0]``)."""

    def __init__(self, data, seq_len: int, min_len: int):
        from .distill import read_manifest
        from .distill_text import SOURCE as TEXT

        dirs = [Path(d) for d in data_dirs(data)]
        self.windows: list[tuple[int, int, int, int]] = []   # shard, lo, hi, response start (abs)
        self.files: list[str] = []
        self.text: list[bool] = []                            # per shard: teacher-forced text
        for d in dirs:
            manifest = read_manifest(d)
            if manifest is None:
                raise FileNotFoundError(f"{d}: no manifest.json (write it with gguf-mtp distill-data)")
            if not manifest["shards"]:
                raise ValueError(f"{d}: no finished shards")
            for e in manifest["shards"]:
                f = str(d / e["file"])
                s = len(self.files)
                self.files.append(f)
                self.text.append(manifest.get("source") == TEXT)
                off, n_prompt = check_shard(f, manifest)
                for i in range(len(off) - 1):
                    a, b = int(off[i]), int(off[i + 1])
                    for lo in range(a, b, seq_len):
                        hi = min(b, lo + seq_len)
                        if hi - lo >= min_len:
                            self.windows.append((s, lo, hi, a + int(n_prompt[i])))
        if not self.windows:
            raise ValueError(f"{', '.join(map(str, dirs))}: no sequence has {min_len} tokens")
        self.seq_len = seq_len
        self._handles: dict[int, object] = {}

    def __len__(self):
        return len(self.windows)

    def _handle(self, s: int):
        from safetensors import safe_open

        if s not in self._handles:
            self._handles[s] = safe_open(self.files[s], framework="np")
        return self._handles[s]

    def __getitem__(self, i):
        s, lo, hi, resp = self.windows[i]
        h = self._handle(s)
        get = lambda name: h.get_slice(name)[lo:hi]  # noqa: E731
        pos = np.arange(lo, hi)
        tokens, topk = get("tokens").astype(np.int64), get("topk_indices").astype(np.int64)
        if self.text[s]:
            labels = tokens.copy()      # position lo's label is never used (a window's first target is lo + 2)
            labels[1:] = topk[:-1, 0]
        else:
            labels = tokens
        return {"tokens": tokens, "labels": labels, "hidden": get("hidden").astype(np.float32),
                "topk_values": get("topk_values").astype(np.float32), "topk_indices": topk,
                "response": pos >= resp}

    def __getstate__(self):  # DataLoader workers open their own handles
        d = dict(self.__dict__)
        d["_handles"] = {}
        return d


def collate(items: list[dict], pad_to: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad to the longest window (at least ``pad_to``); ``valid`` marks real rows."""
    n = max(pad_to, max(len(it["tokens"]) for it in items))
    out = {}
    for key in ("tokens", "labels", "hidden", "topk_values", "topk_indices", "response"):
        arrs = []
        for it in items:
            a = it[key]
            pad = [(0, n - len(a))] + [(0, 0)] * (a.ndim - 1)
            arrs.append(np.pad(a, pad))
        out[key] = torch.from_numpy(np.stack(arrs))
    out["valid"] = torch.from_numpy(np.stack([np.arange(n) < len(it["tokens"]) for it in items]))
    return out


class EpochSampler(torch.utils.data.Sampler):
    """A fresh permutation per epoch, seeded by (seed, epoch): resumable."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def train_vocab_ids(data, target: str | Path, size: int, n_vocab: int) -> np.ndarray:
    """The ``size`` most frequent tokens of DATA (one directory or several),
    TARGET's end-of-generation tokens included."""
    from ..gguf.writer import SourceFile
    from .vocab import _eog_ids, select_draft_vocab, token_counts

    counts = sum(token_counts(d, n_vocab) for d in data_dirs(data))
    return select_draft_vocab(counts, min(size, n_vocab), _eog_ids(SourceFile.open(target)))


def lr_lambda(cfg: FinetuneConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def _latest_checkpoint(out: Path) -> Path | None:
    ck = sorted((out / "checkpoints").glob("step-*"))
    ck = [c for c in ck if (c / "trainer_state.json").is_file()]
    return ck[-1] if ck else None


# -- the loop -----------------------------------------------------------------

@dataclass
class FinetuneResult:
    out: Path
    steps: int
    resumed_from: int
    last: dict


def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune; an --out directory this call created is removed again when
    it fails before writing anything into it."""
    out = Path(cfg.out)
    created = not out.exists()
    try:
        return _finetune(cfg)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _finetune(cfg: FinetuneConfig) -> FinetuneResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ..heads.mtp import load_heads, save_heads

    from .distill import check_data_for

    for d in cfg.data_dirs:                  # before anything is written: data of another model trains nothing
        check_data_for(d, cfg.target)
    from accelerate.utils import DistributedDataParallelKwargs

    # chained MTP layers (K < H) leave layers without a gradient in a step: DDP must be told
    unused = cfg.method != "medusa" and _n_mtp_layers(cfg.target) > cfg.n_predict
    acc = Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)])
    set_seed(cfg.seed)
    out = Path(cfg.out)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    medusa = cfg.method == "medusa"
    if medusa:
        from ..heads.medusa_torch import load_medusa, save_medusa

        module = load_medusa(cfg.target).train()
        loss_fn, min_len = medusa_losses, module.n_heads + 2
    else:
        heads = load_heads(cfg.target)
        module = heads.module.train()
        if cfg.init_heads:
            from ..heads.mtp import HeadsError, read_state

            if not hasattr(module, "load_mtp_state"):
                raise HeadsError(f"init_heads: not implemented for {heads.layout.arch} heads")
            module.load_mtp_state(read_state(cfg.init_heads, heads.layout))
        loss_fn, min_len = mtp_losses, cfg.n_predict + 2
        if cfg.train_vocab:
            import functools

            n_vocab = int(heads.layout.config.get("vocab_size") or 0) or None
            if n_vocab is None:
                n_vocab = next(m.lm_head.weight.shape[0] for m in module.modules()
                               if isinstance(getattr(m, "lm_head", None), torch.nn.Linear))
            remap = restrict_lm_heads(module, train_vocab_ids(cfg.data_dirs, cfg.target, cfg.train_vocab, n_vocab))
            loss_fn = functools.partial(mtp_losses, remap=remap)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))

    import functools

    data = WindowDataset(cfg.data_dirs, cfg.seq_len, min_len=min_len)
    sampler = EpochSampler(len(data), cfg.seed)
    # several processes: every step's global batch is the one-process batch of batch_size x processes
    # (accelerate deals consecutive batches to the processes), and the loss means are taken over the
    # global token counts, so the step equals one process's step on the whole batch. Windows are
    # padded to seq_len so that every process runs the same recursion steps (and collectives).
    distributed = acc.num_processes > 1
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=sampler,
                                         collate_fn=functools.partial(collate, pad_to=cfg.seq_len if distributed
                                                                      else 0),
                                         drop_last=len(data) >= cfg.batch_size * acc.num_processes)
    if distributed:
        count = lambda n: acc.reduce(n.detach().float(), "sum") / acc.num_processes  # noqa: E731
        loss_fn = functools.partial(loss_fn, count=count)
    module, opt, loader = acc.prepare(module, opt, loader)
    acc.register_for_checkpointing(sched)

    start = 0
    ckpt = _latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        keys = ("method", "n_predict", "beta", "kl_weight", "feature_weight", "batch_size", "seq_len", "seed",
                "response_only", "train_vocab", "chain_attention")
        differ = [k for k in keys if saved["config"].get(k, getattr(FinetuneConfig, k, None)) != getattr(cfg, k)]
        if differ:
            raise ValueError(f"{ckpt} was written with different settings ({', '.join(differ)}); "
                             "use another --out or --no-resume")
        acc.load_state(str(ckpt))
        start = saved["step"]
    log_path = out / "train_log.jsonl"
    if acc.is_main_process and log_path.exists():
        # a run killed after its last checkpoint logged steps it will redo: keep the log up to the checkpoint
        keep = [x for x in log_path.read_text().splitlines() if _logged_step(x) <= start] if start else []
        log_path.write_text("".join(x + "\n" for x in keep))

    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("not enough data for one batch")
    bar = None
    if cfg.progress and acc.is_local_main_process:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, unit="step", desc=f"Finetuning ({cfg.method})")

    step, last = start, {}
    epoch, skip = divmod(start, per_epoch)
    while step < cfg.steps:
        sampler.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        it = acc.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in it:
            if step >= cfg.steps:
                break
            with acc.autocast():
                loss, m = loss_fn(module, batch, cfg)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            if distributed:     # the global batch's numbers (each process's are a share of them)
                loss_v = float(acc.reduce(loss.detach(), "mean"))
                vec = acc.reduce(torch.tensor(m["ce"] + m["acc"] + m["kl"] + m.get("feat", []),
                                              dtype=torch.float64, device=loss.device), "mean").tolist()
                nk = len(m["ce"])
                m = {**m, "ce": vec[:nk], "acc": vec[nk:2 * nk], "kl": vec[2 * nk:2 * nk + len(m["kl"])],
                     "n": [int(x) for x in acc.reduce(torch.tensor(m["n"], device=loss.device), "sum").tolist()]}
                if m.get("feat"):
                    m["feat"] = vec[2 * nk + len(m["kl"]):]
            else:
                loss_v = float(loss.detach())
            last = {"step": step, "loss": loss_v, "lr": sched.get_last_lr()[0],
                    "ce": m["ce"], "acc": m["acc"], "n": m["n"]}
            if m["kl"]:
                last["kl"] = m["kl"]
            if m.get("feat"):
                last["feat"] = m["feat"]
            if acc.is_main_process:
                with open(log_path, "a") as f:
                    f.write(json.dumps(last) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc="/".join(f"{a:.2f}" for a in m["acc"]))
            if cfg.save_every and (step % cfg.save_every == 0 or step == cfg.steps):
                _save_checkpoint(acc, out, step, cfg)
        epoch += 1
    if bar is not None:
        bar.close()

    acc.wait_for_everyone()
    if acc.is_main_process:
        model = acc.unwrap_model(module)
        extra = {"training": {**asdict(cfg), "steps_done": step}, "last_step": last}
        if medusa:
            save_medusa(out, model, cfg.target, extra=extra)
        else:
            state = {f"mtp.{k}": v for k, v in model.mtp_state_dict().items()}
            save_heads(out, state, heads.layout, cfg.target, extra=extra)
    return FinetuneResult(out, step, start, last)


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62          # a torn last line: dropped


def _n_mtp_layers(target: str | Path) -> int:
    from ..gguf.constants import Keys, arch_key
    from ..gguf.inspect import read_header

    kv = read_header(target).kv
    return int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, kv.get("general.architecture", "")), 0) or 0)


def _save_checkpoint(acc, out: Path, step: int, cfg: FinetuneConfig) -> None:
    d = out / "checkpoints" / f"step-{step:06d}"
    acc.save_state(str(d))
    if acc.is_main_process:
        (d / "trainer_state.json").write_text(json.dumps({"step": step, "config": asdict(cfg)}, indent=2))
        # keep the two newest checkpoints
        for old in sorted((out / "checkpoints").glob("step-*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


__all__ = [
    "METHODS",
    "FinetuneConfig",
    "FinetuneResult",
    "WindowDataset",
    "finetune",
    "mtp_losses",
    "step_weights",
]
