"""``python -m fastcnn`` (or ``fastcnn-info``): print where fastcnn's kernels run."""
from ._backend import info


def main():
    for key, value in info().items():
        print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
