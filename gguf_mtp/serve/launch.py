"""Start ``gguf-mtp serve`` as a child process on a free port (tests, benchmarks)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time


class ServerProcess:
    """``with ServerProcess(["model.gguf", "-t", "2"]) as url: ...``: the server's
    base URL (``http://127.0.0.1:PORT``) once it listens; stopped on exit."""

    def __init__(self, args: list[str], timeout: float = 180):
        self.args = [str(a) for a in args]
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self) -> str:
        self.proc = subprocess.Popen([sys.executable, "-m", "gguf_mtp.cli", "serve", *self.args, "--port", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + self.timeout
        lines: list[str] = []
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"on (http://[\d.]+:\d+)/v1", line)
            if m:
                # keep draining stderr so that the server never blocks on a full pipe
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                self.url = m.group(1)
                return self.url
        self.stop()
        raise RuntimeError("gguf-mtp serve did not start:\n" + "".join(lines[-30:]))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
