"""Open a run's report.html in headless Chromium: check it and render it to a PNG.

    python scripts/render_report.py runs/convnet-bn-.../report.html            # -> report.png
    python scripts/render_report.py report.html --out page.png --width 1200

It loads the page through the Chrome DevTools Protocol (a WebSocket, with the small
``websocket-client`` package of the test extra), collects every console message and uncaught
error, reads ``naturalWidth`` / ``naturalHeight`` of every image, and captures the whole page as a
PNG. It prints one line per problem and exits 1 if there is any (a console error or warning, a
JavaScript exception, an image that did not decode), 0 otherwise; 2 when no browser is found.

The browser is ``$CHROMIUM``, else the first of chromium, chromium-browser, google-chrome on the
PATH (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The Chromium executable, or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class _DevTools:
    """A headless Chromium and one WebSocket to its first page."""

    def __init__(self, browser: str, width: int, timeout: float):
        import websocket  # websocket-client

        self.profile = tempfile.mkdtemp(prefix="numcnn-chromium-")
        self.process = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--remote-debugging-port=0", "--hide-scrollbars",
             f"--user-data-dir={self.profile}", f"--window-size={width},1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        browser_url = None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                browser_url = match.group(1)
                break
            if not line and self.process.poll() is not None:
                break
        if browser_url is None:
            self.close()
            raise RuntimeError("headless Chromium did not start (no DevTools address)")
        port = re.search(r":(\d+)/", browser_url).group(1)
        page_url = None
        import urllib.request

        while time.monotonic() < deadline and page_url is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as answer:
                pages = [t for t in json.load(answer) if t.get("type") == "page"]
            if pages:
                page_url = pages[0]["webSocketDebuggerUrl"]
            else:
                time.sleep(0.1)
        self.socket = websocket.create_connection(page_url, timeout=timeout)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        self.socket.settimeout(timeout)
        while True:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get("method") == event:
                return

    def close(self) -> None:
        try:
            if getattr(self, "socket", None) is not None:
                self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def check_page(html_path, png_path=None, width: int = 1200, timeout: float = 60.0) -> dict:
    """Load ``html_path`` in headless Chromium.

    Returns ``{"console": [messages of level warning/error], "exceptions": [...],
    "images": [(alt, naturalWidth, naturalHeight)], "problems": [...], "title": ...}``, and
    writes a full-page screenshot to ``png_path`` when given.

    Raises:
        RuntimeError: no browser, or it did not answer.
    """
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found (apt-get install chromium, or set $CHROMIUM)")
    url = Path(html_path).resolve().as_uri()
    tools = _DevTools(browser, width, timeout)
    try:
        tools.call("Page.enable")
        tools.call("Runtime.enable")
        tools.call("Log.enable")
        tools.call("Page.navigate", url=url)
        tools.wait_for("Page.loadEventFired", timeout)
        images = tools.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])"
        ))["result"]["value"]
        title = tools.call("Runtime.evaluate", expression="document.title",
                           returnByValue=True)["result"]["value"]
        if png_path is not None:
            size = tools.call("Page.getLayoutMetrics")["cssContentSize"]
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": size["width"],
                                    "height": size["height"], "scale": 1})
            Path(png_path).write_bytes(base64.b64decode(shot["data"]))
        events = list(tools.events)
    finally:
        tools.close()
    console = []
    exceptions = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning",
                                                                           "assert"):
            console.append(" ".join(str(a.get("value", a.get("description", "")))
                                    for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            console.append(params["entry"].get("text", ""))
        elif method == "Runtime.exceptionThrown":
            exceptions.append(params["exceptionDetails"].get("text", "exception"))
    problems = [f"console: {m}" for m in console] + [f"exception: {m}" for m in exceptions]
    problems += [f"image {alt!r} did not decode (naturalWidth {w})" for alt, w, h in images
                 if not w or not h]
    return {"console": console, "exceptions": exceptions, "images": images, "title": title,
            "problems": problems}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", help="the report.html to open")
    parser.add_argument("--out", help="the PNG to write (default: beside the HTML, .png)")
    parser.add_argument("--width", type=int, default=1200, help="page width in CSS pixels")
    args = parser.parse_args(argv)
    if find_browser() is None:
        print("render_report: no Chromium found (apt-get install chromium, or set $CHROMIUM)",
              file=sys.stderr)
        return 2
    out = args.out or str(Path(args.html).with_suffix(".png"))
    result = check_page(args.html, out, width=args.width)
    print(f"{args.html}: title {result['title']!r}, {len(result['images'])} images, "
          f"screenshot {out}")
    for problem in result["problems"]:
        print(f"  problem: {problem}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
