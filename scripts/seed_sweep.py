"""How often do randomized tests fail by chance? Run the selected tests once per seed (a fresh
pytest process each, with FASTCNN_TEST_SEED set) and print each failing seed and the count:
python scripts/seed_sweep.py FIRST_SEED COUNT [pytest arguments, e.g. tests/test_amp.py -k fp16].
Run from the repository root with the .venv of scripts/test.sh (or any environment with fastcnn
installed); pytest runs from tests/ as scripts/test.sh runs it."""
import os
import subprocess
import sys
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
first, count, pytest_arguments = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
pytest_arguments = [os.path.relpath(os.path.join(root, a), os.path.join(root, "tests")) if a.startswith("tests/")
                    else a for a in pytest_arguments]
failures = []
began = time.perf_counter()
for seed in range(first, first + count):
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_arguments],
                         cwd=os.path.join(root, "tests"), env=dict(os.environ, FASTCNN_TEST_SEED=str(seed)),
                         capture_output=True, text=True)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr.strip()[-200:]
    if run.returncode:
        failures.append(seed)
        print(f"seed {seed}: FAILED: {summary}", flush=True)
print(f"{len(failures)} failing seeds of {count} ({first} to {first + count - 1}) for pytest "
      f"{' '.join(pytest_arguments)}, {time.perf_counter() - began:.0f} s{': ' if failures else ''}"
      f"{', '.join(map(str, failures))}")
sys.exit(1 if failures else 0)
