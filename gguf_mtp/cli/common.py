"""Shared by the command modules: the one way a command fails (a one-line
``Error: ...`` and exit code 1, never a traceback)."""

from __future__ import annotations

import click


def fail(e: Exception):
    raise click.ClickException(str(e))
