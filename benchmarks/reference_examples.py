#!/usr/bin/env python3
"""Do the reference's own example inputs train with ``lam train``?

Takes the ``examples/`` folder of a DeePMD-kit repository (by default the local mirror at
``/work/.mirror/deepmodeling+deepmd-kit/repo``, its ``HEAD``, extracted with ``git archive``
into a temporary folder; ``--examples DIR`` uses an unpacked folder instead), finds every
training input in it (a JSON/YAML file with ``model`` and ``training`` sections), and for each:

1. writes a copy into its own run folder with the step count cut to one (``numb_steps`` 1,
   and ``warmup_steps`` 0, which must be shorter than the run; an epoch count ``num_epoch`` /
   ``num_epoch_dict`` is scaled down to a small fraction of an epoch, which both codes round up
   to a step or two) and every relative path that names an
   existing file or folder next to the input made absolute (data systems, pair tables, ...);
   nothing else is changed;
2. runs ``dp --pt train`` of the installed reference on it (its verdict says whether the input
   is one the reference's PyTorch backend accepts: TensorFlow-only inputs and descriptors the
   installed release does not know fail here and are not counted);
3. runs ``lam train`` on the same file in a fresh folder.

Prints one row per input: input, reference ok?, lamkit ok?, and the error line of a failing
run, then ``lamkit: N of M`` over the inputs the reference trains. ``--markdown FILE`` writes
the table as Markdown, ``--json FILE`` the raw results; ``--reference-results FILE`` reuses a
previous ``--json`` output for the reference's verdicts (the slow half), so only lamkit runs.

    python3 benchmarks/reference_examples.py
    python3 benchmarks/reference_examples.py --only dpa3 --only se_e3 --keep /tmp/runs
    python3 benchmarks/reference_examples.py --reference-results last.json --json now.json

Runs are serial, one thread each (``--threads``), and stop after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MIRROR = Path("/work/.mirror/deepmodeling+deepmd-kit/repo")
SRC = Path(__file__).resolve().parents[1] / "src"  # lam runs this tree's lamkit
EPOCH_FRACTION = 1e-3  # of the largest epoch count: ceil() makes it one or two steps


@dataclass
class Result:
    """Outcome of one example input."""

    input: str
    reference_ok: bool | None  # None: not run
    lamkit_ok: bool | None
    reference_error: str = ""
    lamkit_error: str = ""
    reference_s: float = 0.0
    lamkit_s: float = 0.0


def extract_examples(repo: Path, rev: str, dest: Path) -> Path:
    """``git archive REV examples`` of the git directory ``repo`` unpacked under ``dest``."""
    archive = subprocess.run(
        ["git", "--git-dir", str(repo), "archive", rev, "examples"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "examples"


def read_input(path: Path) -> dict | None:
    """The parsed input file, or None when it is not a training input."""
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - not an input file at all
        return None
    if isinstance(data, dict) and "model" in data and "training" in data:
        return data
    return None


def find_inputs(examples: Path) -> list[Path]:
    """Every training input under ``examples``, sorted by path."""
    files = [p for ext in ("*.json", "*.yaml", "*.yml") for p in examples.rglob(ext)]
    return sorted(p for p in files if read_input(p) is not None)


def _absolute_paths(node: object, base: Path) -> object:
    """``node`` with every relative string that names an existing path under ``base`` made
    absolute (lists and dicts recursively)."""
    if isinstance(node, dict):
        return {k: _absolute_paths(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_paths(v, base) for v in node]
    if isinstance(node, str) and node and not os.path.isabs(node) and "\n" not in node:
        candidate = base / node
        try:
            if candidate.exists() and node not in (".", ".."):
                return str(candidate.resolve())
        except OSError:
            return node
    return node


def shorten(config: dict) -> dict:
    """Cut the run to a step or two: ``numb_steps`` 1, or epoch counts scaled down."""
    training = config["training"]
    epoch_keys = [
        k for k in ("num_epoch", "num_epochs", "numb_epoch", "numb_epochs") if k in training
    ]
    if "num_epoch_dict" in training:
        counts = training["num_epoch_dict"]
        top = max(float(v) for v in counts.values())
        training["num_epoch_dict"] = {k: float(v) * EPOCH_FRACTION / top for k, v in counts.items()}
    elif epoch_keys:
        for key in epoch_keys:
            training[key] = EPOCH_FRACTION
    else:
        training["numb_steps"] = 1
        lr = config.get("learning_rate")
        if isinstance(lr, dict) and lr.get("warmup_steps"):
            lr["warmup_steps"] = 0  # the reference refuses warm-up longer than the run
        for alias in ("stop_batch", "numb_batch"):
            if alias in training:
                del training["numb_steps"]
                training[alias] = 1
    return config


def prepare(path: Path, dest: Path) -> Path:
    """Write the shortened, path-resolved copy of ``path`` as ``dest/input.json``."""
    config = read_input(path)
    assert config is not None
    config = shorten(_absolute_paths(config, path.parent))  # type: ignore[arg-type]
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "input.json"
    out.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def error_line(log: str) -> str:
    """The most telling line of a failed run's output: the last line naming an error, else the
    last non-empty line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for line in reversed(lines):
        low = line.lower()
        if "error" in low or "exception" in low or "refused" in low or "not supported" in low:
            return line[:300]
    return lines[-1][:300] if lines else ""


def run_tool(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[bool, str, float]:
    """Run ``cmd`` in ``cwd``; (success, error line, seconds)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    log = proc.stdout + "\n" + proc.stderr
    (cwd / "run.log").write_text(log, encoding="utf-8")
    if proc.returncode == 0:
        return True, "", seconds
    return False, error_line(log) or f"exit status {proc.returncode}", seconds


def tool_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    )
    return env


def markdown(results: list[Result]) -> str:
    def mark(ok: bool | None) -> str:
        return "-" if ok is None else ("yes" if ok else "no")

    rows = ["| input | reference ok? | lamkit ok? | error line |", "|---|---|---|---|"]
    for r in results:
        err = r.lamkit_error if r.reference_ok else (r.reference_error or r.lamkit_error)
        err = err.replace("|", "\\|")
        rows.append(f"| {r.input} | {mark(r.reference_ok)} | {mark(r.lamkit_ok)} | {err} |")
    return "\n".join(rows) + "\n"


def summary(results: list[Result]) -> str:
    counted = [r for r in results if r.reference_ok]
    ok = sum(1 for r in counted if r.lamkit_ok)
    extra = sum(1 for r in results if r.reference_ok is False and r.lamkit_ok)
    return (
        f"lamkit: {ok} of {len(counted)} inputs the reference trains"
        f" ({len(results)} training inputs found; lamkit also trains {extra} the reference refuses)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=MIRROR, help="git directory of DeePMD-kit")
    ap.add_argument("--rev", default="HEAD", help="revision of --repo (default HEAD)")
    ap.add_argument("--examples", type=Path, help="an unpacked examples folder instead")
    ap.add_argument("--only", action="append", default=[], help="substring of the input path")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference-results", type=Path, help="reuse a previous --json output")
    ap.add_argument(
        "--skip-lamkit-if-refused",
        action="store_true",
        help="do not run lamkit on inputs the reference refuses",
    )
    ap.add_argument("--keep", type=Path, help="keep the run folders here")
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = tool_env(args.threads)
    known: dict[str, dict] = {}
    if args.reference_results:
        known = {r["input"]: r for r in json.loads(args.reference_results.read_text())}
    work = Path(tempfile.mkdtemp(prefix="lamkit-refex-"))
    runs = args.keep or work / "runs"
    try:
        examples = args.examples or extract_examples(args.repo, args.rev, work)
        inputs = find_inputs(examples)
        if args.only:
            inputs = [p for p in inputs if any(s in str(p) for s in args.only)]
        results = []
        for path in inputs:
            name = str(path.relative_to(examples.parent))
            slug = name.replace("/", "__").rsplit(".", 1)[0]
            res = Result(name, None, None)
            if name in known:
                res.reference_ok = known[name]["reference_ok"]
                res.reference_error = known[name]["reference_error"]
                res.reference_s = known[name]["reference_s"]
            else:
                ref_dir = runs / slug / "reference"
                ref_in = prepare(path, ref_dir)
                res.reference_ok, res.reference_error, res.reference_s = run_tool(
                    ["dp", "--pt", "train", ref_in.name], ref_dir, env, args.timeout
                )
            if res.reference_ok or not args.skip_lamkit_if_refused:
                lam_dir = runs / slug / "lamkit"
                lam_in = prepare(path, lam_dir)
                res.lamkit_ok, res.lamkit_error, res.lamkit_s = run_tool(
                    ["lam", "train", lam_in.name], lam_dir, env, args.timeout
                )
            results.append(res)
            if args.json:  # written as it goes, so an interrupted run keeps its rows
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
            print(
                f"{name}: reference {res.reference_ok} ({res.reference_s:.0f} s)"
                f" lamkit {res.lamkit_ok} ({res.lamkit_s:.0f} s)"
                f" {res.lamkit_error or res.reference_error}",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(results)
    print()
    print(table)
    print(summary(results))
    if args.markdown:
        args.markdown.write_text(table + "\n" + summary(results) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
