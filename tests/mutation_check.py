"""Mutation check: does the default test run catch the plausible one-line bugs it exists for?

Each mutant below is a small edit of one core module (scores, preprocessing constants, resize,
the journal, resume, result files, plan keys, exports) and the default-suite test files that
should fail with it. The checkout is copied to a temporary folder (tracked files and untracked
ones git does not ignore: the working tree as it is now); each mutant is applied there, its test
files run with the project's default options (`-m 'not slow'`), and the file put back. The
working tree is never written.

    python tests/mutation_check.py                 # every mutant, after a baseline run
    python tests/mutation_check.py -k resize -k journal
    python tests/mutation_check.py --list
    python tests/mutation_check.py --no-baseline   # skip the unmutated run of the test files

A mutant is caught when pytest reports a failed test (exit status 1). One whose text is no
longer in its module is reported as stale (the code changed: update the mutant) and is not
counted as tried. Exit status: 0 when every mutant tried was caught, 1 otherwise.

Not collected by pytest (its name does not start with test_): it runs the suite, it is not part
of it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1200  # per mutant: a mutant that hangs the tests counts as caught by the timeout


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # path relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # default-suite test files expected to catch it
    every: bool = False  # replace every occurrence (else `old` must occur exactly once)


MUTANTS = [
    # -- the journal and resume
    Mutant(
        "resume merges every journal row but the last",
        "engine/results/output.py",
        "self.kept, self.done = _merge(self.base + rows)",
        "self.kept, self.done = _merge(self.base + rows[:-1])",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "every os.fsync of the journal removed",
        "engine/results/journal.py",
        "os.fsync(",
        "(lambda fd: None)(",
        ("tests/test_durable_output.py",),
        every=True,
    ),
    Mutant(
        "the journal syncs only when the run stops, never periodically",
        "engine/results/journal.py",
        "while not self._stop.wait(SYNC_INTERVAL_S):",
        "while not self._stop.wait(None):",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "the journal's folder is not synced at start",
        "engine/results/journal.py",
        "        fsync_dir(self.path.parent)",
        "        pass",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "closing the journal does not sync it",
        "engine/results/journal.py",
        "                os.fsync(self._fd)",
        "                pass",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "a torn last line is not cut off before the next append",
        "engine/results/journal.py",
        "            os.ftruncate(self._fd, good_end)",
        "            pass",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "merge keeps the first row of a path, even an error row followed by a score",
        "engine/results/output.py",
        'if earlier is None or earlier["error"] is not None:',
        "if earlier is None:",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "the final CSV/JSONL file is not synced before its rename",
        "engine/results/text_writers.py",
        "        os.fsync(self._file.fileno())",
        "        pass",
        ("tests/test_durable_output.py",),
    ),
    Mutant(
        "an error row loses its file name",
        "engine/pipeline/batch_scoring.py",
        "    return ScoreRow(path, score, error, reference, attributes=attributes)",
        "    return ScoreRow(path if error is None else None, score, error, reference, attributes=attributes)",
        ("tests/test_engine.py", "tests/test_bad_input.py"),
    ),
    Mutant(
        "the Ray writer writes a repeated row again",
        "engine/distributed.py",
        "                written.add(key)",
        "                pass",
        ("tests/test_distributed.py",),
    ),
    # -- resize
    Mutant(
        "the short-side resize floors instead of rounding",
        "engine/pipeline/images.py",
        "return max(1, round(width * scale)), max(1, round(height * scale))",
        "return max(1, int(width * scale)), max(1, int(height * scale))",
        ("tests/test_gpu_decode.py", "tests/test_reduced_decode.py"),
    ),
    Mutant(
        "the short-side resize rounds halves up",
        "engine/pipeline/images.py",
        "return max(1, round(width * scale)), max(1, round(height * scale))",
        "return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))",
        ("tests/test_gpu_decode.py", "tests/test_reduced_decode.py"),
    ),
    Mutant(
        "the fixed size read as (width, height)",
        "engine/pipeline/images.py",
        "        return policy.size[1], policy.size[0]",
        "        return policy.size[0], policy.size[1]",
        ("tests/test_gpu_decode.py", "tests/test_reduced_decode.py"),
    ),
    # -- preprocessing and published constants
    Mutant(
        "CLIP's std with its first two values swapped",
        "train/models/preprocess.py",
        "CLIP_STD = (0.26862954, 0.26130258, 0.27577711)",
        "CLIP_STD = (0.26130258, 0.26862954, 0.27577711)",
        ("tests/test_published_constants.py",),
    ),
    Mutant(
        "normalisation as (x - std) / mean",
        "train/models/preprocess.py",
        "    return (images - mean) / std",
        "    return (images - std) / mean",
        ("tests/test_published_constants.py",),
    ),
    Mutant(
        "uint8 scaled by 1/256",
        "train/models/preprocess.py",
        "/ 255.0)",
        "/ 256.0)",
        ("tests/test_published_constants.py",),
    ),
    Mutant(
        "QualiCLIP's prompt pairs negative first",
        "train/models/prompts.py",
        '    ("Good photo.", "Bad photo."),',
        '    ("Bad photo.", "Good photo."),',
        ("tests/test_published_constants.py",),
    ),
    # -- QualiCLIP
    Mutant(
        "QualiCLIP's logit scale 50",
        "train/models/qualiclip.py",
        "LOGIT_SCALE = 100.0",
        "LOGIT_SCALE = 50.0",
        ("tests/test_qualiclip.py",),
    ),
    Mutant(
        "QualiCLIP scores the negative prompt's probability",
        "train/models/qualiclip.py",
        ".softmax(dim=-1)[..., 0]",
        ".softmax(dim=-1)[..., 1]",
        ("tests/test_qualiclip.py",),
    ),
    # -- BPCLIP
    Mutant(
        "BPCLIP's full-reference gate on Fd - Fr, not |Fd - Fr|",
        "train/models/bpclip.py",
        "torch.sigmoid(self.gate(difference)) * torch.cat(",
        "torch.sigmoid(self.gate(distorted - reference)) * torch.cat(",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP's full-reference difference without abs",
        "train/models/bpclip.py",
        "difference = (distorted - reference).abs()",
        "difference = distorted - reference",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP's full-reference values in the order [Fr, Fd, |Fd - Fr|]",
        "train/models/bpclip.py",
        "torch.cat([distorted, reference, difference], dim=1)",
        "torch.cat([reference, distorted, difference], dim=1)",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP's no-reference gate applied to F, not to W F",
        "train/models/bpclip.py",
        "torch.sigmoid(self.gate(distorted)) * self.value(distorted)",
        "torch.sigmoid(self.gate(distorted)) * distorted",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP's chain with query and context exchanged",
        "train/models/bpclip.py",
        "            h = block(query, context=h)",
        "            h = block(h, context=query)",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP's positional table with x before y",
        "train/models/bpclip.py",
        "np.concatenate([y_emb, x_emb], axis=-1)",
        "np.concatenate([x_emb, y_emb], axis=-1)",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP's attribute logit scale 10",
        "train/models/bpclip.py",
        "ATTRIBUTE_LOGIT_SCALE = 100.0",
        "ATTRIBUTE_LOGIT_SCALE = 10.0",
        ("tests/test_bpclip.py",),
    ),
    Mutant(
        "BPCLIP pools h5 by its maximum, not its mean",
        "train/models/bpclip.py",
        "        pooled = h.mean(dim=1)",
        "        pooled = h.amax(dim=1)",
        ("tests/test_bpclip.py",),
    ),
    # -- exports, the engine, plan keys
    Mutant(
        "the fp16 graph computes softmax in fp16",
        "export/fp16.py",
        '        "Softmax",\n',
        "",
        ("tests/test_export.py", "tests/test_parity.py"),
    ),
    Mutant(
        "spec.json records no graph sha256",
        "export/artifact.py",
        '"sha256": {"weights": weights_sha256, **graph_hashes},',
        '"sha256": {"weights": weights_sha256},',
        ("tests/test_artifact_integrity.py", "tests/test_export.py"),
    ),
    Mutant(
        "the full-reference int8 graph quantises layer3 and layer4 too",
        "export/int8_artifact.py",
        'FR_KEEP_FP32 = ("^/layer3/", "^/layer4/")',
        "FR_KEEP_FP32 = ()",
        ("tests/test_int8.py",),
    ),
    Mutant(
        "the Scorer returns a batch's scores reversed",
        "engine/scorer.py",
        "scores[chunk] = self.backend(",
        "scores[chunk[::-1]] = self.backend(",
        ("tests/test_engine.py",),
    ),
    Mutant(
        "a cached plan of another graph is accepted",
        "engine/backends/plan_cache.py",
        "    if built.graph_sha256 != environment.graph_sha256:",
        "    if False:",
        ("tests/test_engine_plan_cache.py",),
    ),
    Mutant(
        "a plan is reused only for the profile it was built for",
        "engine/backends/plan_cache.py",
        "            and key.profile.covers(needed)",
        "            and key.profile == needed",
        ("tests/test_tensorrt_build.py",),
    ),
    # -- shards and attributes
    Mutant(
        "a tar member's key ends at the last dot, not the first (a/b.c.jpg keyed a/b.c)",
        "engine/sources/webdataset_tar.py",
        '    stem, dot, extension = base.partition(".")',
        '    stem, dot, extension = base.rpartition(".")',
        ("tests/test_shards.py",),
    ),
    Mutant(
        "a sample's image is its last image member, not its first",
        "engine/sources/samples.py",
        "    image_ext = next((ext for ext in sample.members if ext.lower() in fmt.image_extensions), None)",
        "    image_ext = next((ext for ext in reversed(sample.members) if ext.lower() in fmt.image_extensions), None)",
        ("tests/test_shards.py",),
    ),
    Mutant(
        "a shard read to its end leaves its earlier shard-level error row",
        "engine/results/output.py",
        '            latest.pop((SHARD, row["shard_done"], None), None)',
        "            pass",
        ("tests/test_shards.py",),
    ),
    Mutant(
        "one output: a shard journaled as done is read again on resume",
        "engine/results/shard_outputs.py",
        "        return redact(shard) in self.output.done_shards  # rows name shards without credentials",
        "        return False",
        ("tests/test_shards.py",),
    ),
    Mutant(
        "QualiCLIP's attributes are the negative prompts' probabilities",
        "train/models/qualiclip.py",
        "        return logits.reshape(logits.shape[0], self.num_pairs, 2).softmax(dim=-1)[..., 0]",
        "        return logits.reshape(logits.shape[0], self.num_pairs, 2).softmax(dim=-1)[..., 1]",
        ("tests/test_attributes.py", "tests/test_qualiclip.py"),
    ),
]


def copy_checkout(destination: Path) -> None:
    """The working tree's files as they are now: tracked ones and untracked ones git does not
    ignore (deleted tracked files are skipped)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        relative = os.fsdecode(raw)
        source = REPO / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def environment(root: Path) -> dict[str, str]:
    """Imports of `iqart` resolve to the copy: a folder holding a link named iqart to it goes
    first on PYTHONPATH (ahead of the editable install's finder, which comes last); no bytecode
    is written, so a restored module can never be run from a mutant's cached bytecode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "imports"), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["IQART_HOME"] = str(root / "iqart_home")  # exports of tests without their own cache stay here
    return env


def run_tests(checkout: Path, env: dict[str, str], tests: list[str], stop_at_first: bool) -> tuple[str, str, float]:
    """(outcome, first failing test or a note, seconds): outcome passed, failed, timeout or error."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *(["-x"] if stop_at_first else []),
        *tests,
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result in {TIMEOUT_S} s", time.monotonic() - started
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    if done.returncode == 0:
        return "passed", "", seconds
    if done.returncode == 1:
        return "failed", failed[0] if failed else "(see pytest's output)", seconds
    return "error", f"pytest exit status {done.returncode}: " + output.strip().splitlines()[-1], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", action="append", default=[], help="run the mutants whose name contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and their test files")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the test files")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.k or any(word.lower() in m.name.lower() for word in args.k)]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name}\n    {mutant.module}; {', '.join(mutant.tests)}")
        return 0
    if not chosen:
        parser.error("no mutant matches")

    with tempfile.TemporaryDirectory(prefix="iqart-mutants-") as temporary:
        root = Path(temporary)
        checkout = root / "checkout"
        copy_checkout(checkout)
        (root / "imports").mkdir()
        (root / "imports" / "iqart").symlink_to(checkout, target_is_directory=True)
        env = environment(root)
        where = subprocess.run(
            [sys.executable, "-c", "import iqart; print(iqart.__file__)"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(root)):
            sys.exit(f"mutation_check: `import iqart` finds {where}, not the copy: refusing to run")
        print(f"copy of {REPO} in {checkout}; {len(chosen)} mutant(s)", flush=True)

        if not args.no_baseline:
            files = sorted({test for mutant in chosen for test in mutant.tests})
            outcome, note, seconds = run_tests(checkout, env, files, stop_at_first=False)
            print(f"baseline ({len(files)} test files, unmutated): {outcome} in {seconds:.0f} s {note}", flush=True)
            if outcome != "passed":
                sys.exit("mutation_check: the unmutated test files do not pass; a caught mutant would mean nothing")

        results = []
        for mutant in chosen:
            module = checkout / mutant.module
            original = module.read_text()
            count = original.count(mutant.old)
            if count == 0 or (count > 1 and not mutant.every):
                results.append((mutant, "stale", f"its text occurs {count} times in {mutant.module}", 0.0))
                print(f"STALE     {mutant.name}: its text occurs {count} times in {mutant.module}", flush=True)
                continue
            module.write_text(original.replace(mutant.old, mutant.new))
            try:
                outcome, note, seconds = run_tests(checkout, env, list(mutant.tests), stop_at_first=True)
            finally:
                module.write_text(original)
            verdict = {"failed": "CAUGHT", "timeout": "CAUGHT", "passed": "SURVIVED"}.get(outcome, "ERROR")
            results.append((mutant, verdict, note, seconds))
            print(f"{verdict:9} {mutant.name} ({seconds:.0f} s) {note}", flush=True)

    tried = [r for r in results if r[1] != "stale"]
    caught = [r for r in tried if r[1] == "CAUGHT"]
    print(f"\ncaught {len(caught)}/{len(tried)}")
    for mutant, verdict, note, _ in results:
        if verdict != "CAUGHT":
            print(f"  {verdict.lower()}: {mutant.name} ({mutant.module}) {note}")
    return 0 if len(caught) == len(tried) else 1


if __name__ == "__main__":
    sys.exit(main())
