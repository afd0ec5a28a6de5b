"""Every Python block and ``hashplug`` command of the README runs as written.

Blocks run in a fresh process each, in a scratch folder that has ``../shared`` beside it (as a
checkout does), so the README's relative paths hold. Commands that run for minutes (the main job,
``bench``, the benchmarks) and the setup / lint lines are listed in ``LONG`` and checked only to
parse (``--help``), with the reason shown.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
README = (REPO / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent
#: command prefixes that take minutes or change the machine: their --help must work instead
LONG = {
    "hashplug run": "the main job (about 5 minutes)",
    "hashplug bench": "the paper benchmark (minutes per run)",
    "hashplug compare": "the decision report (minutes per run)",
    "python benchmarks/": "a benchmark (minutes)",
    "bash scripts/setup.sh": "installs the environment the tests already run in",
    "ruff": "lint, run separately",
    "mypy": "type check, run separately from the repository root",
    "python -m pytest": "this test suite itself",
    "hashplug ingest --engine ray": "needs a folder of shards (tests/test_distributed.py runs it)",
}
#: A block right after ``<!-- readme-test: skip REASON -->`` is an example for another machine.
SKIP_MARK = re.compile(r"<!-- readme-test: skip (.*?) -->\s*$")


def _blocks(lang: str) -> list[str]:
    """Fenced blocks of ``lang``, without those marked to skip."""
    out = []
    for m in re.finditer(rf"```{lang}\n(.*?)```", README, flags=re.S):
        if not SKIP_MARK.search(README[: m.start()].rstrip() + "\n"):
            out.append(m.group(1))
    return out


PY_BLOCKS = _blocks("python")
COMMANDS = [
    line.split("  #")[0].strip()
    for block in _blocks("bash")
    for line in block.splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED.exists():
        pytest.skip(f"the README's examples read ../shared/data, absent at {SHARED}")
    root = tmp_path_factory.mktemp("readme")
    (root / "shared").symlink_to(SHARED)
    work = root / "work"
    work.mkdir()
    return work


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["HASHPLUG_CACHE"] = env.get("HASHPLUG_CACHE", str(Path.home() / ".cache" / "hashplug"))
    return env


@pytest.mark.parametrize("n", range(len(PY_BLOCKS)))
def test_python_block_runs(scratch: Path, n: int) -> None:
    code = PY_BLOCKS[n]
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=scratch,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, (
        f"README python block {n} failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    )


def test_skipped_blocks_say_why() -> None:
    reasons = SKIP_MARK.findall(README) + re.findall(r"<!-- readme-test: skip (.*?) -->", README)
    assert all(r.strip() for r in reasons)


def test_commands_run_in_order(scratch: Path) -> None:
    ran, checked = 0, 0
    for cmd in COMMANDS:
        for part in cmd.split("&&"):
            argv = shlex.split(part.strip())
            text = " ".join(argv).replace(".venv/bin/", "")
            long = next((why for prefix, why in LONG.items() if text.startswith(prefix)), None)
            if argv[0].startswith(".venv/bin/"):
                argv[0] = str(VENV_BIN / argv[0].split("/")[-1])
            if long is not None:
                if text.startswith("hashplug "):
                    r = subprocess.run(
                        argv[:2] + ["--help"],
                        cwd=scratch,
                        env=_env(),
                        capture_output=True,
                        text=True,
                    )
                    assert r.returncode == 0, f"{text} --help failed: {r.stderr}"
                checked += 1
                continue
            r = subprocess.run(
                argv, cwd=scratch, env=_env(), capture_output=True, text=True, timeout=900
            )
            assert r.returncode == 0, f"README command failed: {part}\n{r.stderr[-3000:]}"
            ran += 1
    assert ran >= 5 and checked >= 3


def _key_patterns() -> list[str]:
    """The backticked keys in the first column of the README's ``results.json`` table."""
    start = README.index("`results.json` keys (")
    rows = re.findall(r"^\| (`.*?) \|", README[start:].split("\n\n", 2)[1], flags=re.M)
    return [p for row in rows for p in re.findall(r"`([^`]+)`", row)]


def _expand(pattern: str) -> list[str]:
    """``a.{b,c}[_d]`` -> ``a.b``, ``a.b_d``, ``a.c``, ``a.c_d``."""
    m = re.search(r"\{([^{}]*)\}|\[([^\[\]]*)\]", pattern)
    if m is None:
        return [pattern]
    alts = m.group(1).split(",") if m.group(1) is not None else ["", m.group(2)]
    return [e for a in alts for e in _expand(pattern[: m.start()] + a + pattern[m.end() :])]


def _leaves(obj: object, prefix: str = "") -> list[str]:
    """Dotted paths of a JSON object's values; a stats object ``{mean, std, values}`` is one."""
    if not isinstance(obj, dict) or set(obj) == {"mean", "std", "values"}:
        return [prefix]
    return [leaf for k, v in obj.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else k)]


class _PixelEncoder:
    """A real, weak image encoder: 7x7 average-pooled grey pixels (49-d)."""

    name = "pixels:7x7"

    def encode_images(self, images, batch_size=64, progress=True):
        a = np.asarray(images, np.float32)
        return a.reshape(len(a), 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(a), 49)


def test_results_json_keys_equal_the_readme_table(tmp_path: Path) -> None:
    """``hashplug run``'s writer path (encode -> run_bench) on 300 Fashion-MNIST images."""
    import json

    from hashplug.bench.run import run_bench
    from hashplug.bench.sources import FASHION_MNIST_ROOT, embed_split, encoder_info, load_source

    if not Path(FASHION_MNIST_ROOT).is_dir():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({FASHION_MNIST_ROOT})")
    split = load_source("fashion-mnist").subsample(300, 20)
    enc = _PixelEncoder()
    ds, cache, timing = embed_split(split, enc, cache_dir=tmp_path, progress=False)
    fresh = encoder_info(enc, ds, cache, timing)
    cached = encoder_info(enc, *embed_split(split, enc, cache_dir=tmp_path, progress=False))
    assert fresh["cached"] is False and fresh["items_per_s"] > 0
    assert cached["cached"] is True and cached["encode_s"] is None and set(cached) == set(fresh)
    _, paths = run_bench(
        cache, tmp_path / "out", hashers=["hashing-baseline"], bits=[16], k=50, seeds=2, backend_bits=16,
        backends=["local"], oversamples=[2], progress=False, extra={"encoder": cached},
    )  # fmt: skip
    leaves = _leaves(json.loads(paths["json"].read_text()))
    patterns = [e for p in _key_patterns() for e in _expand(p)]
    regexes = {p: re.compile(re.sub(r"<[^>]+>", "[^.]+", re.escape(p)) + "$") for p in patterns}
    undocumented = [k for k in leaves if not any(r.match(k) for r in regexes.values())]
    absent = [p for p, r in regexes.items() if not any(r.match(k) for k in leaves)]
    assert len(patterns) > 40 and undocumented == [] and absent == []


def test_readme_leaves_no_untracked_files(scratch: Path) -> None:
    """Run last: what the blocks and commands above wrote is ignored by .gitignore.

    They wrote into the scratch folder that stands for a checkout's root, so ``git status`` of a
    checkout where a user runs them stays clean.
    """
    import shutil

    if shutil.which("git") is None or not (REPO / ".gitignore").is_file():
        pytest.skip("needs git and the repository's .gitignore")
    written = sorted(p.name + ("/" if p.is_dir() else "") for p in scratch.iterdir())
    if not written:
        pytest.skip("no README block or command ran in this session")
    r = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "--verbose", "--non-matching",
         *written],
        capture_output=True, text=True,
    )  # fmt: skip
    tracked = [ln.split("\t")[1] for ln in r.stdout.splitlines() if ln.startswith("::")]
    assert r.returncode in (0, 1) and written and tracked == [], (written, r.stderr)
