"""Regenerate the shipped prompts (``prompts/*.wav``) from their words in ``shared/prompts.py``.

    python -m devtools.prompts            # write prompts/*.wav
    python -m devtools.prompts --check    # regenerate into a temporary folder, compare bytes

Needs Debian's ``espeak-ng`` (speech) and ``sox`` (resampling): ``apt-get install espeak-ng sox``.
espeak-ng speaks at 22 050 Hz; sox converts to what Graph plays (WAV, PCM 16-bit, mono, 16 kHz)
with dithering off (``-D``) so the same tools give the same bytes. Only for regenerating: the
app and the tests use the committed files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from shared.prompts import PROMPTS_DIR, SAMPLE_RATE, SHIPPED, wav_format_problem

VOICE = "en-us"
WORDS_PER_MINUTE = "155"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is missing: apt-get install espeak-ng sox")
    return path


def generate(name: str, text: str, out_dir: Path) -> Path:
    """Speak ``text`` and write ``out_dir/name.wav`` in Graph's format."""
    espeak, sox = _require("espeak-ng"), _require("sox")
    target = out_dir / f"{name}.wav"
    if not text:  # one second of silence (the confirmation's wait)
        subprocess.run(
            [sox, "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
             str(target), "trim", "0", "1"],
            check=True,
        )  # fmt: skip
        return target
    with tempfile.TemporaryDirectory() as scratch:
        spoken = Path(scratch) / "spoken.wav"
        subprocess.run(
            [espeak, "-v", VOICE, "-s", WORDS_PER_MINUTE, "-w", str(spoken), text], check=True
        )
        subprocess.run(
            [
                sox, "-D", str(spoken),
                "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
                str(target),
                "gain", "-n", "-3",  # normalise to -3 dBFS: the same loudness for every prompt
            ],
            check=True,
        )  # fmt: skip
    problem = wav_format_problem(target.read_bytes()[:4096])
    if problem:
        raise SystemExit(f"{target}: {problem}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files")
    args = parser.parse_args(argv)
    if not args.check:
        PROMPTS_DIR.mkdir(exist_ok=True)
        for prompt in SHIPPED.values():
            path = generate(prompt.name, prompt.text, PROMPTS_DIR)
            print(f"{path.relative_to(PROMPTS_DIR.parent)}: {path.stat().st_size} bytes")
        return 0
    different = []
    with tempfile.TemporaryDirectory() as fresh:
        for prompt in SHIPPED.values():
            again = generate(prompt.name, prompt.text, Path(fresh)).read_bytes()
            committed = PROMPTS_DIR / f"{prompt.name}.wav"
            if not committed.exists() or committed.read_bytes() != again:
                different.append(prompt.name)
    if different:
        print(f"differ from a fresh generation: {', '.join(different)}", file=sys.stderr)
        return 1
    print(f"{len(SHIPPED)} prompts match a fresh generation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
