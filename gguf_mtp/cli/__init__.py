"""The ``gguf-mtp`` command line: one module per command group, each a thin
wrapper over the Python API; this module assembles them."""

from __future__ import annotations

import sys

import click

from .. import __version__
from . import bench, check, convert, generate, models, runtime, serve, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gguf-mtp")
def main():
    """Turn the Multi-Token-Prediction (MTP) layers of LLM checkpoints into
    speculative drafters for llama.cpp: convert, inspect, generate, demo."""


for _cmd in (runtime.runtime, convert.convert, convert.archs_cmd, convert.graft, convert.inspect_cmd,
             convert.quantize_cmd, convert.strip_cmd, generate.generate, generate.demo, check.check, bench.bench_cmd, models.models,
             serve.serve,
             *train.COMMANDS):
    main.add_command(_cmd)


if __name__ == "__main__":
    sys.exit(main())
