"""Write fastcnn.estimate's figures for the torchvision zoo to bench/results/estimates/: zoo.json
(one record per model, batch and dtype: each side's totals, op families, peak memory by kind and
modelled step times; no launch lists) and one chart per configuration. MODELLED figures, counted
on fake tensors: no GPU is used. Needs torchvision; the README's estimate table is rendered from
zoo.json by scripts/render_perf_table.py.

Usage: python bench/estimate_zoo.py [--out bench/results/estimates] [--models resnet18,...]
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

import torch
import torchvision

import fastcnn
from fastcnn.estimation import estimate_model
from fastcnn.reporting import ZOO_FILE, write_estimate_charts

ZOO = ("resnet18", "resnet50", "vgg11_bn", "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny")
BATCHES = (64, 256)
CONFIGURATIONS = (("bf16", True), ("fp32", True))  # channels_last, the layout fastcnn's convolutions compute in
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "estimates")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--models", default=",".join(ZOO))
    arguments = parser.parse_args(argv)
    records = []
    for model in arguments.models.split(","):
        for batch in BATCHES:
            for dtype, channels_last in CONFIGURATIONS:
                began = time.monotonic()
                result = estimate_model(f"torchvision:{model}", batch=batch, dtype=dtype, channels_last=channels_last)
                summary = result.summary()
                record = {"model": model, "batch": batch, "dtype": dtype,
                          "layout": "channels_last" if channels_last else "nchw", "machines": result.machines,
                          "seconds": time.monotonic() - began, "fastcnn": summary["fastcnn"],
                          "eager": summary["eager"]}
                records.append(record)
                print(f"{model:16s} batch {batch:3d} {dtype} {record['layout']:13s} peak memory fastcnn/eager "
                      f"{record['fastcnn']['peak_bytes'] / record['eager']['peak_bytes']:.3f}, counted in "
                      f"{record['seconds']:.1f} s", flush=True)
    os.makedirs(arguments.out, exist_ok=True)
    environment = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "fastcnn": fastcnn.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                   "python": platform.python_version(), "modelled": True}
    path = os.path.join(arguments.out, ZOO_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"environment": environment, "records": records}, handle, indent=1)
        handle.write("\n")
    written = [path] + write_estimate_charts(records, arguments.out)
    print("written: " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
