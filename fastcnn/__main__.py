"""``python -m fastcnn`` (or ``fastcnn-info``): print where fastcnn's kernels run on this machine,
and how to run them where they would fall back to PyTorch."""
import argparse

from ._backend import FALLBACK, INTERPRETED, info

_EPILOG = """\
Where kernels run: on CUDA tensors, the compiled Triton kernels. On CPU tensors, Triton's
interpreter when TRITON_INTERPRET=1 is set before triton is first imported (that is how the
tests run without a GPU), e.g.

    TRITON_INTERPRET=1 python -m fastcnn
    TRITON_INTERPRET=1 python your_script.py

Anywhere else each op runs its PyTorch reference path and says so once with a
fastcnn.FallbackWarning.
"""


def hint(where):
    """One line saying how to run the kernels on CPU tensors, or None when they already run."""
    cpu = where["kernels_on_cpu_tensors"]
    if where["triton"] is None:
        return f"triton could not be imported ({where['triton_import_error']}): every op runs its PyTorch reference path"
    if cpu == FALLBACK:
        if where["cuda_available"]:
            return ("CPU tensors run the PyTorch reference path; CUDA tensors run the compiled kernels. To run the "
                    "kernels on CPU tensors through Triton's interpreter, set TRITON_INTERPRET=1 before importing "
                    "triton (then CUDA tensors fall back instead).")
        return ("no CUDA device: to run the Triton kernels on CPU tensors through Triton's interpreter, set "
                "TRITON_INTERPRET=1 before importing triton, e.g. `TRITON_INTERPRET=1 python -m fastcnn`")
    if cpu == INTERPRETED:
        return "CPU tensors run the Triton kernels through Triton's interpreter (slow; for testing)"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastcnn",
        description="Print fastcnn's version, torch's and triton's, the device, and where fastcnn's kernels run "
                    "on CPU and CUDA tensors on this machine (compiled, interpreted or the PyTorch fallback).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    where = info()
    for key, value in where.items():
        print(f"{key:>24}: {value}")
    line = hint(where)
    if line:
        print(f"{'hint':>24}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
