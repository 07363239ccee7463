"""Runs inside an LMDeploy venv: answers JSON requests on stdin with LMDeploy's own detection results."""

# This file is executed by the venv's interpreter, not imported by pytest_lmbackend: it must
# run on any Python LMDeploy supports and use only the standard library besides LMDeploy. It is
# one file because it runs by path where pytest_lmbackend is not installed.
# Protocol (one JSON object per line each way):
#   -> {"id": N, "op": "detect", "items": [{"config": {...}} | {"path": "DIR"}, ...],
#       "workspace": false, "language_model_only": false}
#   <- {"id": N, "results": [{"arch", "turbomind_supported", "backend", "is_vl", "task",
#                             "error", "errors"}, ...]}
#   -> {"id": N, "op": "convert", "items": [{"turbomind": {field: value}}, ...]}
#   -> {"id": N, "op": "engine_fields"}     -> {"id": N, "result": {"turbomind": [...], "pytorch": [...]}}
#   -> {"id": N, "op": "ping"}              -> {"id": N, "result": "pong"}
# The first line written is {"ready": true, "lmdeploy": ..., "transformers": ..., "turbomind": ...}.

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import inspect
import json
import os
import shutil
import sys
import tempfile
import traceback
import types
from typing import Any

MAX_MESSAGE = 500


def describe(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def takes(fn: Any, name: str) -> bool:
    fn = getattr(fn, "fn", fn)  # a PerFolderMemo: ask the function it wraps
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def activate_turbomind_rules(lmdeploy: Any) -> str:
    """Let `autoget_backend` consult TurboMind's rules on a machine without its CUDA extension.

    Up to 0.17 the rules apply when `lmdeploy.turbomind.supported_models` imports; from 0.18 also
    when `turbomind.is_available()` says so. The package `__init__` loads the extension and fails
    here, so a plain package module over the installed folder takes its place: the rule modules
    then load from the real files, unchanged.
    """
    tm: Any
    try:
        tm = importlib.import_module("lmdeploy.turbomind")
        how = "package imported"
    except Exception as exc:  # the extension or one of its libraries is missing
        how = "package replaced (" + describe(exc)[:100] + ")"
        for name in [
            n for n in sys.modules if n == "lmdeploy.turbomind" or n.startswith("lmdeploy.turbomind.")
        ]:
            del sys.modules[name]
        folder = os.path.join(os.path.dirname(lmdeploy.__file__), "turbomind")
        tm = types.ModuleType("lmdeploy.turbomind")
        spec = importlib.machinery.ModuleSpec("lmdeploy.turbomind", None, is_package=True)
        spec.submodule_search_locations = [folder]
        tm.__spec__ = spec
        tm.__path__ = [folder]
        tm.__file__ = os.path.join(folder, "__init__.py")
        tm.__package__ = "lmdeploy.turbomind"
        sys.modules["lmdeploy.turbomind"] = tm
        lmdeploy.turbomind = tm
    tm.is_available = lambda: True
    return how


def placeholder_serving_modules() -> None:
    """`get_task` imports the serving engines only to return their classes: never load them."""
    classes = {"AsyncEngine": type("AsyncEngine", (), {}), "VLAsyncEngine": type("VLAsyncEngine", (), {})}
    for name in ("lmdeploy.serve.async_engine", "lmdeploy.serve.vl_async_engine", "lmdeploy.serve.core"):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(classes)
            sys.modules[name] = module


def cheap_config_repr(transformers: Any) -> None:
    """Stop transformers from serialising every config for a log line that is never shown.

    `PretrainedConfig.from_dict` runs `logger.info(f"Model config {config}")`: the f-string is
    built even with logging off, and `__repr__` diffs against a fresh default config, which is
    most of the cost of a config load. It is NOT answer-neutral: the repr calls `to_dict()`, and
    where that raises (a sub-config's `quantization_config` that is a string), `AutoConfig` fails
    and LMDeploy falls back to a bare config, which answers, where without the repr LMDeploy fails
    later. So it is used only where asked for (`LMBACKEND_ORACLE_CHEAP_REPR=1`, for throughput runs).
    """
    cls = transformers.PretrainedConfig
    cls.__repr__ = lambda self: f"{type(self).__name__}(...)"


class PerFolderMemo:
    """Load each model folder's config once per detection instead of four times.

    `is_supported`, `autoget_backend` and `get_task` each call `get_model_arch` on the same
    folder, and `autoget_backend` calls `is_supported` again; each answer (or exception)
    depends only on the folder's files, which do not change while one folder is being
    detected, so the first answer is handed back to the later callers.
    """

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.answers: dict[Any, tuple[bool, Any]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        if key in self.answers:
            ok, value = self.answers[key]
            if ok:
                return value
            raise value
        try:
            value = self.fn(*args, **kwargs)
        except Exception as exc:
            self.answers[key] = (False, exc)
            raise
        self.answers[key] = (True, value)
        return value


def scratch_root(model_types: list[str]) -> str:
    """A scratch folder whose path names no model type.

    transformers 4.x guesses a config class from the path string when config.json has no
    `model_type`; a path free of every model-type name keeps answers independent of the path.
    """
    for _ in range(100):
        root = tempfile.mkdtemp(prefix="q")
        lowered = root.lower()
        if not any(t and t.lower() in lowered for t in model_types):
            return root
        os.rmdir(root)
    raise RuntimeError("could not make a scratch folder free of model-type names")


class Worker:
    def __init__(self) -> None:
        import lmdeploy
        import lmdeploy.archs as archs
        import transformers

        self.lmdeploy = lmdeploy
        self.transformers = transformers
        self.archs = archs
        self.turbomind = activate_turbomind_rules(lmdeploy)
        if os.environ.get("LMBACKEND_ORACLE_CHEAP_REPR") == "1":
            cheap_config_repr(transformers)
        supported: Any = importlib.import_module("lmdeploy.turbomind.supported_models")
        self.supported = supported
        self.memos: list[PerFolderMemo] = []
        if os.environ.get("LMBACKEND_ORACLE_NO_MEMO") != "1":
            arch_memo = PerFolderMemo(archs.get_model_arch)
            modules: tuple[Any, ...] = (archs, self.supported)
            for module in modules:
                if getattr(module, "get_model_arch", None) is arch_memo.fn:
                    module.get_model_arch = arch_memo
            # autoget_backend imports is_supported from the module at call time: it sees this one
            tm_memo = PerFolderMemo(supported.is_supported)
            supported.is_supported = tm_memo
            self.memos = [arch_memo, tm_memo]
        placeholder_serving_modules()
        try:
            auto = importlib.import_module("transformers.models.auto.configuration_auto")
            types_ = list(auto.CONFIG_MAPPING_NAMES)
        except Exception:
            types_ = []
        self.root = scratch_root(types_)
        self.counter = 0
        self.remote = {"trust_remote_code": False}

    def kw(self, fn: Any) -> dict[str, Any]:
        return self.remote if takes(fn, "trust_remote_code") else {}

    def folder_for(self, item: dict[str, Any], workspace: bool) -> str:
        """The folder to detect: the item's own path, or a scratch folder holding its config.

        Scratch folders are reused (one with a workspace, one without): creating and removing
        a folder per config costs more than detecting it on slow file systems. Nothing caches
        a folder's config between items, so rewriting config.json is enough.
        """
        if "path" in item:
            folder = str(item["path"])
            forced = not takes(self.archs.get_model_arch, "trust_remote_code")
            if forced and os.path.isdir(folder) and any(n.endswith(".py") for n in os.listdir(folder)):
                # this release always trusts remote code: loading the folder would run its Python
                raise PermissionError(
                    f"{folder} ships Python files and lmdeploy "
                    f"{self.lmdeploy.__version__} forces trust_remote_code=True"
                )
            return folder
        folder = os.path.join(self.root, "workspace" if workspace else "plain")
        if not os.path.isdir(folder):
            os.mkdir(folder)
            if workspace:
                os.makedirs(os.path.join(folder, "triton_models", "weights"))
        if workspace:
            arch = "LlamaForCausalLM"
            config = item.get("config")
            if (
                isinstance(config, dict)
                and isinstance(config.get("architectures"), list)
                and config["architectures"]
            ):
                arch = str(config["architectures"][0])
            # the same minimal workspace that pytest_lmbackend.strategies.write_model_dir lays out
            scalar = arch if arch.replace("_", "").replace(".", "").isalnum() else json.dumps(arch)
            text = item.get("workspace_yaml", f"model_config:\n  model_arch: {scalar}\n")
            weights = os.path.join(folder, "triton_models", "weights")
            with open(os.path.join(weights, "config.yaml"), "w", encoding="utf-8") as f:
                f.write(text)
        target = os.path.join(folder, "config.json")
        if "config" in item:
            with open(target, "w", encoding="utf-8") as f:
                json.dump(item["config"], f)
        elif "raw" in item:  # bytes, base64-encoded: hostile files JSON cannot carry
            import base64

            with open(target, "wb") as fb:
                fb.write(base64.b64decode(item["raw"]))
        elif os.path.exists(target):
            os.remove(target)
        return folder

    def detect_one(self, folder: str, language_model_only: bool) -> dict[str, Any]:
        archs = self.archs
        out: dict[str, Any] = {
            "arch": None,
            "turbomind_supported": None,
            "backend": None,
            "is_vl": None,
            "task": None,
            "error": None,
            "errors": {},
        }
        errors: dict[str, str] = out["errors"]
        cfg = None
        try:
            out["arch"], cfg = archs.get_model_arch(folder, **self.kw(archs.get_model_arch))
        except Exception as exc:
            errors["arch"] = describe(exc)
        try:
            out["turbomind_supported"] = bool(
                self.supported.is_supported(folder, **self.kw(self.supported.is_supported))
            )
        except Exception as exc:
            errors["turbomind_supported"] = describe(exc)
        try:
            out["backend"] = archs.autoget_backend(folder, **self.kw(archs.autoget_backend))
        except Exception as exc:
            errors["backend"] = describe(exc)
        # what an explicit `--backend pytorch` run would see when autoget_backend raised
        backend = out["backend"] or "pytorch"
        with_backend = takes(archs.check_vl_llm, "backend")
        if cfg is not None:
            try:
                as_dict = cfg.to_dict()
                vl = archs.check_vl_llm(backend, as_dict) if with_backend else archs.check_vl_llm(as_dict)
                out["is_vl"] = bool(vl)
            except Exception as exc:
                errors["is_vl"] = describe(exc)
        try:
            params = inspect.signature(archs.get_task).parameters
            kwargs: dict[str, Any] = {"model_path": folder}
            if "backend" in params:
                kwargs["backend"] = backend
            if "trust_remote_code" in params:
                kwargs["trust_remote_code"] = False
            if language_model_only:
                if "backend_config" not in params:
                    raise TypeError("this release's get_task takes no backend_config")
                from lmdeploy.messages import PytorchEngineConfig, TurbomindEngineConfig

                cls = TurbomindEngineConfig if backend == "turbomind" else PytorchEngineConfig
                kwargs["backend_config"] = cls(language_model_only=True)
            out["task"] = archs.get_task(**kwargs)[0]
        except Exception as exc:
            errors["task"] = describe(exc)
        # what pipeline() or `lmdeploy serve` would die of: autoget_backend first, then get_task
        out["error"] = errors.get("backend") or errors.get("task")
        return out

    def detect(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        results = []
        for item in request.get("items", []):
            try:
                folder = self.folder_for(item, bool(item.get("workspace", request.get("workspace"))))
                results.append(self.detect_one(folder, bool(request.get("language_model_only"))))
            except Exception as exc:  # writing the folder failed: report it, keep serving
                results.append({"fault": describe(exc)})
            finally:
                for memo in self.memos:
                    memo.answers.clear()
        return results

    # ------------------------------------------------------------------ engine configs
    def engine_classes(self) -> tuple[Any, Any]:
        from lmdeploy.messages import PytorchEngineConfig, TurbomindEngineConfig

        return TurbomindEngineConfig, PytorchEngineConfig

    def engine_fields(self, request: dict[str, Any]) -> dict[str, Any]:
        def fields(cls: Any) -> list[dict[str, Any]]:
            out = []
            for f in dataclasses.fields(cls):
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    default = None
                out.append({"name": f.name, "type": str(f.type), "default": jsonable(default)})
            return out

        tm, pt = self.engine_classes()
        return {"turbomind": fields(tm), "pytorch": fields(pt)}

    def convert(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """`autoget_backend_config(model, user_config)` for each item.

        An item is {"turbomind": kwargs} or {"pytorch": kwargs} (the user's engine config) and
        "model": "pytorch" (default: an arch no TurboMind table names) or "turbomind" (Llama-2-7B).
        """
        tm_cls, pt_cls = self.engine_classes()
        models = {
            "pytorch": {
                "architectures": ["ZetaForCausalLM"],
                "model_type": "zeta_lm",
                "hidden_size": 4096,
                "num_attention_heads": 32,
            },
            "turbomind": {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "num_hidden_layers": 32,
                "vocab_size": 32000,
            },
        }
        folders = {}
        for name, config in models.items():
            folder = os.path.join(self.root, f"engine-{name}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f)
            folders[name] = folder
        results = []
        for item in request.get("items", []):
            rec: dict[str, Any] = {
                "input_error": None,
                "backend": None,
                "result_class": None,
                "result": None,
                "same_object": None,
                "validation_error": None,
                "error": None,
            }
            cls = pt_cls if "pytorch" in item else tm_cls
            try:
                user = cls(**item.get("pytorch", item.get("turbomind", {})))
            except Exception as exc:
                rec["input_error"] = describe(exc)
                results.append(rec)
                continue
            try:
                answer = self.archs.autoget_backend_config(folders[item.get("model", "pytorch")], user)
                if isinstance(answer, tuple):  # (backend, config) from 0.12 on
                    rec["backend"], config = answer
                else:
                    config = answer
                rec["result_class"] = type(config).__name__
                rec["same_object"] = config is user
                values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
                rec["result"] = {k: jsonable(v) for k, v in values.items()}
                try:
                    type(config)(**values)  # the class's own validation, on the converted values
                except Exception as exc:
                    rec["validation_error"] = describe(exc)
            except Exception as exc:
                rec["error"] = describe(exc)
            results.append(rec)
        return results

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "detect":
            return {"results": self.detect(request)}
        if op == "convert":
            return {"results": self.convert(request)}
        if op == "engine_fields":
            return {"result": self.engine_fields(request)}
        if op == "ping":
            return {"result": "pong"}
        raise ValueError(f"unknown op {op!r}")


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if hasattr(value, "value") and type(value).__module__ != "builtins":  # enums
        return jsonable(value.value)
    return repr(value)


def main() -> int:
    # stdout carries the protocol only: keep a private handle on it and send fd 1 to stderr,
    # where LMDeploy's and transformers' logging and any print() end up
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        worker = Worker()
    except Exception as exc:
        out.write(
            json.dumps({"ready": False, "error": describe(exc), "traceback": traceback.format_exc()}) + "\n"
        )
        return 1
    logging.disable(logging.CRITICAL)
    out.write(
        json.dumps(
            {
                "ready": True,
                "lmdeploy": getattr(worker.lmdeploy, "__version__", "?"),
                "transformers": worker.transformers.__version__,
                "turbomind": worker.turbomind,
                "python": sys.version.split()[0],
            }
        )
        + "\n"
    )
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                reply = worker.handle(request)
            except Exception as exc:
                reply = {"fault": describe(exc), "traceback": traceback.format_exc()}
            reply["id"] = request.get("id")
            out.write(json.dumps(reply) + "\n")
    finally:
        shutil.rmtree(worker.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
