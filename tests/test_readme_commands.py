"""Every command line the README and the guide (docs/*.md) show runs, as written but shrunk (`--epochs 1`,
`--steps 20`), so neither can drift from the code. The tiny-shakespeare download is served from the copy in
notebooks/data through the data cache (nothing is downloaded); a multi-process command runs as its two processes on
this machine."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("python -m jupyter_llm"):
                    commands.append(part)
    return list(dict.fromkeys(commands))  # a command shown twice runs once


def shrunk(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        flag = argv[i]
        if flag in ("--epochs", "--steps", "--eval-every") and i + 1 < len(argv):
            value = int(argv[i + 1])
            out += [flag, str({"--epochs": 1, "--steps": min(value, 20), "--eval-every": min(value, 10)}[flag])]
            i += 2
            continue
        out.append(flag)
        i += 1
    return out


def provide_inputs(argv: list[str], where: Path) -> None:
    """What a command names that the README made earlier: a repository file given by a relative path is copied
    into `where`; a `--model ./FOLDER` (the README saves one from Python first) is a tiny GPT-2 in Hugging Face's
    format, written by transformers with a byte-level BPE trained here."""
    for i, arg in enumerate(argv[:-1]):
        value = argv[i + 1]
        if arg == "--data" and (ROOT / value).is_file():
            (where / value).parent.mkdir(parents=True, exist_ok=True)
            (where / value).write_text((ROOT / value).read_text(encoding="utf-8")[:200_000], encoding="utf-8")
        if arg == "--model" and value.startswith(("./", "../")) and not (where / value).exists():
            pytest.importorskip("transformers")
            from tests.test_pretrained import _hf_gpt2, byte_level_bpe

            text = (ROOT / "notebooks" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:100_000]
            tok_dir = where / "tokenizer"
            tok_dir.mkdir()
            byte_level_bpe(text, tok_dir)
            block = int(argv[argv.index("--block-size") + 1]) if "--block-size" in argv else 64
            (where / value).mkdir(parents=True)
            _hf_gpt2(where / value, tok_dir, n_positions=block)


def test_the_readme_shows_command_lines():
    commands = readme_commands()
    assert len(commands) >= 4 and any("gpt-char-tiny" in c for c in commands), commands


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs(command, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tinyshakespeare.txt").write_bytes((ROOT / "notebooks" / "data" / "tinyshakespeare.txt").read_bytes())
    env = dict(os.environ, JUPYTER_LLM_DATA=str(cache), JUPYTER_LLM_COMPILE_CACHE="0")
    argv = shrunk(shlex.split(command)[1:])
    provide_inputs(argv, tmp_path)
    if argv[2] in ("generate", "evaluate"):  # on a folder an earlier README command wrote
        out = _run(argv, _written(argv[3], env, tmp_path), env)
        if argv[2] == "generate":
            assert out.startswith(argv[4]) and len(out) > len(argv[4]), out
        else:
            assert "loss" in json.loads(out.strip().splitlines()[-1]), out
        return
    if "--coordinator" in argv:  # one process per id, joined on this machine
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        at = argv.index("--coordinator")
        argv[at + 1] = f"127.0.0.1:{port}"
        at = argv.index("--process-id")
        procs = [subprocess.Popen([sys.executable, *argv[:at + 1], str(i), *argv[at + 2:]], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
        out = outs[0][0]
    else:
        out = _run(argv, tmp_path, env)
    assert '"reason": "completed"' in out.strip().splitlines()[-1], out[-2000:]
    if "--checkpoint" in argv:
        WRITTEN[argv[argv.index("--checkpoint") + 1]] = tmp_path


WRITTEN: dict = {}  # a --checkpoint folder a README command wrote -> the folder it ran in


def _run(argv: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _written(folder: str, env: dict, where: Path) -> Path:
    """Where the README command that writes `folder` ran (run now, shrunk, if it has not run in this session)."""
    if folder not in WRITTEN:
        writer = next(c for c in readme_commands() if f"--checkpoint {folder}" in c)
        _run(shrunk(shlex.split(writer)[1:]), where, env)
        WRITTEN[folder] = where
    return WRITTEN[folder]
