"""Headless Chromium (Debian's `chromium`): a report as a person sees it.

`screenshot` renders a page to a PNG (for the README and for checking the layout);
`print_pdf` prints it as Chromium's print dialog would (the page's own @page size and
margins, no header or footer); `rendered_text` returns the DOM after Chromium parsed and
laid out the page; `evaluate` loads it at a given width and media type (screen or print)
and returns what a JavaScript expression computes over the laid-out page, through the
DevTools protocol on a pipe (`--remote-debugging-pipe`: no port, no extra package).

Chromium refuses to start as root with its sandbox on, so `--no-sandbox` is added then,
and only then. A missing Chromium, a crash or a hang is an `InfraError` saying what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.errors import InfraError

WIDTH = 1100
MAX_HEIGHT = 9000  # the viewport; blank rows below the page are cropped afterwards
TIMEOUT_S = 120.0


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    msg = (
        "Chromium not found (needed for --pdf and --screenshot): install the Debian package "
        "chromium (`apt-get install -y chromium`, or `infra/setup.sh --test`)"
    )
    raise InfraError(msg)


def chromium_command(chromium: str, profile: str, args: list[str], *, euid: int) -> list[str]:
    """The command line of one headless run; `--no-sandbox` only for root (euid 0), whom
    Chromium's sandbox refuses.
    """
    return [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *(["--no-sandbox"] if euid == 0 else []),
        *args,
    ]


def _run(args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="safewatch-chromium-") as profile:
        cmd = chromium_command(chromium, profile, args, euid=os.geteuid())
        try:
            result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            msg = f"chromium did not finish within {timeout:g} s ({chromium})"
            raise InfraError(msg) from exc
        except OSError as exc:
            msg = f"cannot start chromium ({chromium}): {exc}"
            raise InfraError(msg) from exc
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        msg = f"chromium failed ({result.returncode}): {' / '.join(tail)}"
        raise InfraError(msg)
    return result


def screenshot(html: Path, png: Path, *, width: int = WIDTH) -> Path:
    """Render `html` (a local file) to `png`, `width` px wide, cropped to the page's content.

    Saved with a 256-colour palette: a third of the size, the same to the eye.
    """
    from PIL import Image, ImageChops

    png.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            f"--window-size={width},{MAX_HEIGHT}",
            f"--screenshot={png.resolve()}",
            html.resolve().as_uri(),
        ]
    )
    if not png.is_file():
        msg = f"chromium wrote no screenshot to {png}"
        raise InfraError(msg)
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box is not None:
        rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + 24)))
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return png


def print_pdf(html: Path, pdf: Path) -> Path:
    """Print `html` (a local file) to `pdf` as Chromium prints it: paper size and margins
    from the page's @page rule, print styles, backgrounds, no header or footer line.

    Written to a temporary name and renamed, so a reader never sees half a PDF.
    """
    pdf.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=pdf.parent, prefix=f".{pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _run(
            [
                "--no-pdf-header-footer",
                "--print-to-pdf-no-header",  # the same, for Chromium before 111
                f"--print-to-pdf={tmp}",
                html.resolve().as_uri(),
            ]
        )
        with open(tmp, "rb") as f:
            if f.read(5) != b"%PDF-":
                msg = f"chromium wrote no PDF for {html}"
                raise InfraError(msg)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, pdf)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return pdf


def rendered_text(html: Path) -> str:
    """The page's DOM as Chromium serializes it after loading it."""
    return _run(["--dump-dom", html.resolve().as_uri()]).stdout.decode("utf-8")


def evaluate(
    html: Path,
    expression: str,
    *,
    width: int = WIDTH,
    height: int = 900,
    media: str = "screen",
    timeout: float = TIMEOUT_S,
) -> Any:
    """Load `html` (a local file) in a `width` x `height` CSS-pixel viewport with the CSS
    media type `media` ('screen' or 'print'), wait for its load event, and return the JSON
    value of the JavaScript `expression` evaluated in the page.

    Raises InfraError when Chromium is missing, fails or takes longer than `timeout`, and
    when the expression throws (with its message).
    """
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="safewatch-chromium-") as profile:
        cmd = chromium_command(
            chromium, profile, ["--remote-debugging-pipe", "about:blank"], euid=os.geteuid()
        )
        session = _DevTools(cmd, time.monotonic() + timeout)
        try:
            target = session.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = session.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            session.call("Page.enable", session=sid)
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            session.call("Emulation.setDeviceMetricsOverride", metrics, session=sid)
            session.call("Emulation.setEmulatedMedia", {"media": media}, session=sid)
            session.call("Page.navigate", {"url": html.resolve().as_uri()}, session=sid)
            session.wait_for_event("Page.loadEventFired")
            result = session.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True, "awaitPromise": True},
                session=sid,
            )
        finally:
            session.close()
    if "exceptionDetails" in result:
        details = result["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text")
        msg = f"the expression failed in {html.name}: {text}"
        raise InfraError(msg)
    return result["result"].get("value")


_ON_3_AND_4 = (
    "import os, sys\n"
    "a, b = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(a, 3)\n"
    "os.dup2(b, 4)\n"
    "os.close(a)\n"
    "os.close(b)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class _DevTools:
    """Chromium started with `--remote-debugging-pipe`: it reads the DevTools protocol's
    JSON messages, each ended by a NUL byte, on its file descriptor 3 and writes on 4.
    """

    def __init__(self, cmd: list[str], deadline: float) -> None:
        self.deadline = deadline
        to_chromium, self._send = os.pipe()
        self._receive, from_chromium = os.pipe()
        # Above 4, so that placing them on 3 and 4 cannot overwrite one another; a small
        # Python trampoline does that and execs Chromium (no preexec_fn: it is unsafe with
        # threads, and subprocess may hold 3 or 4 itself while it starts the child).
        child_in = fcntl.fcntl(to_chromium, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chromium, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chromium)
        os.close(from_chromium)
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _ON_3_AND_4,
                    f"{child_in}",
                    f"{child_out}",
                    *cmd,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(child_in, child_out),
            )
        except OSError as exc:
            for fd in (self._send, self._receive):
                os.close(fd)
            msg = f"cannot start chromium ({cmd[0]}): {exc}"
            raise InfraError(msg) from exc
        finally:
            os.close(child_in)
            os.close(child_out)
        self._buffer = b""
        self._next_id = 0

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._send, json.dumps(message).encode() + b"\0")
        except BrokenPipeError as exc:
            msg = f"chromium exited before {method}"
            raise InfraError(msg) from exc
        wanted = self._next_id
        reply = self._read_until(lambda m: m.get("id") == wanted, method)
        if "error" in reply:
            msg = f"chromium refused {method}: {reply['error'].get('message')}"
            raise InfraError(msg)
        result: dict[str, Any] = reply.get("result", {})
        return result

    def wait_for_event(self, method: str) -> None:
        self._read_until(lambda m: m.get("method") == method, method)

    def _read_until(
        self, wanted: Callable[[dict[str, Any]], bool], waiting_for: str
    ) -> dict[str, Any]:
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message: dict[str, Any] = json.loads(raw)
                if wanted(message):
                    return message
            left = self.deadline - time.monotonic()
            ready, _, _ = select.select([self._receive], [], [], max(0.0, left))
            if not ready:
                msg = f"chromium did not answer {waiting_for} in time"
                raise InfraError(msg)
            chunk = os.read(self._receive, 1 << 16)
            if not chunk:
                msg = f"chromium exited while waiting for {waiting_for}"
                raise InfraError(msg)
            self._buffer += chunk

    def close(self) -> None:
        try:
            os.write(self._send, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass  # already gone
        os.close(self._send)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._receive)
