"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of the HTML pages.

Small on purpose: start the browser, open one page, evaluate JavaScript in it, and record what
the page logged and which URLs it requested. `find_or_install_chromium` installs Debian's
`chromium` only when it is missing and the tests run as root with apt-get; otherwise the
caller skips with the reason it returns.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


def find_or_install_chromium() -> tuple[str | None, str]:
    """(path of a Chromium, "") or (None, why there is none)."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found:
        return found, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "no Chromium on PATH, and installing Debian's chromium needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            return None, f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
    found = shutil.which("chromium")
    return (found, "") if found else (None, "apt-get installed chromium but it is not on PATH")


class Browser:
    """One headless Chromium with one page target."""

    def __init__(self, executable: str, profile: Path, size: tuple[int, int] = (1400, 900)) -> None:
        import websocket

        args = [
            executable, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            # The browser's own traffic (updates, safe browsing) is off, so that any request
            # recorded comes from the page.
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-features=Translate,OptimizationHints,MediaRouter",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError(f"{executable} did not start (exit status {self.process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:  # the browser's own local endpoint
            targets = json.load(reply)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path, ready: str = "document.body && document.body.dataset.ready === '1'", timeout: float = 60) -> None:
        """Open a file and wait until `ready` holds and every image has loaded or failed."""
        self.send("Page.navigate", url=path.resolve().as_uri())
        self.wait_for(f"({ready}) && Array.from(document.images).every(i => i.complete)", timeout)

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied {expression}")
            time.sleep(0.1)

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads, as lines."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                out.append("log: " + params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
            elif method == "Network.loadingFailed":
                out.append("failed load: " + params.get("errorText", ""))
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def press(self, key: str) -> None:
        """A real key press (keydown, char, keyup) as the keyboard would send it: "j", "J", "?", "ArrowRight"."""
        special = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Escape": 27}
        if key in special:
            common = {"key": key, "code": key, "windowsVirtualKeyCode": special[key]}
            self.send("Input.dispatchKeyEvent", type="rawKeyDown", **common)
        else:
            code = f"Key{key.upper()}" if key.isalpha() else ""
            common = {"key": key, "code": code, "windowsVirtualKeyCode": ord(key.upper()) if key.isalpha() else ord(key),
                      "modifiers": 8 if key.isupper() or key == "?" else 0}
            self.send("Input.dispatchKeyEvent", type="keyDown", text=key, unmodifiedText=key, **common)
        self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    def click(self, x: float, y: float) -> None:
        """A real left click at the page's CSS pixel (x, y)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left" if kind != "mouseMoved" else "none", clickCount=1)

    def allow_downloads(self, folder: Path) -> None:
        """Save what the page downloads into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(folder))
        except RuntimeError:  # older Chromium: the page-level form
            self.send("Page.setDownloadBehavior", behavior="allow", downloadPath=str(folder))

    def reload(self, ready: str = "document.body && document.body.dataset.ready === '1'", timeout: float = 60) -> None:
        self.evaluate("document.body.dataset.ready = ''")
        self.send("Page.reload")
        self.wait_for(f"({ready}) && Array.from(document.images).every(i => i.complete)", timeout)

    def screenshot(self, target: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
