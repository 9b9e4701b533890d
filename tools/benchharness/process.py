"""Launching workers (`worker.py`) under a given interpreter: one-shot calls and timing servers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
# progress bars (the reference samplers' tqdm) would only slow the steps down
_ENV = {"TQDM_DISABLE": "1"}


def _command(python: str, request: dict[str, Any]) -> list[str]:
    return [python, str(WORKER), json.dumps(request)]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, **_ENV, **(extra or {})}


def call(python: str, request: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one fresh worker to its end and return its RESULT (its stderr's tail on failure)."""
    proc = subprocess.run(
        _command(python, request), capture_output=True, text=True, check=False, env=_env(env)
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        what = (
            request.get("func") or f"{request.get('side')} {request['mode']} {request.get('kind')}"
        )
        raise RuntimeError(f"worker ({python}: {what}) failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def call_function(
    python: str,
    spec_file: str,
    func: str,
    params: dict[str, Any],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`func(params)` of the spec file, run under `python` (e.g. the reference's venv)."""
    return call(python, {"spec": spec_file, "mode": "call", "func": func, "params": params}, env)


class Server:
    """A long-lived worker that builds one side, then times one step per name it is sent."""

    def __init__(
        self, python: str, request: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            _command(python, {**request, "mode": "serve"}),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(env),
        )
        self.info: dict[str, Any] = json.loads(self._expect("READY "))

    def _expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :]
        raise RuntimeError(f"worker exited with {self.proc.wait()} (its stderr is above)")

    def time(self, step: str) -> float:
        """Seconds of one run of `step`."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(step + "\n")
        self.proc.stdin.flush()
        return float(self._expect("TIME "))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()
