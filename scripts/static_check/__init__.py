"""The parts of scripts/static_gpu_check.py, one file per job: ``recording`` (the project's kernels
and the launches its scenarios make), ``jobs`` (specialisation and compiles), ``analysis`` (what
the compiler emitted), ``report`` (tables and the check)."""
