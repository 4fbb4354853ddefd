"""A throwaway JupyterLab server for browser tests: temporary root, free port, no token, always stopped."""
from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Launch flags for Debian's Chromium: no sandbox (CI runs as root), nothing fetched from the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> Path:
    """The Chromium binary the browser tests drive: $CHROMIUM, else Debian's /usr/bin/chromium."""
    return Path(os.environ.get("CHROMIUM") or "/usr/bin/chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab --no-browser` on 127.0.0.1 serving `root`; a context manager that stops it and its kernels."""

    def __init__(self, root: Path, log_path: Path, start_timeout: float = 90.0):
        self.root = Path(root)
        self.log_path = Path(log_path)
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self._cookies))

    def _env(self) -> dict:
        """Isolated Jupyter dirs (no user settings or kernels leak in); `python` is this interpreter;
        no MPLBACKEND, so the kernel draws figures inline as it does for a user."""
        home = self.root.parent / "jupyter-home"
        dirs = {"JUPYTER_CONFIG_DIR": home / "config", "JUPYTER_DATA_DIR": home / "data",
                "JUPYTER_RUNTIME_DIR": home / "runtime", "JUPYTERLAB_SETTINGS_DIR": home / "settings",
                "JUPYTERLAB_WORKSPACES_DIR": home / "workspaces", "IPYTHONDIR": home / "ipython"}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        # No "get Jupyter news?" prompt or update check: the page must not reach the network.
        notification = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env.update({k: str(v) for k, v in dirs.items()})
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def __enter__(self) -> "LabServer":
        jupyter = Path(sys.executable).parent / "jupyter"
        cmd = [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--port-retries=0", f"--ServerApp.root_dir={self.root}", "--IdentityProvider.token=",
               "--ServerApp.password=", "--ServerApp.open_browser=False",
               "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"]
        if os.geteuid() == 0:  # CI runs as root
            cmd.append("--allow-root")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self._env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with status {self.proc.returncode} before serving; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"jupyter lab did not answer on {self.url} within {self.start_timeout:.0f} s; "
                           f"log {self.log_path}:\n{self.log_tail()}")

    def _api(self, method: str, path: str, timeout: float = 5.0):
        """A REST call; changing calls carry the server's _xsrf cookie back as X-XSRFToken, as the page does."""
        headers = {}
        if method != "GET":
            if not any(c.name == "_xsrf" for c in self._cookies):
                self._opener.open(f"{self.url}/lab", timeout=timeout).read()
            headers = {"X-XSRFToken": next(c.value for c in self._cookies if c.name == "_xsrf")}
        req = urllib.request.Request(f"{self.url}{path}", method=method, headers=headers)
        with self._opener.open(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict]:
        """The kernels the server is running."""
        return self._api("GET", "/api/kernels")

    def stop(self):
        """Shut down every kernel (they run in sessions of their own), then the server's process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                for k in self.kernels():
                    self._api("DELETE", f"/api/kernels/{k['id']}", timeout=15)
            except (urllib.error.URLError, OSError, ValueError, StopIteration):
                pass  # the server is going down anyway; its own shutdown stops the kernels it still knows
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
