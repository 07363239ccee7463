"""Facts derived from a compute capability: native dtypes and TurboMind's prebuilt kernels."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_lmbackend.hardware.units import format_capability, parse_version

# dtype -> the lowest compute capability that computes it natively. bf16 on sm7x is emulated, which
# torch.cuda.is_bf16_supported() reports as True unless including_emulation=False; fp8 needs Ada/Hopper.
DTYPE_MIN_CAPABILITY: dict[str, tuple[int, int]] = {
    "fp32": (0, 0),
    "fp16": (5, 3),
    "bf16": (8, 0),
    "fp8": (8, 9),
}
DTYPE_ALIASES: dict[str, str] = {
    "float32": "fp32", "fp32": "fp32",
    "float16": "fp16", "half": "fp16", "fp16": "fp16",
    "bfloat16": "bf16", "bf16": "bf16",
    "float8": "fp8", "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8",
}


def native_bf16(capability: tuple[int, int]) -> bool:
    """bf16 arithmetic in hardware: sm80 (Ampere) and newer."""
    return capability >= DTYPE_MIN_CAPABILITY["bf16"]


def native_fp8(capability: tuple[int, int]) -> bool:
    """fp8 tensor cores: sm89 (Ada) and newer; LMDeploy's fp8 paths fail on sm75 (#4863)."""
    return capability >= DTYPE_MIN_CAPABILITY["fp8"]


def supports_dtype(capability: tuple[int, int], dtype: str) -> bool:
    """Whether ``dtype`` (any alias in ``DTYPE_ALIASES``) runs natively; KeyError for unknown names."""
    return capability >= DTYPE_MIN_CAPABILITY[DTYPE_ALIASES[dtype.lower()]]


def _padded(version: tuple[int, ...]) -> tuple[int, ...]:
    """(13,) as (13, 0, 0): a CUDA version written "13" is 13.0, not older than it."""
    return version + (0,) * (3 - len(version))


@dataclass(frozen=True)
class KernelBuild:
    """One entry of TurboMind's default x86_64 ``CMAKE_CUDA_ARCHITECTURES``.

    :param arch_specific: an ``sm_XYa`` cubin runs only on X.Y; a plain ``sm_XY`` cubin on X.z, z >= Y.
    :param ptx: also shipped as PTX, which the driver compiles for any newer GPU.
    """

    sm: int
    min_cuda: tuple[int, ...] = (0,)
    below_cuda: tuple[int, ...] | None = None
    arch_specific: bool = False
    ptx: bool = False

    def built_with(self, cuda: tuple[int, ...]) -> bool:
        cuda = _padded(cuda)
        return cuda >= _padded(self.min_cuda) and (self.below_cuda is None or cuda < _padded(self.below_cuda))

    def runs_on(self, capability: tuple[int, int]) -> bool:
        major, minor = divmod(self.sm, 10)
        if self.ptx:
            return capability >= (major, minor)
        if self.arch_specific:
            return capability == (major, minor)
        return capability[0] == major and capability[1] >= minor

    def label(self) -> str:
        return f"sm{self.sm}{'a' if self.arch_specific else ''}"


_CUDA13 = (13, 0)
# (first LMDeploy release, builds), newest last; read from CMakeLists.txt at each tag (checked through
# v0.16.0 and the main branch after it; 0.17 and 0.18 ship the same list).
TURBOMIND_BUILDS: tuple[tuple[str, tuple[KernelBuild, ...]], ...] = (
    # before 0.4.0: -gencode sm_XY,compute_XY, i.e. with PTX
    ("0.0.0", (KernelBuild(70, ptx=True), KernelBuild(75, ptx=True), KernelBuild(80, ptx=True),
               KernelBuild(86, ptx=True))),
    ("0.4.0", (KernelBuild(70), KernelBuild(75), KernelBuild(80, (11,)), KernelBuild(86, (11, 1)),
               KernelBuild(89, (11, 8)), KernelBuild(90, (11, 8)))),
    ("0.9.0", (KernelBuild(70), KernelBuild(75), KernelBuild(80, (11,)), KernelBuild(86, (11, 1)),
               KernelBuild(89, (11, 8)), KernelBuild(90, (12, 0), arch_specific=True))),
    ("0.10.0", (KernelBuild(70), KernelBuild(75), KernelBuild(80, (11,)), KernelBuild(86, (11, 1)),
                KernelBuild(89, (11, 8)), KernelBuild(90, (12, 0), arch_specific=True),
                KernelBuild(120, (12, 8), arch_specific=True))),
    ("0.11.0", (KernelBuild(70, below_cuda=_CUDA13), KernelBuild(75, below_cuda=_CUDA13),
                KernelBuild(80, (11,)), KernelBuild(86, (11, 1)), KernelBuild(89, (11, 8)),
                KernelBuild(90, (12, 0), arch_specific=True), KernelBuild(120, (12, 8), arch_specific=True))),
    ("0.13.0", (KernelBuild(70, below_cuda=_CUDA13), KernelBuild(75, below_cuda=_CUDA13),
                KernelBuild(80, (11,)), KernelBuild(86, (11, 1)), KernelBuild(89, (11, 8)),
                KernelBuild(90, (12, 0), arch_specific=True), KernelBuild(120, (12, 8), arch_specific=True),
                KernelBuild(100, (12, 8), arch_specific=True))),
)


def turbomind_builds(lmdeploy: str | None = None) -> tuple[KernelBuild, ...]:
    """The kernel list of an LMDeploy release (``None`` or unreadable: the newest known list)."""
    version = parse_version(lmdeploy)
    chosen = TURBOMIND_BUILDS[-1][1]
    if version is None:
        return chosen
    for first, builds in TURBOMIND_BUILDS:
        first_version = parse_version(first)
        if first_version is not None and version >= first_version:
            chosen = builds
    return chosen


def turbomind_kernels_missing(
    capability: tuple[int, int], cuda: str | None, *, lmdeploy: str | None = None
) -> str | None:
    """Why TurboMind has no kernel for this GPU under this CUDA version, or None when it has one.

    ``cuda`` stands for the CUDA TurboMind was compiled with; the driver's CUDA version is the best
    estimate a probe has (a wheel cannot be newer than the driver it runs on).
    """
    builds = turbomind_builds(lmdeploy)
    cuda_version = parse_version(cuda)
    release = f"LMDeploy {lmdeploy}" if lmdeploy else "LMDeploy >= 0.13"
    matching = [b for b in builds if b.runs_on(capability)]
    cap = f"sm{capability[0]}{capability[1]} ({format_capability(capability)})"
    if not matching:
        listed = ", ".join(b.label() for b in builds)
        return f"{cap} is not in {release}'s TurboMind build list ({listed})"
    if cuda_version is None:
        if all(b.min_cuda == (0,) and b.below_cuda is None for b in matching):
            return None
        return f"CUDA version unknown, and {release} builds {matching[0].label()} only for some CUDA versions"
    if any(b.built_with(cuda_version) for b in matching):
        return None
    build = matching[0]
    if build.below_cuda is not None and _padded(cuda_version) >= _padded(build.below_cuda):
        limit = ".".join(map(str, build.below_cuda))
        return f"{release} builds {build.label()} only with CUDA < {limit}; found CUDA {cuda}"
    limit = ".".join(map(str, build.min_cuda))
    return f"{release} builds {build.label()} only with CUDA >= {limit}; found CUDA {cuda}"


def has_turbomind_kernels(
    capability: tuple[int, int], cuda: str | None, *, lmdeploy: str | None = None
) -> bool:
    """True when TurboMind ships a kernel image for this GPU (see ``turbomind_kernels_missing``)."""
    return turbomind_kernels_missing(capability, cuda, lmdeploy=lmdeploy) is None


# Ascend chips that compute bf16 natively: the Atlas A2 generation (910B1-910B4) and later (the A3
# series' 910_93 / 910C, whose chips npu-smi lists as plain "Ascend910", and the 950). The first 910
# generation (910A, 910ProB, ...) and the 310 inference chips compute fp16 and fp32 only. No Ascend
# chip is taken to run fp8 natively here.
_NPU_BF16 = re.compile(r"^Ascend(910B[1-4]|910_93|910C|950|910$)")


def npu_dtype_missing(name: str, dtype: str) -> str | None:
    """Why the Ascend chip ``name`` (``"Ascend910B3"``) does not compute ``dtype`` natively, else None."""
    canonical = DTYPE_ALIASES[dtype.lower()]
    if canonical in ("fp32", "fp16"):
        return None
    if canonical == "bf16" and _NPU_BF16.match(name):
        return None
    family = "the Atlas A2 generation (910B) on" if canonical == "bf16" else "no Ascend chip known here"
    return f"{name} does not compute {canonical} natively ({canonical} on Ascend: {family})"
