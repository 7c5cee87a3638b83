"""Projection to real model sizes: what speculation would give on the 0.6–4B
models users run, from speed measured here and acceptance published elsewhere.

The 2-core box cannot train heads for billion-parameter models, but the cost
side of the bound does not depend on the weights: a pass of a model with
random weights of a real shape costs what the real model's pass costs. So

1. :func:`build` writes a model of a real shape: a small template checkpoint
   with the real widths (transformers' own random init, 4 trunk layers for the
   hybrid, 1 for the dense llama) whose layers are repeated up to the real
   depth, streamed into a bf16 safetensors file, converted with the project's
   converter (MTP layer kept) and quantized with llama.cpp's quantizer;
2. :func:`measure` times it with the cost model auto uses: c(n) for n-row
   passes, the MTP step d (in 1-token passes), plain tok/s, and the share of
   the weights a pass reads that is the LM head;
3. :func:`project` combines those with per-position acceptance rates — ones
   published for real MTP heads (:data:`PUBLISHED`, each with its source) and
   the ones our own trained heads reach — into the speed bound
   E(K) / (c(K+1) + K·d), best over K.

Random weights give speed, never acceptance: no τ of these models is reported.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    """A real model size. ``hidden``/``layers``/``ffn``/``heads``/``kv_heads`` are
    Qwen3's (0.6B, 1.7B, 4B: head dim 128, 151,936-token vocabulary, tied
    embeddings); the hybrid puts gated delta-net layers with heads/2 key and
    ``heads`` value heads of dim 128 between every 4th full-attention layer, as
    Qwen3.5 does; the dense llama has heads = hidden/128."""
    name: str
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int


#: Qwen3-0.6B / 1.7B / 4B config.json dimensions
SHAPES = {
    "0.6b": Shape("0.6b", 1024, 28, 3072, 16, 8),
    "1.7b": Shape("1.7b", 2048, 28, 6144, 16, 8),
    "4b": Shape("4b", 2560, 36, 9728, 32, 8),
}
ARCHS = ("qwen35", "llama")


#: tokens per verify pass (τ, the bonus token included) at K = 1, 2, ... drafts
#: per pass, published for real MTP heads at greedy decoding, each with its
#: source; ``tau_hi`` is the other end of a published range. A pooled accept
#: rate r (accepted ÷ drafted, llama.cpp's statistic) at draft length K gives
#: τ = 1 + K·r. The benchmark adds what our own trained heads reach.
PUBLISHED = {
    "DeepSeek-V3": {
        "tau": [1.85], "tau_hi": [1.90],
        "source": "DeepSeek-V3 Technical Report (arXiv 2412.19437v2), section 5.4.3: the acceptance rate of the "
                  "second token prediction ranges between 85% and 90% across various generation topics (1.8x TPS)",
    },
    "MiMo-7B": {
        "tau": [1.90],
        "source": "XiaomiMiMo/MiMo README, section II (and arXiv 2505.07608, section 2.2): with one MTP layer for "
                  "speculative decoding the acceptance rate is about 90%",
    },
    "Qwen3.6-35B-A3B in llama.cpp": {
        "tau": [1.884, 2.630, 3.138],
        "source": "ggml-org/llama.cpp PR #22673, a user's measurement (community, one machine): accept rate "
                  "0.8835 / 0.815 / 0.7127 at --draft-max 1 / 2 / 3 (tau = 1 + K x rate)",
    },
}


# -- building ----------------------------------------------------------------------------------


def _template(arch: str, shape: Shape, out: Path) -> tuple[Path, dict]:
    """A checkpoint with the real widths and the fewest layers that hold one of
    each kind; returns it and how its layers map (``period``, ``n_trunk``)."""
    if arch == "qwen35":
        from ..testing.tiny_qwen35 import make_qwen35_checkpoint

        make_qwen35_checkpoint(out, hidden_size=shape.hidden, num_layers=4, full_attention_interval=4,
                               intermediate_size=shape.ffn, num_heads=shape.heads, num_kv_heads=shape.kv_heads,
                               head_dim=128, linear_key_head_dim=128, linear_value_head_dim=128,
                               linear_num_key_heads=shape.heads // 2, linear_num_value_heads=shape.heads,
                               mtp_layers=1, norm_std=0.02)
        return out, {"period": 4, "n_trunk": 4, "mtp_appended": False}
    if arch == "llama":
        from ..testing.fixtures import make_checkpoint

        heads = shape.hidden // 128
        make_checkpoint("llama_mtp", out, hidden_size=shape.hidden, num_layers=1, mtp_layers=1,
                        intermediate_size=shape.ffn, num_heads=heads, num_kv_heads=max(1, heads // 4), init_std=0.02)
        return out, {"period": 1, "n_trunk": 1, "mtp_appended": True}
    raise ValueError(f"arch {arch!r}: choose one of {', '.join(ARCHS)}")


def _read_safetensors(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def _to_bf16(a: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes, rounded to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def inflate(template: Path, layout: dict, n_layers: int, out: Path) -> Path:
    """Write ``out``: ``template``'s checkpoint with ``n_layers`` trunk layers,
    trunk layer i a copy of template layer i mod period (the MTP layer, appended
    or separate, kept once), bf16, streamed tensor by tensor."""
    import re

    out.mkdir(parents=True, exist_ok=True)
    for f in template.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy(f, out / f.name)
    header, base = _read_safetensors(template / "model.safetensors")
    header.pop("__metadata__", None)
    layer = re.compile(r"^(model\.layers\.)(\d+)(\..*)$")
    plan: list[tuple[str, str]] = []          # (new name, template name)
    n_t = layout["n_trunk"]
    by_layer: dict[int, list[tuple[str, str]]] = {}      # template trunk layer -> (prefix, suffix) of its tensors
    first = None
    for name in header:
        m = layer.match(name)
        if m and not (layout["mtp_appended"] and int(m.group(2)) >= n_t):
            by_layer.setdefault(int(m.group(2)), []).append((m.group(1), m.group(3)))
            first = len(plan) if first is None else first
        elif m:                                # the appended MTP layer moves behind the new trunk
            plan.append((f"{m.group(1)}{int(m.group(2)) - n_t + n_layers}{m.group(3)}", name))
        else:
            plan.append((name, name))
    trunk = [(f"{pre}{i}{suf}", f"{pre}{i % layout['period']}{suf}")
             for i in range(n_layers) for pre, suf in by_layer[i % layout["period"]]]
    plan[first or 0:first or 0] = trunk
    new_header, at = {}, 0
    for new, src in plan:
        shape = header[src]["shape"]
        n = int(np.prod(shape)) * 2
        new_header[new] = {"dtype": "BF16", "shape": shape, "data_offsets": [at, at + n]}
        at += n
    new_header["__metadata__"] = {"format": "pt"}
    text = json.dumps(new_header).encode()
    text += b" " * (-len(text) % 8)
    cache: dict[str, bytes] = {}
    with open(template / "model.safetensors", "rb") as src_f, open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for new, src in plan:
            if src not in cache:
                e = header[src]
                lo, hi = e["data_offsets"]
                src_f.seek(base + lo)
                a = np.frombuffer(src_f.read(hi - lo), dtype={"F32": np.float32, "BF16": np.uint16}[e["dtype"]])
                cache[src] = _to_bf16(a) if e["dtype"] == "F32" else a.tobytes()
            f.write(cache[src])
    config = json.loads((template / "config.json").read_text())
    config["num_hidden_layers"] = n_layers
    if "layer_types" in config:
        config["layer_types"] = [config["layer_types"][i % layout["period"]] for i in range(n_layers)]
    config["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def build(arch: str, size: str | Shape, quants: tuple[str, ...], work: Path, log=print) -> dict[str, Path]:
    """The random-weight model of ``arch`` at ``size`` (a name in :data:`SHAPES`
    or a :class:`Shape`) at every quant in ``quants`` (cached in ``work``);
    intermediate files are removed."""
    from ..convert.core import ConvertOptions, convert
    from ..convert.quantize import quantize

    shape = SHAPES[size] if isinstance(size, str) else size
    size = shape.name
    work.mkdir(parents=True, exist_ok=True)
    files = {q: work / f"{arch}-{size}-{q}.gguf" for q in quants}
    if all(p.is_file() for p in files.values()):
        return files
    tmpl, ckpt, f16 = work / f"{arch}-{size}-template", work / f"{arch}-{size}-ckpt", work / f"{arch}-{size}-f16.gguf"
    if not f16.is_file():
        log(f"{arch} {size}: template checkpoint")
        _, layout = _template(arch, shape, tmpl)
        log(f"{arch} {size}: {shape.layers} layers, bf16 checkpoint")
        inflate(tmpl, layout, shape.layers, ckpt)
        shutil.rmtree(tmpl)
        log(f"{arch} {size}: converting to f16")
        convert(ckpt, f16, ConvertOptions(outtype="f16", progress=False))
        shutil.rmtree(ckpt)
    for q, p in files.items():
        if not p.is_file():
            log(f"{arch} {size}: quantizing to {q}")
            quantize(f16, p, q)
    f16.unlink()
    return files


# -- measuring ---------------------------------------------------------------------------------


def head_share(path: Path) -> float:
    """The LM head's share of the bytes a 1-token trunk pass reads (the trunk's
    blocks plus the head; the MTP layer and the embedding lookup left out)."""
    from ..gguf.inspect import read_header, tensor_nbytes

    h = read_header(path)
    arch = h.kv["general.architecture"]
    n_trunk = int(h.kv[f"{arch}.block_count"]) - int(h.kv.get(f"{arch}.nextn_predict_layers", 0))
    size = {name: tensor_nbytes(shape, gtype) for name, shape, gtype, _ in h.tensors}
    head = size.get("output.weight", size.get("token_embd.weight", 0))
    trunk = sum(n for name, n in size.items() if name.startswith("blk.") and int(name.split(".")[1]) < n_trunk)
    return head / (head + trunk)


def measure(path: Path, threads: int, n_max: int = 5, repeats: int = 5) -> dict:
    """c(1..n_max), the MTP step d, plain tok/s and the head's byte share of ``path``."""
    from ..runtime import Engine, RuntimeOptions
    from ..runtime.autodraft import measure_cost_model

    with Engine(path, RuntimeOptions(n_ctx=512, n_threads=threads)) as eng:
        cm = measure_cost_model(eng, n_max=n_max, repeats=repeats)
    return {"c": [round(x, 4) for x in cm.c], "t1_ms": round(cm.t1_s * 1e3, 3), "plain_tok_s": round(1 / cm.t1_s, 2),
            "mtp_step": round(cm.draft, 4), "head_share": round(head_share(path), 4),
            "file_bytes": path.stat().st_size}


# -- projecting --------------------------------------------------------------------------------


def project(m: dict, tau: list[float]) -> dict:
    """The best bound over K = 1..len(tau): τ(K) / (c(K+1) + K·d)."""
    best = {"k": 0, "speedup": 1.0}
    for k in range(1, min(len(tau), len(m["c"]) - 1) + 1):
        s = tau[k - 1] / (m["c"][k] + k * m["mtp_step"])
        if s > best["speedup"]:
            best = {"k": k, "speedup": round(s, 3)}
    return best


def projections(m: dict, acceptance: dict) -> dict:
    """name -> the projected best speedup (and K) for each acceptance source;
    a published range gives both ends."""
    out = {}
    for name, src in acceptance.items():
        p = project(m, src["tau"])
        if "tau_hi" in src:
            hi = project(m, src["tau_hi"])
            p = {"k": hi["k"], "speedup": [p["speedup"], hi["speedup"]]}
        out[name] = p
    return out


@dataclass
class Row:
    arch: str
    size: str
    quant: str
    measured: dict
    projected: dict


def run(acceptance: dict, sizes=("0.6b", "1.7b", "4b"), archs=ARCHS, quants=("q4_k_m", "q8_0"), threads: int = 2,
        work: Path | None = None, keep: bool = True, log=print) -> list[Row]:
    """Build (cached), measure and project every (arch, size, quant) with each
    tokens-per-pass source of ``acceptance`` (name -> {"tau": [τ(1), ...], "source": ...})."""
    from ..upstream import cache_dir

    work = Path(work) if work else cache_dir() / "projection"
    rows = []
    for arch in archs:
        for size in sizes:
            files = build(arch, size, tuple(quants), work, log)
            for q, p in files.items():
                log(f"{arch} {size} {q}: measuring")
                m = measure(p, threads)
                rows.append(Row(arch, size, q, m, projections(m, acceptance)))
                log(f"  plain {m['plain_tok_s']} tok/s, c(2..{len(m['c'])}) = "
                    f"{'/'.join(f'{x:.2f}' for x in m['c'][1:])}, MTP step {m['mtp_step']:.3f}, "
                    f"head {m['head_share']:.0%}")
            if not keep:
                for p in files.values():
                    p.unlink()
    return rows


def reproject(doc: dict, acceptance: dict) -> dict:
    """DOC (a projection.json) with its measured costs kept and every row
    priced again with ``acceptance``: new heads need no new measurement."""
    rows = [Row(r["arch"], r["size"], r["quant"], r["measured"], projections(r["measured"], acceptance))
            for r in doc["rows"]]
    return to_json(rows, acceptance, doc["meta"])


def to_json(rows: list[Row], acceptance: dict, meta: dict) -> dict:
    return {"meta": meta, "acceptance": acceptance, "rows": [asdict(r) for r in rows]}


def markdown(doc: dict) -> str:
    names = list(doc["acceptance"])
    head = ["arch", "size", "quant", "plain tok/s", "c(2)", "c(3)", "c(4)", "MTP step d", "LM head share"]
    lines = ["| " + " | ".join(head + [f"projected: {n}" for n in names]) + " |",
             "|" + "---|" * (len(head) + len(names))]
    for r in doc["rows"]:
        m = r["measured"]
        cells = [r["arch"], r["size"], r["quant"], f"{m['plain_tok_s']:.1f}",
                 *(f"{m['c'][i]:.2f}" for i in (1, 2, 3)), f"{m['mtp_step']:.3f}", f"{m['head_share']:.0%}"]
        for n in names:
            p = r["projected"][n]
            s = p["speedup"]
            cells.append("1.00× (no K pays)" if not p["k"]
                         else f"{s[0]:.2f}–{s[1]:.2f}× (K={p['k']})" if isinstance(s, list)
                         else f"{s:.2f}× (K={p['k']})")
        lines.append("| " + " | ".join(cells) + " |")
    src = [f"- *{n}*: τ(K = 1..{len(a['tau'])}) = {'/'.join(str(x) for x in a['tau'])}"
           + (f" to {'/'.join(str(x) for x in a['tau_hi'])}" if "tau_hi" in a else "") + f"; {a['source']}"
           for n, a in doc["acceptance"].items()]
    return "\n".join(lines) + "\n\nAcceptance used (τ: tokens per verify pass):\n" + "\n".join(src) + "\n"


__all__ = ["PUBLISHED", "ARCHS", "SHAPES", "Row", "build", "head_share", "inflate", "markdown", "measure",
           "project", "projections", "reproject", "run", "to_json"]
