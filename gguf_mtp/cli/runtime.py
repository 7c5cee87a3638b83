"""``gguf-mtp runtime build | info``: the patched llama.cpp runtime."""

from __future__ import annotations

import json

import click

from .common import fail  # noqa: F401

@click.group()
def runtime():
    """Build and check the patched llama.cpp runtime (llama-cpp-python)."""


@runtime.command("build")
@click.option("--cmake-args", default=None, metavar="ARGS",
              help="CMake flags (default: the CMAKE_ARGS environment variable), "
                   "e.g. '-DGGML_CUDA=on' for CUDA or '-DGGML_METAL=on' for Metal.")
@click.option("--force", is_flag=True, help="Rebuild even if a cached wheel matches.")
@click.option("--no-install", is_flag=True, help="Build (or find) the wheels only.")
@click.option("-j", "--jobs", type=int, default=None, help="Parallel compile jobs (default: all cores).")
def runtime_build(cmake_args, force, no_install, jobs):
    """Build llama-cpp-python 0.3.36 from its source distribution with patches/
    applied, cache the wheel by (version, series, CMAKE_ARGS) and install it.

    Every build is smoke-tested in a child process on this CPU (load a tiny
    GGUF, decode, compare the kernels' logits). If the child dies or computes
    garbage, the build is redone without the failing feature: first without
    AMX, then with a portable instruction set (-DGGML_NATIVE=OFF); the choice
    is remembered for this machine. A cached wheel built on another CPU is
    smoke-tested before use. A second run with nothing changed takes seconds."""
    from ..runtime.build import BuildError, build_runtime

    try:
        res = build_runtime(cmake_args, force=force, install=not no_install, jobs=jobs,
                            log=lambda m: click.echo(m, err=True))
    except BuildError as e:
        raise click.ClickException(str(e))
    for fb in res.fallbacks:
        click.echo(f"note: built {fb['name']} because {fb['reason']}", err=True)
    for w in res.wheels:
        click.echo(str(w))


@runtime.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def runtime_info(as_json):
    """Show the llama.cpp commit, the applied patches and the compiled backends;
    fails if the installed llama-cpp-python is not gguf-mtp's patched build."""
    from ..runtime import info as runtime_info_api
    from ..upstream import RuntimeMissing

    try:
        info = runtime_info_api()
    except RuntimeMissing as e:
        raise click.ClickException(str(e))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"llama-cpp-python {info['llama_cpp_python']}  (llama.cpp {info['llama_cpp_commit'][:9]})")
    click.echo(f"build key        {info['key']}")
    click.echo(f"CMAKE_ARGS       {' '.join(info['cmake_args'])}")
    click.echo("patches:")
    for p in info["patches"]:
        click.echo(f"  {p['name']}  {p['sha256'][:12]}")
    click.echo(f"backends         {', '.join(info['backends'])}")
    click.echo(f"GPU offload      {'yes' if info['gpu_offload'] else 'no'}")
    click.echo(f"compiled for     {' '.join(info['compiled_cpu_features']) or '?'}")
    click.echo(f"extra buffers    {', '.join(info['extra_buffer_types']) or 'none'}  "
               "(weights in these buffer types use AMX / repacked kernels)")
    built_on = info.get("built_on")
    here = info["this_cpu"]
    if built_on:
        same = "same CPU" if built_on.get("fingerprint") == here["fingerprint"] else "ANOTHER CPU"
        click.echo(f"built on         {built_on.get('cpu')} ({same})")
    click.echo(f"this CPU         {here['cpu']}  [{' '.join(here['isa'])}]")
    click.echo(f"smoke test       {'passed on this CPU' if info['verified_here'] else 'not run on this CPU'}")
