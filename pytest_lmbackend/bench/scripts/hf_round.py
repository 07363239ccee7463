"""Start-up of plain transformers: imports, config, tokenizer, weights, two requests, close."""

from __future__ import annotations

import gc
from typing import Any

from pytest_lmbackend.bench.child import RoundContext


def run(ctx: RoundContext) -> None:
    opts = ctx.options
    ctx.require_installed("torch", "transformers")
    (torch,) = ctx.timed_import("import torch", "torch")
    # the Auto classes resolve lazily: their import is part of importing transformers
    transformers, AutoConfig, AutoModelForCausalLM, AutoTokenizer = ctx.timed_import(
        "import transformers", "transformers", "AutoConfig", "AutoModelForCausalLM", "AutoTokenizer")

    device = str(opts.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.startswith("cuda"):
        ctx.sync = _cuda_sync(torch)
        # CUDA context creation on its own, not hidden inside the weight load
        with ctx.phase("device init"):
            torch.zeros(1, device=device)
    with ctx.phase("config load"):
        config = AutoConfig.from_pretrained(ctx.model_dir)
    with ctx.phase("tokenizer load"):
        tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    with ctx.phase("weight load"):
        # typed as Any: transformers' annotations of generate() do not fit a causal LM's use here
        model: Any = AutoModelForCausalLM.from_pretrained(ctx.model_dir, config=config, dtype="auto")
        model = model.to(device).eval()

    prompt = str(opts.get("prompt", "hi"))
    new_tokens = int(opts.get("max_new_tokens", 8))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with ctx.phase("first token"):
        enc = tokenizer([prompt], return_tensors="pt").to(device)
        first: Any = model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=pad)
    with ctx.phase("second request"):
        enc = tokenizer([prompt], return_tensors="pt").to(device)
        second: Any = model.generate(
            **enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad
        )
    prompt_len = int(enc["input_ids"].shape[1])
    facts: dict[str, Any] = {
        "device": device,
        "dtype": str(model.dtype),
        "parameters": sum(p.numel() for p in model.parameters()),
        "first_new_tokens": int(first.shape[1]) - prompt_len,
        "second_new_tokens": int(second.shape[1]) - prompt_len,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["torch_cuda"] = torch.version.cuda
    ctx.info(**facts)
    with ctx.phase("close"):
        del model, first, second, enc
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def _cuda_sync(torch: Any) -> Any:
    def sync() -> None:
        if torch.cuda.is_initialized():  # never let a sync be the thing that creates the context
            torch.cuda.synchronize()

    return sync
