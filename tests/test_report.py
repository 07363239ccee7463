"""Tests of the hardware report: header lines, env text, JSON."""

from __future__ import annotations

import json

from pytest_lmbackend.hardware import GPU, Hardware, load_profile
from pytest_lmbackend.report import HEADER_PREFIX, env_text, gpu_line, header_lines, text_lines, to_json

GiB = 1024**3


def test_header_of_a_fake_profile() -> None:
    hw = load_profile("h100x2", local_packages={"lmdeploy": "0.18.0", "torch": "2.11.0+cu130",
                                                "lmdeploy.turbomind": "0.18.0", "six": "1.0"})
    lines = header_lines(hw)
    assert all(line.startswith(HEADER_PREFIX) for line in lines)
    assert "2 GPUs, profile 'h100x2' (fake hardware, nothing probed)" in lines[0]
    assert "driver 580.159.04, CUDA 13.0" in lines[0]
    assert lines[1].endswith("GPU 0 -> physical 0: NVIDIA H100 80GB HBM3, sm90 (9.0), 79.65 GiB total, "
                             "79.18 GiB free; TurboMind kernels: yes")
    packages = next(line for line in lines if "packages:" in line)
    assert "lmdeploy 0.18.0 (TurboMind extension present), torch 2.11.0+cu130" in packages
    assert "six" not in packages


def test_text_names_mask_physical_index_warnings_and_backends() -> None:
    hw = Hardware(gpus=(GPU(0, 3, "GPU-x", "Tesla V100-SXM2-32GB", (7, 0), 32 * GiB, None),),
                  driver="580.1", cuda="13.0", source="nvml", packages={"lmdeploy": "0.18.0"},
                  backends=("pytorch",), warnings=("CUDA_VISIBLE_DEVICES='3': something",))
    lines = text_lines(hw, backends={"pytorch": None, "turbomind": "no extension"})
    assert lines[0] == "hardware: 1 GPU, read through nvml; driver 580.1, CUDA 13.0"
    assert lines[1] == ("  GPU 0 -> physical 3: Tesla V100-SXM2-32GB, sm70 (7.0), 32 GiB total, "
                        "unknown free; TurboMind kernels: no")
    assert "lmdeploy 0.18.0 (no TurboMind extension)" in lines[2]
    assert lines[3:] == ["backends stated by the profile: pytorch", "backends available: pytorch",
                         "  turbomind: no extension", "warning: CUDA_VISIBLE_DEVICES='3': something"]
    assert env_text(hw).endswith("\n")


def test_no_gpu_text() -> None:
    hw = Hardware(source="none", ascend=True, warnings=("nvidia-smi: not found on PATH",))
    lines = text_lines(hw)
    assert lines[0] == "hardware: 0 GPUs, no NVIDIA GPU found; driver none, CUDA none, Ascend NPU present"
    assert lines[-1] == "warning: nvidia-smi: not found on PATH"


def test_json_has_every_fact() -> None:
    hw = load_profile("rtx5090", local_packages={"torch": "2.9.0"})
    data = json.loads(json.dumps(to_json(hw, backends={"pytorch": "lmdeploy not installed"})))
    assert data["source"] == "profile" and data["profile"] == "rtx5090" and data["cuda"] == "12.8"
    (g,) = data["gpus"]
    assert g["capability"] == "12.0" and g["memory_total"] == 32607 * 1024**2
    assert g["turbomind_kernels"] is True
    assert g["index"] == 0 and g["physical_index"] == 0 and g["uuid"].startswith("GPU-")
    assert data["packages"] == {"torch": "2.9.0"}
    assert data["backends"] == {"pytorch": {"available": False, "reason": "lmdeploy not installed"}}
    assert data["stated_backends"] is None and data["warnings"] == []
    assert gpu_line(hw.gpus[0]).startswith("GPU 0 -> physical 0: NVIDIA GeForce RTX 5090, sm120 (12.0)")


def test_a_job_of_several_nodes_says_so() -> None:
    one = GPU(0, 0, "GPU-x", "NVIDIA H100 80GB HBM3", (9, 0), 80 * GiB)
    hw = Hardware(gpus=(one,), source="nvml", nodes=2)
    assert text_lines(hw)[0].startswith("hardware: 2 nodes of 1 GPU each, read through nvml")
    assert to_json(hw)["nodes"] == 2 and to_json(Hardware())["nodes"] == 1
