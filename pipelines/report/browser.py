"""Headless Chromium (Debian's `chromium`): a report as a person sees it.

`screenshot` renders a page to a PNG (for the README and for checking the layout);
`rendered_text` returns the DOM after Chromium parsed and laid out the page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipelines.errors import InfraError

WIDTH = 1100
MAX_HEIGHT = 9000  # the viewport; blank rows below the page are cropped afterwards


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    msg = "Chromium not found: run `infra/setup.sh --test` (Debian package chromium)"
    raise InfraError(msg)


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="safewatch-chromium-") as profile:
        cmd = [
            find_chromium(),
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *(["--no-sandbox"] if os.geteuid() == 0 else []),  # Chromium's sandbox refuses root
            *args,
        ]
        result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
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


def rendered_text(html: Path) -> str:
    """The page's DOM as Chromium serializes it after loading it."""
    return _run(["--dump-dom", html.resolve().as_uri()]).stdout.decode("utf-8")
