"""Self-distillation data: the target GGUF answers a prompt set itself.

For each prompt the target generates a response through
:mod:`gguf_mtp.runtime` (greedy or sampled, at whatever quantization the GGUF
has), then one more target pass over prompt + response records, for every
position p of the sequence,

* ``tokens[p]``: the token at p;
* ``hidden[p]``: the target's hidden state at p after its final norm
  (``Engine.target_hidden``: exactly what the MTP heads consume);
* ``topk_values[p]`` / ``topk_indices[p]``: the target's ``k`` largest logits
  at p (the distribution of token p + 1), values descending.

Output directory::

    manifest.json            the run's settings, the target's identity, one entry per finished shard
    shard-00000.safetensors  sequences of prompts [0, N), concatenated along the token axis:
                             tokens [T] int32, hidden [T, H], topk_values [T, k], topk_indices [T, k] int32,
                             offsets [n+1] int64 (sequence i is rows offsets[i]:offsets[i+1]),
                             n_prompt [n] int32 (prompt tokens at the start of each sequence),
                             prompt_index [n] int32 (index into the prompt list)
    shard-00001.safetensors  ...

Shard ``s`` always holds prompts ``[s*N, (s+1)*N)``, so a restarted run skips
the shards the manifest lists and regenerates only the unfinished one; a shard
is written to a temporary file and renamed, then the manifest is rewritten
(also atomically). At most one shard's sequences are held in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
#: shard file names (a manifest never points outside its directory)
_SHARD = re.compile(r"shard-\d{5}\.safetensors")
FORMAT = "gguf-mtp-distill/1"


@dataclass
class DistillConfig:
    target: str                      # the target GGUF
    prompts: str                     # a prompt file or directory (see gguf_mtp.train.prompts)
    out: str                         # output directory
    max_tokens: int = 128            # response tokens per prompt
    temperature: float = 0.0         # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0                    # sampling seed (prompt i uses seed + i)
    topk_logits: int = 32            # target logits kept per position
    shard_size: int = 64             # sequences per shard
    max_prompts: int | None = None   # use the first N prompts only
    hidden_dtype: str = "f16"        # "f16" or "f32"
    n_ctx: int = 2048
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    add_special: bool = True
    progress: bool = True
    #: (i, n): distill only shards s with s % n == i, a deterministic 1/n of the
    #: prompts (other processes or machines take the rest; :func:`merge` joins them)
    part: tuple[int, int] | None = None

    def identity(self) -> dict:
        """The settings that must match for a resumed run to continue a directory."""
        keys = ("max_tokens", "temperature", "top_p", "top_k", "seed", "topk_logits", "shard_size",
                "hidden_dtype", "add_special", "n_ctx")
        return {k: getattr(self, k) for k in keys}


def require_mtp_layers(target: str | Path):
    """TARGET's header, after checking it has MTP layers: the runtime exports
    the hidden rows the heads read only while an MTP context is attached."""
    from ..gguf.constants import Keys, arch_key
    from ..gguf.inspect import read_header

    header = read_header(target)
    arch = header.kv.get("general.architecture", "?")
    if not int(header.kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0) or 0):
        raise ValueError(f"{target}: has no MTP layers; distillation records the hidden states MTP heads "
                         "read, so give it a file with heads (gguf-mtp retrofit, or graft initial heads first)")
    return header


def open_manifest(out: Path, target: str | Path, identity: dict, expected, header=None) -> tuple[dict, dict]:
    """The manifest of OUT to continue (a new one if there is none) and its
    finished shards (file name -> entry). A directory written from another
    target, format or ``identity`` (the settings that shape the data) is an
    error. A shard counts as done if its file is there and it holds every
    sequence it should (``expected(first)`` for the shard starting at sequence
    ``first``: a last shard written for fewer is redone)."""
    from ..gguf.inspect import model_fingerprint

    fingerprint = file_fingerprint(target)
    manifest = read_manifest(out)
    if manifest is not None:
        problems = []
        if manifest.get("format") != FORMAT:
            problems.append(f"format {manifest.get('format')!r}")
        if manifest.get("target") != fingerprint:
            problems.append("a different target GGUF")
        if manifest.get("settings") != identity:
            old = manifest.get("settings") or {}
            diff = sorted(k for k in {*old, *identity} if old.get(k) != identity.get(k))
            problems.append("different settings (" + ", ".join(
                f"{k}: {old.get(k)!r} then, {identity.get(k)!r} now" for k in diff) + ")")
        if problems:
            raise ValueError(f"{out}: holds data made with " + "; ".join(problems)
                             + " — use another --out directory")
    else:
        manifest = {"format": FORMAT, "target": fingerprint, "settings": identity, "shards": []}
    manifest["model"] = model_fingerprint(target, header)
    done = {e["file"]: e for e in manifest["shards"] if (Path(out) / e["file"]).is_file()
            and e["n_sequences"] == expected(e["first_prompt"])}
    manifest["shards"] = sorted(done.values(), key=lambda e: e["file"])
    return manifest, done


def write_shard(out: Path, manifest: dict, s: int, first: int, seqs: list[dict], hidden_dtype,
                n_shards: int, n_items: int) -> str:
    """Write shard ``s`` (sequences ``first``...), then the manifest that lists it; its name."""
    name = f"shard-{s:05d}.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    n_tok = _save_shard(out / name, seqs, hidden_dtype)
    manifest["shards"] = [e for e in manifest["shards"] if e["file"] != name]
    manifest["shards"].append({"file": name, "first_prompt": first, "n_sequences": len(seqs), "n_tokens": n_tok})
    finish_manifest(out, manifest, n_shards, n_items)
    return name


def finish_manifest(out: Path, manifest: dict, n_shards: int, n_items: int) -> None:
    """Totals and completeness (every shard 0..n_shards-1 there) of ``manifest``, written to OUT."""
    manifest["shards"].sort(key=lambda e: e["file"])
    manifest["n_sequences"] = sum(e["n_sequences"] for e in manifest["shards"])
    manifest["n_tokens"] = sum(e["n_tokens"] for e in manifest["shards"])
    manifest["complete"] = {e["file"] for e in manifest["shards"]} >= {f"shard-{i:05d}.safetensors"
                                                                      for i in range(n_shards)}
    manifest["n_prompts"] = n_items
    manifest["n_shards"] = n_shards
    _write_json(out / MANIFEST, manifest)


@dataclass
class DistillResult:
    out: Path
    n_sequences: int
    n_tokens: int
    shards: list[str] = field(default_factory=list)
    skipped_shards: int = 0


def file_fingerprint(path: str | Path) -> dict:
    """Size and sha256 of the first and last MiB: cheap, and enough to tell files apart."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read())
    return {"name": p.name, "size": size, "sha256_ends": h.hexdigest()[:32]}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def check_data_for(data: str | Path, target: str | Path) -> dict:
    """The manifest of DATA, after checking it was distilled from a model with
    TARGET's architecture, hidden size and vocabulary (any quant level of it)."""
    from ..gguf.inspect import fingerprint_mismatch
    from ..gguf.inspect import model_fingerprint

    manifest = read_manifest(data)
    if manifest is None:
        raise FileNotFoundError(f"{data}: no manifest.json (write it with gguf-mtp distill-data)")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{data}: data format {manifest.get('format')!r}, this version reads {FORMAT!r}")
    theirs = manifest.get("model") or {k: manifest[k] for k in ("arch", "n_embd", "n_vocab") if k in manifest}
    wrong = fingerprint_mismatch(model_fingerprint(target), theirs)
    if wrong:
        made = (manifest.get("target") or {}).get("name", "another model")
        raise ValueError(f"{data} was distilled from {made}, not from a model like TARGET {target} "
                         f"(TARGET vs data: {'; '.join(wrong)})")
    return manifest


def read_manifest(out: str | Path) -> dict | None:
    p = Path(out) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e}); delete the directory and distill again") from None
    if not isinstance(m, dict) or not isinstance(m.get("shards"), list):
        raise ValueError(f"{p}: not a distill-data manifest (no list of shards)")
    for e in m["shards"]:
        ok = isinstance(e, dict) and isinstance(e.get("file"), str) and _SHARD.fullmatch(e["file"]) and all(
            isinstance(e.get(k), int) and not isinstance(e.get(k), bool) and e[k] >= 0
            for k in ("first_prompt", "n_sequences", "n_tokens"))
        if not ok:
            raise ValueError(f"{p}: a malformed shard entry {str(e)[:120]}")
    for key, typ in (("target", dict), ("model", dict), ("settings", dict)):
        if key in m and not isinstance(m[key], typ):
            raise ValueError(f"{p}: {key!r} is {m[key]!r}, expected a {typ.__name__}")
    return m


def _topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits of each row, largest first, and their ids.
    torch.topk, not numpy's argpartition + argsort: on Gemma 3's 262,144-token vocabulary a
    256-row window took 0.8-2.2 s in numpy against 0.04 s here (2 threads, AMD EPYC), as long
    as the target's pass itself (0.8 s); reading text ran at 2.0 s per window. Ids come back as
    torch's int64: the caller stores them as int32."""
    import torch

    v, i = torch.topk(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), k, dim=-1, sorted=True)
    return v.numpy(), i.numpy()


def record_sequence(eng, tokens: list[int], k: int, *, prefill: bool = False) -> dict[str, np.ndarray]:
    """One target pass (in n_batch chunks) over ``tokens``: hidden rows and top-k logits per position.
    ``prefill``: the prompt pass's kernels (``distill-data text``); otherwise exact mode, rows as
    one-token decoding gives them."""
    hidden, vals, idxs = [], [], []
    n_batch = eng.opts.n_batch
    eng.clear()
    for start in range(0, len(tokens), n_batch):
        chunk = tokens[start:start + n_batch]
        eng.target_decode(chunk, start, [True] * len(chunk), prefill=prefill)
        hidden.append(eng.target_hidden(len(chunk)).copy())
        v, i = _topk(eng.target_logits_rows(0, len(chunk)), k)
        vals.append(v.astype(np.float32))
        idxs.append(i.astype(np.int32))
    return {"tokens": np.asarray(tokens, dtype=np.int32), "hidden": np.concatenate(hidden),
            "topk_values": np.concatenate(vals), "topk_indices": np.concatenate(idxs)}


def _save_shard(path: Path, seqs: list[dict], hidden_dtype) -> int:
    from safetensors.numpy import save_file

    lengths = [len(s["tokens"]) for s in seqs]
    arrays = {
        "tokens": np.concatenate([s["tokens"] for s in seqs]),
        "hidden": np.concatenate([s["hidden"] for s in seqs]).astype(hidden_dtype),
        "topk_values": np.concatenate([s["topk_values"] for s in seqs]),
        "topk_indices": np.concatenate([s["topk_indices"] for s in seqs]),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "n_prompt": np.asarray([s["n_prompt"] for s in seqs], dtype=np.int32),
        "prompt_index": np.asarray([s["prompt_index"] for s in seqs], dtype=np.int32),
    }
    tmp = path.with_name(f".{path.name}.partial")
    save_file(arrays, str(tmp))
    os.replace(tmp, path)
    return int(sum(lengths))


def distill(cfg: DistillConfig) -> DistillResult:
    """Generate and record; resumes a directory written with the same settings."""
    from ..runtime import Engine, RuntimeOptions, generate
    from ..runtime.sampling import SamplingParams
    from .prompts import load_prompts

    if cfg.hidden_dtype not in ("f16", "f32"):
        raise ValueError(f"hidden_dtype must be 'f16' or 'f32', got {cfg.hidden_dtype!r}")
    if cfg.topk_logits < 1 or cfg.shard_size < 1 or cfg.max_tokens < 1:
        raise ValueError("topk_logits, shard_size and max_tokens must be >= 1")
    header = require_mtp_layers(cfg.target)
    prompts = load_prompts(cfg.prompts)
    # what the prompts were: a rerun with another prompt file must not extend this data
    prompts_sha = hashlib.sha256("\0".join(prompts).encode()).hexdigest()[:32]
    if cfg.max_prompts is not None:
        prompts = prompts[:cfg.max_prompts]
    if not prompts:
        raise ValueError(f"{cfg.prompts}: no prompts")
    out = Path(cfg.out)          # made when the first shard is written: a target that fails to load leaves none
    identity = {**cfg.identity(), "prompts_sha256": prompts_sha}
    n_shards = -(-len(prompts) // cfg.shard_size)

    def expected(s: int) -> int:
        return len(range(s * cfg.shard_size, min(len(prompts), (s + 1) * cfg.shard_size)))

    manifest, done = open_manifest(out, cfg.target, identity, lambda first: expected(first // cfg.shard_size), header)
    mine = set(range(n_shards))
    if cfg.part is not None:
        i, n = cfg.part
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"part {i}/{n}: need 0 <= i < n")
        mine = {s for s in mine if s % n == i}
        manifest["part"] = {"index": i, "of": n}
    todo = [i for i in sorted(mine) if f"shard-{i:05d}.safetensors" not in done]
    hidden_dtype = np.float16 if cfg.hidden_dtype == "f16" else np.float32

    # the hidden rows are exported only while an MTP context is attached (load_mtp)
    opts = RuntimeOptions(n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                          n_batch=min(512, cfg.n_ctx))
    if cfg.n_gpu_layers is not None:
        opts.n_gpu_layers = cfg.n_gpu_layers
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        total = sum(expected(i) for i in mine)
        bar = tqdm(total=total, initial=total - sum(expected(i) for i in todo), unit="seq", desc="Distilling")
    written, skipped = [], len(mine) - len(todo)
    with Engine(cfg.target, opts) as eng:
        manifest.update(n_embd=eng.n_embd, n_vocab=eng.n_vocab, arch=eng.meta("general.architecture"))
        for s in todo:
            seqs = []
            for pi in range(s * cfg.shard_size, min(len(prompts), (s + 1) * cfg.shard_size)):
                ptoks = eng.tokenize(prompts[pi], add_special=cfg.add_special)[: cfg.n_ctx // 2]
                params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                        seed=cfg.seed + pi)
                room = min(cfg.max_tokens, cfg.n_ctx - len(ptoks))
                g = generate(eng, ptoks, room, drafter="none", draft=0, params=params)
                seq = record_sequence(eng, ptoks + g.tokens, cfg.topk_logits)
                seq.update(n_prompt=len(ptoks), prompt_index=pi)
                seqs.append(seq)
                if bar is not None:
                    bar.update(1)
            written.append(write_shard(out, manifest, s, s * cfg.shard_size, seqs, hidden_dtype, n_shards,
                                       len(prompts)))
    if bar is not None:
        bar.close()
    if not todo:  # nothing to do: still record completeness
        out.mkdir(parents=True, exist_ok=True)
        finish_manifest(out, manifest, n_shards, len(prompts))
    return DistillResult(out, sum(e["n_sequences"] for e in manifest["shards"]),
                         sum(e["n_tokens"] for e in manifest["shards"]), written, skipped)


@dataclass
class MergeResult:
    out: Path
    n_shards: int
    n_sequences: int
    n_tokens: int
    complete: bool
    missing: list[int] = field(default_factory=list)


def merge(out: str | Path, parts: list[str | Path]) -> MergeResult:
    """Join the outputs of ``distill(part=(i, n))`` runs (any machines, the same
    target file) into one data directory: every part must come from the same
    target fingerprint, format and settings; the shards are hard-linked (copied
    across file systems) and one manifest lists them. Shards a part is missing
    are reported (``complete`` is False then; distill the part again to finish it)."""
    import shutil

    out = Path(out)
    if not parts:
        raise ValueError("merge: give at least one shard directory")
    manifests = []
    for d in parts:
        m = read_manifest(d)
        if m is None:
            raise FileNotFoundError(f"{d}: no {MANIFEST} (not a distill-data directory)")
        manifests.append((Path(d), m))
    ref_dir, ref = manifests[0]
    for d, m in manifests[1:]:
        for key in ("format", "target", "settings", "n_prompts", "n_shards"):
            if m.get(key) != ref.get(key):
                raise ValueError(f"{d} and {ref_dir} differ in {key} ({m.get(key)!r} vs {ref.get(key)!r}): "
                                 "parts of one run must share the target file and every setting")
    if (out / MANIFEST).exists() or (out.exists() and any(out.iterdir())):
        raise ValueError(f"{out}: not empty; merge into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    shards: dict[str, dict] = {}
    for d, m in manifests:
        for e in m["shards"]:
            src = d / e["file"]
            if not src.is_file():
                raise FileNotFoundError(f"{src}: listed in {d / MANIFEST} but absent")
            if e["file"] in shards:
                if shards[e["file"]]["n_tokens"] != e["n_tokens"]:
                    raise ValueError(f"{e['file']}: two parts hold it with different contents")
                continue
            try:
                os.link(src, out / e["file"])
            except OSError:
                shutil.copyfile(src, out / e["file"])
            shards[e["file"]] = e
    n_shards = ref.get("n_shards") or len(shards)
    have = {int(f[6:11]) for f in shards}
    missing = sorted(set(range(n_shards)) - have)
    merged = {k: v for k, v in ref.items() if k not in ("shards", "part")}
    merged["shards"] = [shards[f] for f in sorted(shards)]
    merged["n_sequences"] = sum(e["n_sequences"] for e in merged["shards"])
    merged["n_tokens"] = sum(e["n_tokens"] for e in merged["shards"])
    merged["complete"] = not missing
    merged["merged_from"] = [str(d) for d, _ in manifests]
    _write_json(out / MANIFEST, merged)
    return MergeResult(out, len(shards), merged["n_sequences"], merged["n_tokens"], not missing, missing)


#: what a shard holds: name -> number of dimensions (rows are tokens for all but offsets and n_prompt)
SHARD_TENSORS = {"tokens": 1, "hidden": 2, "topk_values": 2, "topk_indices": 2, "offsets": 1, "n_prompt": 1}


def check_shard(path: str, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """Open a shard and check its tensors agree with each other and with the
    manifest (hidden width = n_embd, token ids < n_vocab, offsets within the
    tokens): a damaged shard is a clear error here, not a crash mid-training."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as h:
            keys = set(h.keys())
            missing = set(SHARD_TENSORS) - keys
            if missing:
                raise ValueError(f"{path}: a distilled shard without {sorted(missing)}")
            shapes = {k: tuple(h.get_slice(k).get_shape()) for k in SHARD_TENSORS}
            off, n_prompt, tokens = h.get_tensor("offsets"), h.get_tensor("n_prompt"), h.get_tensor("tokens")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable shard ({e})") from None
    n = shapes["tokens"][0] if shapes["tokens"] else -1
    bad = [k for k, nd in SHARD_TENSORS.items() if len(shapes[k]) != nd]
    bad += [k for k in ("hidden", "topk_values", "topk_indices") if k not in bad and shapes[k][0] != n]
    if not bad and manifest.get("n_embd") is not None and shapes["hidden"][1] != manifest["n_embd"]:
        bad.append(f"hidden width {shapes['hidden'][1]} != n_embd {manifest['n_embd']}")
    if not bad and (len(off) != len(n_prompt) + 1 or len(off) == 0 or off[0] != 0 or off[-1] != n
                    or np.any(np.diff(off) < 0) or np.any(n_prompt < 0) or np.any(n_prompt > np.diff(off))):
        bad.append("offsets / n_prompt")
    if not bad and len(tokens) and (tokens.min() < 0 or (manifest.get("n_vocab") and tokens.max() >= manifest["n_vocab"])):
        bad.append("token ids outside the vocabulary")
    if bad:
        raise ValueError(f"{path}: a damaged shard ({', '.join(map(str, bad))}); distill it again")
    return off, n_prompt


def load_sequences(data_dir: str | Path):
    """Yield every recorded sequence as a dict of arrays (one shard in memory at a time)."""
    from safetensors.numpy import load_file

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST} (write it with gguf-mtp distill-data)")
    for entry in manifest["shards"]:
        path = str(data_dir / entry["file"])
        check_shard(path, manifest)
        a = load_file(path)
        off = a["offsets"]
        for i in range(len(off) - 1):
            lo, hi = int(off[i]), int(off[i + 1])
            yield {"tokens": a["tokens"][lo:hi], "hidden": a["hidden"][lo:hi],
                   "topk_values": a["topk_values"][lo:hi], "topk_indices": a["topk_indices"][lo:hi],
                   "n_prompt": int(a["n_prompt"][i]),
                   "prompt_index": int(a["prompt_index"][i]) if "prompt_index" in a else -1}


__all__ = ["DistillConfig", "DistillResult", "MergeResult", "check_shard", "distill", "load_sequences", "merge",
           "read_manifest", "record_sequence"]
_ = asdict  # dataclasses.asdict is used by callers that log the config
