"""Start the `tritonserver` that the PyPI wheel `nvidia-pytriton` bundles (2.51, Python backend only), for tests and
local runs on a host without NVIDIA's container. Standard library only: the caller's interpreter may be any.

The wheel's layout and what it needs (serving-facts note, section 5, measured):
- the Python-backend stub must stay where the wheel put it (its RUNPATH finds the bundled libcudart), so the
  backend directory made here holds links to `libtriton_python.so`, `triton_python_backend_utils.py` and
  `python_backend_stubs/<X.Y>/triton_python_backend_stub` (a copy of the stub fails to load libcudart);
- LD_LIBRARY_PATH = the venv interpreter's sysconfig LIBDIR, else the stub may load another libpython;
- PATH starts with the venv's bin/: the stub embeds Python, which ignores PYTHONPATH and finds its prefix from
  the `python` on PATH (pyvenv.cfg beside it), so the venv's site-packages (numpy < 2, onnxruntime, ...) are
  the ones imported; numpy is imported before any model code (MEASURED: with the base interpreter's numpy 2.4
  string tensors arrive as a repeated first byte).

    python -m serving.triton.server --repo DIR [--venv .venv-triton] [--http-port 8000] [--grpc-port 8001]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_ENV = "TTS_TRITON_VENV"


def default_venv() -> Path:
    """$TTS_TRITON_VENV, else .venv-triton in the repository (what ci/triton_env.sh makes)."""
    return Path(os.environ.get(VENV_ENV) or REPO_ROOT / ".venv-triton")


@dataclass(frozen=True)
class TritonInstall:
    venv: Path
    python: Path
    binary: Path
    backend_lib: Path
    backend_utils: Path
    stub: Path
    libdir: str
    site_packages: str

    @classmethod
    def find(cls, venv: Path | None = None) -> TritonInstall:
        """The install in `venv`; raises FileNotFoundError naming what is missing (callers skip or report)."""
        venv = Path(venv or default_venv())
        python = venv / "bin" / "python"
        if not python.is_file():
            raise FileNotFoundError(f"{venv}: no Triton test venv (bash ci/triton_env.sh makes it)")
        probe = (
            "import importlib.util, json, sys, sysconfig; s = importlib.util.find_spec('pytriton'); "
            "print(json.dumps([s and s.submodule_search_locations[0], sysconfig.get_config_var('LIBDIR'), "
            "sysconfig.get_paths()['purelib'], '%d.%d' % sys.version_info[:2]]))"
        )
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout
        pkg, libdir, site, version = json.loads(out)
        if pkg is None:
            raise FileNotFoundError(f"{venv}: nvidia-pytriton is not installed (bash ci/triton_env.sh)")
        root = Path(pkg) / "tritonserver"
        install = cls(
            venv=venv,
            python=python,
            binary=root / "bin" / "tritonserver",
            backend_lib=root / "backends" / "python" / "libtriton_python.so",
            backend_utils=root / "backends" / "python" / "triton_python_backend_utils.py",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libdir=libdir,
            site_packages=site,
        )
        for path in (install.binary, install.backend_lib, install.backend_utils, install.stub):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing from the nvidia-pytriton install")
        return install

    def backend_dir(self, dest: Path) -> Path:
        """A --backend-directory whose python/ backend links to the wheel's files (links, never copies)."""
        python = dest / "python"
        python.mkdir(parents=True, exist_ok=True)
        for src in (self.backend_lib, self.backend_utils, self.stub):
            link = python / src.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(src)
        return dest

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (self.libdir, env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(self.venv / "bin"), env.get("PATH")) if p)
        env.pop("PYTHONHOME", None)
        return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """`tritonserver` on 127.0.0.1 in its own process group; `stop()` ends that group (by its id)."""

    def __init__(
        self,
        repo: Path,
        install: TritonInstall,
        work: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        log_verbose: int = 0,
    ):
        self.repo, self.install, self.work = Path(repo), install, Path(work)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.log_path = self.work / "tritonserver.log"
        self.log_verbose = log_verbose
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(self.install.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.install.backend_dir(self.work / 'backends')}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--model-control-mode=none",
            "--exit-on-error=true",
            f"--log-verbose={self.log_verbose}",
        ]

    def start(self, timeout_s: float = 60.0) -> TritonServer:
        self.work.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.install.env(), start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the group started above (the server and its backend stubs), SIGKILL after `timeout_s`; then
        any stub still in the group is killed (a stub busy at shutdown can outlive the server)."""
        if self.proc is None:
            return
        group = self.proc.pid
        if self.proc.poll() is None:
            os.killpg(group, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, required=True, help="model repository (tts-export --triton-repo)")
    ap.add_argument("--venv", type=Path, default=None, help=f"venv with nvidia-pytriton (default ${VENV_ENV})")
    ap.add_argument("--work", type=Path, default=Path("build/triton-server"), help="backend links and the log")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    args = ap.parse_args()
    server = TritonServer(args.repo, TritonInstall.find(args.venv), args.work, args.http_port, args.grpc_port)
    with server:
        print(f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}; log {server.log_path}; Ctrl-C stops it")
        try:
            server.proc.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
