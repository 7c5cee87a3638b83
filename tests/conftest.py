"""Shared by every tier: llama.cpp and torch keep to the small machines the
suite runs on. Tiers: ``tests/unit`` (pure Python, seconds, no runtime),
``tests/runtime`` (needs the patched runtime: ``gguf-mtp runtime build``);
``-m "not slow"`` leaves out the long ones."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _threads(monkeypatch):
    # the tests run on small machines: keep llama.cpp from oversubscribing
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
