"""Rewrite the README's performance table from the newest results file in bench/results/ (what
``pytest bench/`` and ``python -m fastcnn.profile`` write on a GPU). No figure is typed by hand.
Usage: python scripts/render_perf_table.py [README.md] [bench/results]"""
import os
import sys

from fastcnn.reporting import render_readme_table

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
readme = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "README.md")
results = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "bench", "results")
source = render_readme_table(readme, results)
print(f"{readme}: performance table {'from ' + source if source else 'says speed is not yet measured'}")
