"""Start-up of an LMDeploy pipeline (PyTorch engine or TurboMind), with the engine's inner phases."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from pytest_lmbackend.bench.child import RoundContext

ENGINE = "engine construction"

# (module, attribute, sub-phase): functions LMDeploy 0.18 calls inside ``pipeline()``. A hook
# that does not resolve in another release is listed in the round's info and its time stays in
# "other", so the engine construction still adds up.
HOOKS: tuple[tuple[str, str, str], ...] = (
    ("lmdeploy.pipeline", "autoget_backend_config", "backend config"),
    ("lmdeploy.serve.core.async_engine", "get_chat_template", "chat template"),
    ("lmdeploy.tokenizer", "Tokenizer.__init__", "tokenizer load"),
    ("lmdeploy.serve.core.async_engine", "get_model_arch", "config load"),
    ("lmdeploy.serve.core.async_engine", "AsyncEngine.start_loop", "engine start"),
)
PYTORCH_HOOKS: tuple[tuple[str, str, str], ...] = (
    # a spawned process that imports torch and checks CUDA, Triton and the model
    ("lmdeploy.pytorch.engine.engine_checker", "EngineChecker.handle", "environment check"),
    ("lmdeploy.pytorch.engine.engine", "build_executor", "executor build"),
    ("lmdeploy.pytorch.engine.executor.uni_executor", "UniExecutor.build_model", "model build"),
    ("lmdeploy.pytorch.engine.executor.uni_executor", "UniExecutor.update_configs", "memory profiling"),
    ("lmdeploy.pytorch.engine.executor.uni_executor", "UniExecutor.build_graph_runner", "graph runner"),
    ("lmdeploy.pytorch.engine.executor.uni_executor", "UniExecutor.build_cache_engine", "cache engine"),
    ("lmdeploy.pytorch.engine.executor.uni_executor", "UniExecutor.warmup", "warm-up / graph capture"),
)
TURBOMIND_HOOKS: tuple[tuple[str, str, str], ...] = (
    ("lmdeploy.turbomind.turbomind", "TurboMind.from_pretrained", "engine build"),
)


def run_pytorch(ctx: RoundContext) -> None:
    _run(ctx, "pytorch")


def run_turbomind(ctx: RoundContext) -> None:
    _run(ctx, "turbomind")


def _run(ctx: RoundContext, backend: str) -> None:
    opts = ctx.options
    ctx.require_installed("torch", "transformers", "lmdeploy")
    (torch,) = ctx.timed_import("import torch", "torch")
    ctx.timed_import("import transformers", "transformers")  # timed apart from LMDeploy's own import
    with ctx.phase("import lmdeploy"):
        try:
            import lmdeploy
            from lmdeploy import GenerationConfig, PytorchEngineConfig, TurbomindEngineConfig, pipeline
            from lmdeploy.archs import autoget_backend
        except ImportError as exc:
            raise ctx.unavailable(f"backend unavailable: lmdeploy is not importable ({exc})") from exc
    if backend == "turbomind":
        import lmdeploy.turbomind as tm

        if not getattr(tm, "is_available", lambda: getattr(tm, "_tm", None) is not None)():
            reason = getattr(tm, "_import_error", None)
            raise ctx.unavailable(f"backend unavailable: TurboMind's native module is missing ({reason})")
    if not torch.cuda.is_available():
        reason = f"LMDeploy's {backend} engine needs a CUDA GPU, none is visible"
        raise ctx.unavailable(f"backend unavailable: {reason}")
    ctx.sync = _cuda_sync(torch)

    with ctx.phase("detection"):
        detected = autoget_backend(ctx.model_dir)
    if "hooks_missing" not in ctx.state:  # once per process: a warm run keeps them
        hooks = HOOKS + (PYTORCH_HOOKS if backend == "pytorch" else TURBOMIND_HOOKS)
        missing = (ctx.wrap(module, attr, name, ENGINE) for module, attr, name in hooks)
        ctx.state["hooks_missing"] = [m for m in missing if m]
        ctx.state["log"] = _LogMarks()
        logging.getLogger("lmdeploy").addHandler(ctx.state["log"])
    log: _LogMarks = ctx.state["log"]
    log.marks.clear()

    session_len = int(opts.get("session_len", 512))
    cache = float(opts.get("cache_max_entry_count", 0.1))
    config: Any
    eager = bool(opts.get("eager_mode", False))
    if backend == "pytorch":
        config = PytorchEngineConfig(session_len=session_len, cache_max_entry_count=cache, eager_mode=eager)
    else:
        config = TurbomindEngineConfig(session_len=session_len, cache_max_entry_count=cache)
    with ctx.phase(ENGINE):
        pipe = pipeline(ctx.model_dir, backend_config=config, log_level=str(opts.get("log_level", "INFO")))

    prompt = str(opts.get("prompt", "hi"))
    new_tokens = int(opts.get("max_new_tokens", 8))
    with ctx.phase("first token"):
        first = pipe([prompt], gen_config=GenerationConfig(max_new_tokens=1, ignore_eos=True))
    with ctx.phase("second request"):
        second = pipe([prompt], gen_config=GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True))
    ctx.info(
        lmdeploy=lmdeploy.__version__,
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        gpu=torch.cuda.get_device_name(0),
        detected_backend=detected,
        requested_backend=backend,
        engine_config={"session_len": session_len, "cache_max_entry_count": cache, "eager_mode": eager},
        first_new_tokens=getattr(first[0], "generate_token_len", None),
        second_new_tokens=getattr(second[0], "generate_token_len", None),
        hooks_missing=ctx.state["hooks_missing"],
        log=list(log.marks),
    )
    with ctx.phase("close"):
        pipe.close()
        del pipe, first, second
        gc.collect()
        torch.cuda.empty_cache()


class _LogMarks(logging.Handler):
    """LMDeploy's own log lines with the monotonic time they were emitted: the engine's timeline."""

    def __init__(self, limit: int = 200) -> None:
        super().__init__(level=logging.INFO)
        self.limit = limit
        self.marks: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.marks) < self.limit:
            self.marks.append((round(time.monotonic(), 4), record.getMessage().splitlines()[0][:100]))


def _cuda_sync(torch: Any) -> Any:
    def sync() -> None:
        if torch.cuda.is_initialized():  # never let a sync be the thing that creates the context
            torch.cuda.synchronize()

    return sync
