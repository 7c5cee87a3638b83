"""The files a benchmark measures, built once in a work directory.

From one high-precision TARGET with an MTP layer:

* **data**: self-distilled sequences from the q8_0 file as it runs
  (:func:`gguf_mtp.train.distill.distill`), the training data of every trained
  drafter and the token counts of the compressed draft vocabulary;
* **family sources** (high precision, heads trained where the drafter needs it):
  ``base`` / ``mtp`` = TARGET itself; ``fastmtp`` = the MTP head fine-tuned with
  FastMTP; ``eagle`` = the MTP block recycled into an EAGLE drafter and trained
  with feature regression; ``medusa`` = Medusa heads recycled from the MTP
  layer and trained;
* **variants**: each family source quantized to a level with the heads at a
  head type (llama.cpp's quantizer, :func:`gguf_mtp.convert.quantize.quantize`), then,
  for every family but ``base``, given the compressed draft vocabulary
  (:func:`gguf_mtp.train.vocab.compress_vocab`). ``base`` stays a file stock
  llama.cpp loads (upstream draft-mtp runs it).

Every output is written once and reused by later runs (names carry the
settings they depend on); delete the work directory to start over.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import SOURCE, BenchConfig

#: finetune settings per trained family (method, learning rate)
TRAINING = {"fastmtp": ("fastmtp", 3e-4), "eagle": ("eagle", 3e-4), "medusa": ("medusa", 1e-3)}
MEDUSA_HEADS = 3


@dataclass
class Workspace:
    """Paths of one target's work directory and what was built there."""

    root: Path
    target: Path
    cfg: BenchConfig
    log: list[dict] = field(default_factory=list)

    @classmethod
    def for_target(cls, cfg: BenchConfig, target: Path) -> "Workspace":
        """``--work DIR``: DIR/<target>-<key of its contents>. Every file here derives from the
        target (quantized copies, draft vocabularies, trained heads), so another target, or
        the same name with other contents (new heads grafted), gets its own directory: a
        work directory once named only by its flag served SmolLM2's draft-vocabulary rows
        from heads two generations old."""
        if cfg.work:
            from ..train.distill import file_fingerprint

            fp = file_fingerprint(target)
            key = hashlib.sha256(f"{fp['size']}|{fp['sha256_ends']}".encode()).hexdigest()[:12]
            root = Path(cfg.work) / f"{target.stem}-{key}"
        else:
            from ..upstream import cache_dir

            st = target.stat()
            key = hashlib.sha256(f"{target.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
            root = cache_dir() / "bench" / f"{target.stem}-{key}"
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, target, cfg)

    def _stage(self, name: str, path: Path, build) -> Path:
        """Build ``path`` with ``build(tmp_path)`` unless it exists; log the seconds."""
        if path.exists():
            return path
        t = time.perf_counter()
        build(path)
        self.log.append({"stage": name, "path": path.name, "seconds": round(time.perf_counter() - t, 1)})
        return path

    # -------------------------------------------------------------- data

    def data(self) -> Path:
        cfg = self.cfg
        out = self.root / f"data-p{cfg.train_prompts}-t{cfg.train_max_tokens}"

        def build(path: Path) -> None:
            from ..train.distill import DistillConfig, distill
            from ..train.prompts import DEFAULT_PROMPTS_DIR

            tmp = path.with_name(path.name + ".partial")
            q = SOURCE if SOURCE in cfg.quants else "q8_0"
            distill(DistillConfig(target=str(self.variant("base", q, cfg.head_type)),
                                  prompts=str(DEFAULT_PROMPTS_DIR), out=str(tmp),
                                  max_tokens=cfg.train_max_tokens, max_prompts=cfg.train_prompts,
                                  shard_size=32, n_threads=cfg.threads, n_gpu_layers=cfg.n_gpu_layers,
                                  progress=cfg.progress))
            tmp.rename(path)

        return self._stage("distill", out, build)

    # -------------------------------------------------------------- families

    def family_source(self, family: str) -> Path:
        """The high-precision file of ``family`` (its heads trained if it needs it)."""
        if family in ("base", "mtp"):
            return self.target
        if family not in TRAINING:
            raise ValueError(f"unknown drafter family {family!r}")
        out = self.root / f"{family}-s{self.cfg.train_steps}-p{self.cfg.train_prompts}.gguf"
        return self._stage(f"train {family}", out, lambda path: self._train(family, path))

    def _train(self, family: str, out: Path) -> None:
        from ..heads.stitch import stitch
        from ..train.finetune import FinetuneConfig, finetune

        cfg = self.cfg
        method, lr = TRAINING[family]
        start = self._start(family)
        heads = self.root / f"{family}-heads-s{cfg.train_steps}-p{cfg.train_prompts}"
        finetune(FinetuneConfig(data=str(self.data()), target=str(start), out=str(heads), method=method,
                                steps=cfg.train_steps, save_every=max(1, cfg.train_steps), batch_size=4,
                                seq_len=64 if cfg.train_max_tokens >= 64 else max(8, cfg.train_max_tokens),
                                lr=lr, warmup_steps=min(10, cfg.train_steps), min_lr_ratio=1.0, cpu=True,
                                resume=True, progress=cfg.progress))
        tmp = out.with_name(out.name + ".partial.gguf")
        stitch(start, heads, tmp, progress=False)
        if family == "eagle":
            from ..heads.eagle import set_metadata

            set_metadata(tmp, out, "trained")
            tmp.unlink()
        else:
            tmp.rename(out)

    def _start(self, family: str) -> Path:
        """The untrained starting file of a trained family (recycled from the MTP layer)."""
        out = self.root / f"{family}-start.gguf"

        def build(path: Path) -> None:
            if family == "fastmtp":
                shutil.copyfile(self.target, path)
            elif family == "eagle":
                from ..heads.eagle import make_eagle

                make_eagle(self.target, path, "recycled", seed=0)
            else:
                from ..heads.medusa import init_recycled, write_heads

                write_heads(self.target, init_recycled(self.target, MEDUSA_HEADS), path, head_type="f32",
                            progress=False)

        return self._stage(f"init {family}", out, build)

    # -------------------------------------------------------------- variants

    def variant(self, family: str, quant: str, head_type: str) -> Path:
        """``family`` at trunk type ``quant`` with heads at ``head_type`` (the draft
        vocabulary compressed for every family but ``base``)."""
        cv = self.cfg.draft_vocab if family != "base" else 0
        if quant == SOURCE:
            if family not in ("base", "mtp"):
                raise ValueError(f"the {family} drafter needs a quantizable target (quant level {SOURCE!r} "
                                 "measures the target file as it is)")
            if not cv:
                return self.target
        src = self.family_source(family)
        name = src.stem if family not in ("base", "mtp") else "target"
        out = self.root / f"{name}-{quant}-h{head_type}" f"{f'-v{cv}' if cv else ''}.gguf"

        def build(path: Path) -> None:
            from ..convert.quantize import quantize

            quantized = self.target if quant == SOURCE else self.root / f"{name}-{quant}-h{head_type}.gguf"
            if not quantized.exists():
                quantize(src, quantized, quant, head_type=head_type, nthread=self.cfg.threads)
            if cv:
                from ..train.vocab import compress_vocab

                compress_vocab(quantized, self.data(), path, cv, progress=False)

        return self._stage(f"quantize {family} {quant}/{head_type}", out, build)
