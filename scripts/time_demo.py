"""Time the CPU demo as a user runs it (``bash scripts/demo.sh``, set-up included) and write the
README's sentence about its duration from the measurement: "3 epochs in about N minutes on C
cores", N the measured time rounded up to the next half minute, with the measured figure and the
date beside it. No figure is typed by hand. Usage: python scripts/time_demo.py [README.md]
[--distributed] (run it on an idle machine; it exits with the demo's status when the demo fails).
``--distributed`` times ``bash scripts/demo.sh --distributed`` (two processes under torchrun)
and writes the README's distributed-demo-time span instead."""
import datetime
import math
import os
import re
import subprocess
import sys
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
arguments = [argument for argument in sys.argv[1:] if argument != "--distributed"]
distributed = "--distributed" in sys.argv[1:]
readme = arguments[0] if arguments else os.path.join(root, "README.md")
span = "distributed-demo-time" if distributed else "demo-time"
BEGIN, END = f"<!-- {span}:begin (written by scripts/time_demo.py) -->", f"<!-- {span}:end -->"

began = time.perf_counter()
demo = subprocess.run(["bash", os.path.join(root, "scripts", "demo.sh")] + (["--distributed"] if distributed else []),
                      cwd=root)
seconds = time.perf_counter() - began
if demo.returncode:
    sys.exit(demo.returncode)
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
minutes = math.ceil(seconds / 30) / 2
sentence = (f"3 epochs in about {minutes:g} minute{'s' if minutes != 1 else ''} on {cores} cores "
            f"({int(seconds // 60)} min {round(seconds % 60)} s measured by `python scripts/time_demo.py"
            f"{' --distributed' if distributed else ''}` on "
            f"{datetime.date.today().isoformat()})")
with open(readme) as handle:
    text = handle.read()
pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
if not pattern.search(text):
    sys.exit(f"{readme} has no {BEGIN} ... {END} span to write")
with open(readme, "w") as handle:
    handle.write(pattern.sub(lambda _: BEGIN + sentence + END, text))
print(f"{readme}: {sentence}")
