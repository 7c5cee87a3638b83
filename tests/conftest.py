"""Shared by every tier: llama.cpp and torch keep to the small machines the
suite runs on. Tiers: ``tests/unit`` (pure Python, seconds, no runtime),
``tests/runtime`` (needs the patched runtime: ``gguf-mtp runtime build``);
``-m "not slow"`` leaves out the long ones."""

from __future__ import annotations

import os
import shutil

import pytest

#: the folder under the base temporary directory that session fixtures write in
#: (``session_tmp``): kept for the whole run, unlike what module fixtures make
SESSION_DIR = "session"


@pytest.fixture(autouse=True)
def _threads(monkeypatch):
    # the tests run on small machines: keep llama.cpp from oversubscribing
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory):
    """A folder for files that session-scoped fixtures share across modules."""
    return tmp_path_factory.mktemp(SESSION_DIR, numbered=False)


@pytest.fixture(scope="module", autouse=True)
def _module_tmp(request, tmp_path_factory):
    """Delete what a module's own fixtures wrote under the base temporary
    directory once the module is done, unless one of its tests failed. A whole
    run writes 8 GB and more (converted models, distilled data, retrofit work
    directories); kept to the end, it filled CI's disk a third of the way through
    (No space left on device). Each test's own tmp_path goes when it passes
    (tmp_path_retention_policy = "failed" in pyproject.toml)."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for p in set(base.iterdir()) - before:
        if p.is_dir() and p.name != SESSION_DIR:
            shutil.rmtree(p, ignore_errors=True)
