"""The stages of ``bash scripts/gpu_check.sh`` (which sets up .venv first): a GPU session's minutes
turned into machine-written results with one command.

Stages, in order (default: all), each held to ``--budget-s`` seconds (default 450, inside the
device tool's 10-minute command limit with room for start-up):

  tests      environment (GPU, driver, torch, triton) and measured peaks (copy bandwidth, matmul
             rates), then the whole test suite compiled on CUDA with FASTCNN_AUTOTUNE=0 (the fixed
             default tile configs), one pytest per file so that a crash or the time limit costs
             one file, not the summary: passed / failed / errors / skipped per file
  quick      fastcnn-profile --quick: a representative case per op and pass, autotuned, against
             eager and torch.compile
  catalogue  fastcnn-profile on the whole catalogue (bf16 and fp32, channels_last and NCHW), as
             many cases as the budget allows (the rest are listed as not run)
  resnet     bench/test_resnet_bench.py: ResNet-18/50 training steps, eager, torch.compile,
             converted, converted + compile

Results go to one folder, ``--results`` (default $FASTCNN_RESULTS, else bench/results/; a fresh
temporary folder for --dry-run): the profiler's <gpu>-<date>.json/.csv/charts, environment.json,
tests-summary.json/.csv with each file's junit XML, resnet-benchmark.json, every stage's log and
gpu-check-summary.md (the tables printed at the end of each stage). When $OUT is set (the device
tool's folder, which brings back at most 8 files), the folder is also packed into
$OUT/gpu-check.tar.gz after every stage, and the summary copied beside it, so that a lease that
ends mid-stage still returns what finished.

``--dry-run`` runs the same stages on the CPU through Triton's interpreter on tiny shapes (the
first random-configuration tests of each file that has some, the profiler's smoke check, a TinyResNet training step):
CI runs it so that this command cannot rot between GPU sessions. It measures no speed.
"""
import argparse
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("tests", "quick", "catalogue", "resnet")
# A dry run proves the stage's plumbing (one pytest per file, junit counts, the summary): the files
# with random-configuration tests, the first few of those each (CI's main leg runs them all).
DRY_RUN_TESTS = "random and not half"
DRY_RUN_FILE = re.compile(r"^def test_\w*random", re.MULTILINE)
DRY_RUN_TESTS_PER_FILE = 3


class Session:
    def __init__(self, results, dry_run, budget_s):
        self.results, self.dry_run, self.budget_s = results, dry_run, budget_s
        os.makedirs(results, exist_ok=True)
        self.summary_path = os.path.join(results, "gpu-check-summary.md")
        self.environment = dict(os.environ, PYTHONUNBUFFERED="1")
        if dry_run:
            self.environment.update(TRITON_INTERPRET="1", FASTCNN_BENCH_DRY_RUN="1", CUDA_VISIBLE_DEVICES="")
        else:
            self.environment["FASTCNN_AUTOTUNE"] = "1"
        self.environment["FASTCNN_RESULTS"] = results

    def run(self, stage, command, *, cwd=ROOT, timeout, extra_environment=None):
        """Run ``command``, its output appended to the stage's log; the exit code, or 'timeout'."""
        with open(os.path.join(self.results, f"{stage}.log"), "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(command)}  (in {os.path.relpath(cwd, ROOT) or '.'})\n")
            log.flush()
            try:
                finished = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                          env=dict(self.environment, **(extra_environment or {})))
                return finished.returncode
            except subprocess.TimeoutExpired:
                log.write(f"\n[gpu_check] stopped after {timeout:.0f} s\n")
                return "timeout"

    def log_tail(self, stage, lines=40):
        with open(os.path.join(self.results, f"{stage}.log"), encoding="utf-8", errors="replace") as log:
            return "".join(log.readlines()[-lines:])

    def report(self, stage, text):
        """Print ``text`` as the stage's closing table, append it to the summary, pack the folder."""
        block = f"## {stage}{' (dry run: no speed measured)' if self.dry_run else ''}\n\n{text.rstrip()}\n\n"
        print(block, flush=True)
        with open(self.summary_path, "a", encoding="utf-8") as summary:
            summary.write(block)
        out = os.environ.get("OUT")
        if out and not self.dry_run:
            with tarfile.open(os.path.join(out, "gpu-check.tar.gz.partial"), "w:gz") as archive:
                archive.add(self.results, arcname="gpu-check")
            os.replace(os.path.join(out, "gpu-check.tar.gz.partial"), os.path.join(out, "gpu-check.tar.gz"))
            shutil.copy(self.summary_path, os.path.join(out, "gpu-check-summary.md"))


def stage_tests(session):
    """Environment and peaks, then every test file, compiled, with the fixed default configs."""
    began = time.monotonic()
    probe = ("import json, sys, torch; from fastcnn.benchmarking import environment, measure_peaks; "
             "info = {'environment': environment(), 'peaks': measure_peaks('cuda') if torch.cuda.is_available() "
             "else None}; json.dump(info, open(sys.argv[1], 'w'), indent=2)")
    path = os.path.join(session.results, "environment.json")
    code = session.run("tests", [sys.executable, "-c", probe, path], timeout=session.budget_s)
    lines = []
    if code == 0:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        lines.append("environment: " + ", ".join(f"{k} {v}" for k, v in info["environment"].items()))
        if info["peaks"]:
            lines.append("peaks: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in info["peaks"].items()))
    else:
        lines.append(f"environment probe failed ({code}): see tests.log")
    junit = os.path.join(session.results, "junit")
    os.makedirs(junit, exist_ok=True)
    rows = []
    test_files = sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    if session.dry_run:
        test_files = [path for path in test_files if DRY_RUN_FILE.search(open(path, encoding="utf-8").read())]
    for test_file in test_files:
        name = os.path.basename(test_file)
        remaining = session.budget_s - (time.monotonic() - began)
        if remaining < 15:
            rows.append(dict(file=name, status="not run (time)", passed=0, failed=0, errors=0, skipped=0, seconds=0))
            continue
        xml_path = os.path.join(junit, name.replace(".py", ".xml"))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name, f"--junitxml={xml_path}"]
        if session.dry_run:
            command += ["-k", DRY_RUN_TESTS, f"--first-per-file={DRY_RUN_TESTS_PER_FILE}"]
        else:
            command += ["-rfE"]
        started = time.monotonic()
        code = session.run("tests", command, cwd=os.path.join(ROOT, "tests"), timeout=remaining,
                           extra_environment=None if session.dry_run else {"FASTCNN_AUTOTUNE": "0"})
        rows.append(dict(file=name, **_junit_counts(xml_path), seconds=round(time.monotonic() - started, 1),
                         status={0: "ok", 5: "none selected", "timeout": "TIMEOUT"}.get(code, f"exit {code}")))
    with open(os.path.join(session.results, "tests-summary.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)
    with open(os.path.join(session.results, "tests-summary.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines += ["", "| file | status | passed | failed | errors | skipped | s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['file']} | {r['status']} | {r['passed']} | {r['failed']} | {r['errors']} | {r['skipped']} | "
              f"{r['seconds']} |" for r in rows]
    totals = {key: sum(r[key] for r in rows) for key in ("passed", "failed", "errors", "skipped")}
    lines.append(f"\n{totals['passed']} passed, {totals['failed']} failed, {totals['errors']} errors, "
                 f"{totals['skipped']} skipped")
    session.report("tests", "\n".join(lines))
    return totals["failed"] + totals["errors"] == 0 and all(r["status"] in ("ok", "none selected") for r in rows)


def _junit_counts(path):
    counts = dict(passed=0, failed=0, errors=0, skipped=0)
    if not os.path.exists(path):
        return counts
    for suite in ElementTree.parse(path).getroot().iter("testsuite"):
        tests, failures = int(suite.get("tests", 0)), int(suite.get("failures", 0))
        errors, skipped = int(suite.get("errors", 0)), int(suite.get("skipped", 0))
        counts["failed"] += failures
        counts["errors"] += errors
        counts["skipped"] += skipped
        counts["passed"] += tests - failures - errors - skipped
    return counts


def _profile(session, stage, *options):
    command = [sys.executable, "-m", "fastcnn.profile", "--out", session.results, "--budget-s",
               str(max(30, session.budget_s - 60)), *options]
    code = session.run(stage, command, timeout=session.budget_s)
    session.report(stage, f"fastcnn-profile {' '.join(options)}: {'ok' if code == 0 else code}\n\n```\n"
                          f"{session.log_tail(stage)}```")
    return code == 0


def stage_quick(session):
    """A representative case per op and pass (the CPU smoke check for a dry run)."""
    return _profile(session, "quick", *([] if session.dry_run else ["--quick"]))


def stage_catalogue(session):
    """Every case of the catalogue, as far as the budget goes (the smoke check for a dry run)."""
    return _profile(session, "catalogue", "--dtypes", "bf16,fp32", "--layouts", "channels_last,nchw")


def stage_resnet(session):
    """ResNet-18/50 training throughput (a TinyResNet step on the CPU for a dry run)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", "test_resnet_bench.py",
               f"--benchmark-json={os.path.join(session.results, 'resnet-benchmark.json')}"]
    if session.dry_run:
        command.append("--benchmark-disable")  # one untimed call: the dry run proves it runs, not how fast
    code = session.run("resnet", command, cwd=os.path.join(ROOT, "bench"), timeout=session.budget_s)
    session.report("resnet", f"bench/test_resnet_bench.py: {'ok' if code == 0 else code}\n\n```\n"
                             f"{session.log_tail('resnet', 25)}```")
    return code == 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.sh",
        description="Run a GPU session's checks as stages (tests, quick, catalogue, resnet) and write "
                    "machine-written results into one folder; --dry-run does the same on the CPU through "
                    "Triton's interpreter on tiny shapes.")
    parser.add_argument("stages", nargs="*", metavar="STAGE",
                        help=f"from {', '.join(STAGES)} (default: all, in that order)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes, no timings")
    parser.add_argument("--results", help="results folder (default $FASTCNN_RESULTS, else bench/results; a new "
                                          "temporary folder for --dry-run)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="seconds per stage (default 450)")
    arguments = parser.parse_args(argv)
    unknown = [stage for stage in arguments.stages if stage not in STAGES]
    if unknown:
        parser.error(f"unknown stage {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    results = arguments.results or (tempfile.mkdtemp(prefix="gpu-check-dry-run-") if arguments.dry_run else
                                    os.environ.get("FASTCNN_RESULTS") or os.path.join(ROOT, "bench", "results"))
    session = Session(os.path.abspath(results), arguments.dry_run, arguments.budget_s)
    print(f"gpu_check: stages {', '.join(arguments.stages or STAGES)}; results in {session.results}"
          f"{' (dry run)' if arguments.dry_run else ''}", flush=True)
    outcomes = {}
    for stage in arguments.stages or STAGES:
        began = time.monotonic()
        outcomes[stage] = globals()[f"stage_{stage}"](session)
        print(f"[gpu_check] {stage}: {'ok' if outcomes[stage] else 'FAILED'} in {time.monotonic() - began:.0f} s",
              flush=True)
    print("gpu_check: " + ", ".join(f"{stage} {'ok' if ok else 'FAILED'}" for stage, ok in outcomes.items()))
    return 0 if all(outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
