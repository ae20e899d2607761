"""Every detector pattern, every screen and the combined screen find the same spans in Java
(java.util.regex, `Matcher.find`) as in Python, on the test cases, obfuscated values after
normalisation, adversarial random texts and real prompts. Skipped without a JDK.
"""

from __future__ import annotations

import base64
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.privacy.detectors import DETECTORS, screen_pattern
from pipelines.privacy.normalise import normalise
from tests.unit.test_privacy_detectors import ATOMS, NEGATIVES, POSITIVES
from tests.unit.test_privacy_evasion import AFTER, BEFORE, CASES
from tests.unit.test_privacy_precision import DATASETS

JAVA = r"""
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;
import java.util.regex.*;

public class Spans {
    public static void main(String[] args) throws Exception {
        List<String> lines = Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8);
        Base64.Decoder dec = Base64.getDecoder();
        int np = Integer.parseInt(lines.get(0));
        List<Pattern> patterns = new ArrayList<>();
        for (int i = 1; i <= np; i++) {
            String p = new String(dec.decode(lines.get(i)), StandardCharsets.UTF_8);
            patterns.add(Pattern.compile(p));
        }
        StringBuilder out = new StringBuilder();
        for (int i = np + 1; i < lines.size(); i++) {
            String text = new String(dec.decode(lines.get(i)), StandardCharsets.UTF_8);
            for (Pattern p : patterns) {
                Matcher m = p.matcher(text);
                while (m.find()) out.append(m.start()).append(',').append(m.end()).append(';');
                out.append('\n');
            }
        }
        Files.write(Paths.get(args[1]), out.toString().getBytes(StandardCharsets.UTF_8));
    }
}
"""


def _texts() -> list[str]:
    texts = [t for t, _, _ in POSITIVES] + NEGATIVES
    texts += [normalise(f"{BEFORE}{p.values[0]}{AFTER}") for p in CASES]
    rng = random.Random(1)
    atoms = [*ATOMS, "'", "&", "(", "eyJ", "eyJhbGciOiJIUzI1NiJ9", ".", "%40"]
    texts += ["".join(rng.choices(atoms, k=rng.randint(1, 30))) for _ in range(3000)]
    texts += [normalise(t.text) for load, _ in DATASETS.values() for t in load()][:1500]
    # Java indexes UTF-16 code units, Python code points: compare on the BMP only.
    return [t for t in texts if all(ord(c) < 0xD800 or 0xE000 <= ord(c) < 0x10000 for c in t)]


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK")
def test_java_finds_the_same_spans_as_python(tmp_path: Path) -> None:
    patterns = [d.pattern for d in DETECTORS]
    patterns += [d.screen for d in DETECTORS if d.screen is not None]
    patterns.append(screen_pattern())
    texts = _texts()

    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    (tmp_path / "Spans.java").write_text(JAVA)
    subprocess.run(["javac", "Spans.java"], cwd=tmp_path, check=True)
    lines = [str(len(patterns)), *map(b64, patterns), *map(b64, texts)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    subprocess.run(
        ["java", "-cp", str(tmp_path), "Spans", "in.txt", "out.txt"],
        cwd=tmp_path,
        check=True,
    )
    java = (tmp_path / "out.txt").read_text().split("\n")
    compiled = [re.compile(p) for p in patterns]
    python = [
        "".join(f"{m.start()},{m.end()};" for m in rx.finditer(t)) for t in texts for rx in compiled
    ]
    assert len(texts) > 4000
    mismatches = [
        (texts[i // len(patterns)], patterns[i % len(patterns)][:60], py, jv)
        for i, (py, jv) in enumerate(zip(python, java, strict=False))
        if py != jv
    ]
    assert mismatches == []
    assert len(java) == len(python) + 1  # the last line ends with a newline
