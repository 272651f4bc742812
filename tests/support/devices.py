"""The devices compute tests run on: the CPU always, and a CUDA GPU where there is one (marked `gpu`).

ATLAS_TEST_GPU_DEVICE=cpu runs the gpu-marked cases on the CPU, to check the tests themselves where no GPU is.
"""

import os

import pytest
import torch
from _pytest.mark.structures import ParameterSet

GPU_DEVICE = os.environ.get("ATLAS_TEST_GPU_DEVICE", "cuda")


def gpu_available() -> bool:
    return GPU_DEVICE == "cpu" or torch.cuda.is_available()


def gpu_param() -> ParameterSet:
    """The GPU as a pytest parameter: marked `gpu`, skipped where CUDA is missing."""
    marks = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU")]
    return pytest.param(GPU_DEVICE, marks=marks, id="gpu")


def devices() -> list[str | ParameterSet]:
    """The CPU, then the GPU as gpu_param gives it."""
    return ["cpu", gpu_param()]
