"""Rewrite the README's two performance tables, no figure typed by hand: the measured one from the
newest results file in bench/results/ (what ``pytest bench/`` and ``python -m fastcnn.profile``
write on a GPU), the modelled one from bench/results/estimates/zoo.json (what
``python bench/estimate_zoo.py`` writes, fastcnn.estimate's counts without a GPU).
Usage: python scripts/render_perf_table.py [README.md] [bench/results]"""
import os
import sys

from fastcnn.reporting import render_readme_estimates, render_readme_table

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
readme = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "README.md")
results = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "bench", "results")
source = render_readme_table(readme, results)
print(f"{readme}: performance table {'from ' + source if source else 'says speed is not yet measured'}")
estimates = os.path.join(results, "estimates")
found = render_readme_estimates(readme, estimates)
print(f"{readme}: estimate table {'from ' + estimates if found else 'says no estimate is recorded'}")
