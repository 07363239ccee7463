"""Facts about one transformers release, read by running it: run with an oracle environment's Python.

    PYTHON scripts/transformers_facts.py facts                 # JSON: version, model types, search orders
    PYTHON scripts/transformers_facts.py default-configs OUT   # OUT/<model_type>/config.json per model type

It imports transformers (never torch models, never the network) and uses the standard library only, so it
runs in any environment that ``python -m pytest_lmbackend.oracle setup RELEASE`` builds.
``scripts/generate_rules_data.py`` runs it in each environment and writes the tables under
``pytest_lmbackend/rules/`` from its output.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

warnings.filterwarnings("ignore")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _transformers() -> Any:
    import transformers

    logging.disable(logging.CRITICAL)
    return transformers


def _mapping() -> tuple[Any, dict[str, str]]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES

    return CONFIG_MAPPING, dict(CONFIG_MAPPING_NAMES)


def _search(config: Any, key: str, path: str = "") -> tuple[str, Any] | None:
    """LMDeploy's ``search_nested_config``: the first ``key`` of a depth-first search, and where."""
    if isinstance(config, dict):
        for k, v in config.items():
            if k == key:
                return path, v
            if isinstance(v, (dict, list)):
                found = _search(v, key, f"{path}.{k}" if path else k)
                if found is not None:
                    return found
    elif isinstance(config, list):
        for item in config:
            found = _search(item, key, path)
            if found is not None:
                return found
    return None


def search_orders() -> dict[str, Any]:
    """Per composite model type, in which order LMDeploy's ``quant_method`` search meets the top level
    and each sub-config: ``{"order": [sub-config keys, with "" for the top level]}``; or the error
    building it."""
    mapping, names = _mapping()
    out: dict[str, Any] = {}
    for model_type in names:
        try:
            cls = mapping[model_type]
        except Exception:
            continue
        subs = getattr(cls, "sub_configs", None)
        if not isinstance(subs, dict) or not subs:
            continue
        order: list[str] = []
        out[model_type] = {"sub_configs": sorted(subs)}
        try:
            # each place gets its own quant_method; the search is asked again with the winner removed
            places = ["", *subs]
            while places:
                data: dict[str, Any] = {"model_type": model_type, "architectures": ["X"]}
                for place in places:
                    quant = {"quant_method": f"at:{place}"}
                    if place:
                        data[place] = {"quantization_config": quant}
                    else:
                        data["quantization_config"] = quant
                found = _search(cls.from_dict(data).to_dict(), "quant_method")
                value = found[1] if found else None
                if not isinstance(value, str) or not value.startswith("at:") or value[3:] not in places:
                    break
                order.append(value[3:])
                places.remove(value[3:])
        except Exception as exc:
            out[model_type]["error"] = f"{type(exc).__name__}: {exc}"[:200]
            out[model_type]["key_order"] = _key_order(cls, model_type, subs)
            continue
        out[model_type]["order"] = order
    return out


def _key_order(cls: Any, model_type: str, subs: dict[str, Any]) -> list[str] | None:
    """Where a class's default sub-configs land in ``to_dict()`` relative to a key read from the file
    (the top level is ""): the order when no sub-config of the file can be given to the class."""
    try:
        built = cls.from_dict({"model_type": model_type, "architectures": ["X"], "zz_file_key": 1})
        keys = list(built.to_dict())
    except Exception:
        return None
    if "zz_file_key" not in keys:
        return None
    places = {k: i for i, k in enumerate(keys) if k in subs}
    places[""] = keys.index("zz_file_key")
    return sorted(places, key=places.__getitem__)


# values of the wrong type a class may reject for the size fields the rules read, by letter
_PROBES = {"s": "64", "f": 64.5, "b": True, "n": None, "l": [64]}
_SIZE_FIELDS = ("hidden_size", "num_attention_heads", "head_dim", "num_key_value_heads")


def rejections() -> dict[str, dict[str, str]]:
    """Per model type, the size fields whose wrong-typed values its class fails on (letters of
    ``_PROBES``): transformers 4 computes head_dim from them in some classes, 5 validates types."""
    mapping, names = _mapping()
    out: dict[str, dict[str, str]] = {}
    for model_type in names:
        try:
            cls = mapping[model_type]
            cls.from_dict({"model_type": model_type})
        except Exception:
            continue
        found: dict[str, str] = {}
        for field in _SIZE_FIELDS:
            letters = ""
            for letter, value in _PROBES.items():
                try:
                    repr(cls.from_dict({"model_type": model_type, field: value}))
                except Exception:
                    letters += letter
            if letters:
                found[field] = letters
        if found:
            out[model_type] = found
    return out


def sub_config_kinds() -> dict[str, dict[str, str]]:
    """Per composite model type and sub-config key: "auto" where the class builds it by the dict's own
    model_type, else that sub-config class's model type; "+" appended where the class takes a value
    that is not an object (a string) without failing."""
    mapping, names = _mapping()
    out: dict[str, dict[str, str]] = {}
    for model_type in names:
        try:
            cls = mapping[model_type]
        except Exception:
            continue
        subs = getattr(cls, "sub_configs", None)
        if not isinstance(subs, dict) or not subs:
            continue
        kinds: dict[str, str] = {}
        for key, sub in subs.items():
            auto = getattr(sub, "__name__", "") == "AutoConfig"
            name = "auto" if auto else str(getattr(sub, "model_type", ""))
            try:
                repr(cls.from_dict({"model_type": model_type, key: "x"}))
                name += "+"
            except Exception:
                pass
            kinds[key] = name
        out[model_type] = kinds
    return out


def facts() -> dict[str, Any]:
    transformers = _transformers()
    _, names = _mapping()
    from transformers import configuration_utils

    allowed = getattr(configuration_utils, "ALLOWED_LAYER_TYPES", None)
    mapping, _ = _mapping()
    without_rope = []
    if int(transformers.__version__.split(".")[0]) >= 5:
        for model_type in names:
            try:
                instance = mapping[model_type]()
            except Exception:
                continue
            if not hasattr(instance, "rope_parameters"):
                without_rope.append(model_type)
    try:
        import torch

        dtypes = sorted(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype))
    except ImportError:
        dtypes = []
    return {
        "transformers": transformers.__version__,
        "torch_dtypes": dtypes,
        "model_types": sorted(names),
        "search_orders": search_orders(),
        "allowed_layer_types": sorted(allowed) if allowed is not None else None,
        "without_rope_parameters": sorted(without_rope),
        "rejections": rejections(),
        "sub_config_kinds": sub_config_kinds(),
    }


def _arch_for(model_type: str) -> str | None:
    """The model class a checkpoint of this type is saved from: causal LM, else image-text, else base."""
    from transformers.models.auto import modeling_auto as m

    for table in ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
                  "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
                  "MODEL_MAPPING_NAMES"):
        names = getattr(m, table, {})
        found = names.get(model_type)
        if isinstance(found, (list, tuple)):
            found = found[0] if found else None
        if isinstance(found, str):
            return found
    return None


def default_configs(out: str) -> dict[str, Any]:
    """Each model type's default config, as ``save_pretrained`` writes it for the class it names in
    ``architectures``; returns what could not be built and why."""
    _transformers()
    mapping, names = _mapping()
    failed: dict[str, str] = {}
    for model_type in names:
        try:
            cfg = mapping[model_type]()
            arch = _arch_for(model_type)
            if arch is not None:
                cfg.architectures = [arch]
            text = cfg.to_json_string(use_diff=True)
        except Exception as exc:
            failed[model_type] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        folder = os.path.join(out, model_type)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as fh:
            fh.write(text)
    return {"transformers": _transformers().__version__, "failed": failed}


def main(argv: list[str]) -> int:
    if argv[:1] == ["facts"]:
        print(json.dumps(facts()))
        return 0
    if argv[:1] == ["default-configs"] and len(argv) == 2:
        print(json.dumps(default_configs(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
