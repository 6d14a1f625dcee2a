"""Checks of a written report: on its HTML alone, and rendered in headless Chromium.

* :func:`check_html` — from ``index.html``, every page it links to: every ``<img>`` names a
  file that exists and is a valid PNG (PIL verifies it), every link resolves (a page or a
  file that exists; ``#id`` to an element of that page). Needs nothing but the files.
* :func:`check_in_browser` — the same pages opened in headless Chromium over the DevTools
  protocol (``--remote-debugging-pipe``: JSON messages on fds 3/4, no extra library): every
  image has loaded (``naturalWidth > 0``), every link navigates without a network error, and a
  linked PNG renders as an image. Returns the pages it visited.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

from PIL import Image

# The flags that work on this workplace's machines (no network: background services off).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium() -> str | None:
    """The Chromium binary, if one is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "img" and found.get("src"):
            self.images.append(str(found["src"]))
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def check_html(index: Path) -> dict[str, int]:
    """Every image and link of ``index`` and the pages it links to; raises AssertionError."""
    root = index.parent.resolve()
    todo, seen = [index.resolve()], set()
    counts = {"pages": 0, "images": 0, "links": 0}
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        counts["pages"] += 1
        found = _parse(page)
        for src in found.images:
            path = (page.parent / unquote(src)).resolve()
            assert path.is_relative_to(root), f"{page.name}: image {src} is outside the report"
            assert path.is_file(), f"{page.name}: image {src} does not exist"
            with Image.open(path) as image:
                assert image.format == "PNG", f"{page.name}: {src} is {image.format}, not PNG"
                image.verify()
            counts["images"] += 1
        for href in found.links:
            target, fragment = urldefrag(href)
            assert not urlparse(target).scheme, f"{page.name}: link {href} leaves the report"
            path = (page.parent / unquote(target)).resolve() if target else page
            assert path.is_file(), f"{page.name}: link {href} does not resolve"
            if fragment:
                assert fragment in _parse(path).ids, f"{page.name}: no #{fragment} in {path.name}"
            if path.suffix == ".html":
                todo.append(path)
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.verify()
            counts["links"] += 1
    return counts


def _above(fd: int, lowest: int = 10) -> int:
    """``fd`` moved to a descriptor >= ``lowest`` (close-on-exec); the old one is closed."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class _DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="oxy-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # The child's ends move above fd 9 first: a pipe end that already is fd 3 or 4 (a
        # process with few files open) would be clobbered by the other's dup2, or keep its
        # close-on-exec flag (dup2 onto itself changes nothing) and vanish at exec.
        commands_read, replies_write = _above(commands_read), _above(replies_write)

        def fds() -> None:  # the child reads commands on fd 3 and answers on fd 4
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=fds,  # the test process runs no other threads meanwhile
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call("Page.enable", session=True)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = False
    ) -> Any:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"Chromium did not answer {method}")
            ready, _, _ = select.select([self._replies], [], [], left)
            if ready:
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise AssertionError("Chromium closed the DevTools pipe")
                self._buffer += chunk

    def evaluate(self, expression: str) -> Any:
        found = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=True,
        )
        if "exceptionDetails" in found:
            raise AssertionError(f"page script failed: {found['exceptionDetails']}")
        return found["result"].get("value")

    def open(self, url: str) -> None:
        navigated = self.call("Page.navigate", {"url": url}, session=True)
        assert not navigated.get("errorText"), f"{url}: {navigated['errorText']}"
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            time.sleep(0.05)

    def close(self) -> None:
        try:
            os.close(self._commands)
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._replies)
            shutil.rmtree(self.profile, ignore_errors=True)


_PAGE_STATE = """(async () => {
  await Promise.all([...document.images].map(i => i.complete ? null :
      new Promise(done => { i.onload = i.onerror = done; })));
  return {
    images: [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  };
})()"""


def check_in_browser(index: Path, binary: str) -> dict[str, int]:
    """Open ``index`` and every page it links to in headless Chromium; AssertionError on an
    image that did not load or a link that does not navigate."""
    browser = _DevTools(binary)
    counts = {"pages": 0, "images": 0, "links": 0}
    try:
        todo, seen, checked = [index.resolve().as_uri()], set(), set()
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            browser.open(url)
            state = browser.evaluate(_PAGE_STATE)
            counts["pages"] += 1
            for src, width in state["images"]:
                assert width > 0, f"{url}: image {src} did not load"
                counts["images"] += 1
            for href in state["links"]:
                target, fragment = urldefrag(href)
                if href in checked:
                    continue
                checked.add(href)
                counts["links"] += 1
                if target.endswith(".html"):
                    if fragment:
                        browser.open(target)
                        ids = browser.evaluate(_PAGE_STATE)["ids"]
                        assert fragment in ids, f"{url}: link {href}: no such element"
                    todo.append(target)
                else:  # a plot: it must render as an image
                    browser.open(target)
                    width = browser.evaluate(
                        "document.images.length ? document.images[0].naturalWidth : 0"
                    )
                    assert width > 0, f"{url}: link {href} does not show an image"
        return counts
    finally:
        browser.close()
