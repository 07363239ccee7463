"""Synthetic model folders: config, tiny random weights, a local tokenizer of the exact size."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pytest_lmbackend.modeldir import (
    BOS_ID,
    EOS_ID,
    MAX_TRAINED_VOCAB,
    MIN_VOCAB_SIZE,
    WEIGHT_ARCHITECTURES,
    ModelDirError,
    tiny_llama,
    tiny_llama_config,
    transformers_config,
    weight_shapes,
    workspace_yaml,
    write_model_dir,
    write_tokenizer,
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_config_only_writes_just_config_json(tmp_path: Path) -> None:
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64}
    out = write_model_dir(tmp_path / "m", cfg)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert json.loads((out / "config.json").read_text()) == cfg


def test_tiny_llama_config_matches_its_arguments() -> None:
    cfg = tiny_llama_config(vocab_size=512, hidden_size=256, num_heads=4, num_kv_heads=2, num_layers=3)
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["head_dim"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]) == (64, 2, 3)
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (BOS_ID, EOS_ID)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hidden_size": 100, "num_heads": 3}, "hidden_size"),
        ({"num_heads": 4, "num_kv_heads": 3, "hidden_size": 128}, "num_kv_heads"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_tiny_llama_config_rejects_inconsistent_sizes(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ModelDirError) as info:
        tiny_llama_config(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_weight_shapes_follow_the_architecture() -> None:
    base = tiny_llama_config(vocab_size=300, hidden_size=128, num_heads=2, num_layers=1)
    llama = weight_shapes(base)
    assert llama["model.embed_tokens.weight"] == (300, 128)
    assert llama["lm_head.weight"] == (300, 128)
    assert llama["model.layers.0.mlp.down_proj.weight"] == (128, 256)
    assert not any(k.endswith(".bias") for k in llama)
    qwen2 = weight_shapes({**base, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    assert qwen2["model.layers.0.self_attn.k_proj.bias"] == (128,)
    assert "model.layers.0.self_attn.o_proj.bias" not in qwen2
    qwen3 = weight_shapes({**base, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"})
    assert qwen3["model.layers.0.self_attn.q_norm.weight"] == (64,)
    biased = weight_shapes({**base, "attention_bias": True, "mlp_bias": True})
    assert biased["model.layers.0.self_attn.o_proj.bias"] == (128,)
    assert biased["model.layers.0.mlp.down_proj.bias"] == (128,)
    tied = weight_shapes({**base, "tie_word_embeddings": True})
    assert "lm_head.weight" not in tied
    gqa = weight_shapes({**base, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32})
    assert gqa["model.layers.0.self_attn.k_proj.weight"] == (32, 128)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"architectures": ["BertModel"]}, "architectures"),
        ({"architectures": "LlamaForCausalLM"}, "architectures"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_hidden_layers": True}, "num_hidden_layers"),
        ({"vocab_size": "1024"}, "vocab_size"),
        ({"architectures": ["Qwen2ForCausalLM"]}, "model_type"),  # model_type "llama" builds a Llama
        ({"attention_bias": "yes"}, "attention_bias"),
        ({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": None}, "head_dim"),
    ],
)
def test_weight_shapes_name_the_bad_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ModelDirError) as info:
        weight_shapes({**tiny_llama_config(), **change}, path=Path("m/config.json"))
    assert info.value.field == field
    assert "m/config.json" in str(info.value)


def test_tokenizer_has_exactly_the_asked_size_and_decodes_every_id(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    info = write_tokenizer(tmp_path, vocab_size=700)
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() == info.vocab_size == 700
    assert tok.id_to_token(BOS_ID) == "<s>" and tok.id_to_token(EOS_ID) == "</s>"
    assert all(tok.id_to_token(i) is not None for i in range(700))
    ids = tok.encode("hello world").ids
    assert ids[0] == BOS_ID  # the post-processor adds <s>
    assert tok.decode(ids, skip_special_tokens=True) == "hello world"
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "add_generation_prompt" in cfg["chat_template"]


def test_a_large_vocabulary_is_padded_beyond_the_trained_merges(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    info = write_tokenizer(tmp_path, vocab_size=MAX_TRAINED_VOCAB + 5000)
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() == info.vocab_size == MAX_TRAINED_VOCAB + 5000
    assert info.trained_tokens <= MAX_TRAINED_VOCAB
    last = MAX_TRAINED_VOCAB + 4999
    assert tok.id_to_token(last) == f"<extra_{last - info.trained_tokens}>"
    assert tok.decode([last]) == f"<extra_{last - info.trained_tokens}>"
    assert (
        max(tok.encode("hello world, the quick fox").ids) < info.trained_tokens
    )  # padding is never produced


def test_weights_of_a_real_sized_config_are_refused_before_any_file(tmp_path: Path) -> None:
    big = tiny_llama_config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                            num_heads=28, num_kv_heads=4)  # fmt: skip
    with pytest.raises(ModelDirError, match="exceed max_parameters=100,000,000"):
        write_model_dir(tmp_path / "big", big, weights=True, tokenizer=True)
    assert not (tmp_path / "big").exists()
    with pytest.raises(ModelDirError, match="vocab_size"):
        write_model_dir(tmp_path / "small", {**tiny_llama_config(), "vocab_size": 100}, tokenizer=True)
    assert not (tmp_path / "small").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("torch_dtype", "cuda"), ("torch_dtype", "nonsense"), ("dtype", 16), ("torch_dtype", "int8"),
     ("initializer_range", "0.02"), ("initializer_range", float("nan")), ("initializer_range", True),
     ("initializer_range", -1)],
)
def test_weights_of_a_bad_dtype_or_spread_are_refused_naming_the_field(tmp_path: Path, field: str,
                                                                       value: object) -> None:
    """``getattr(torch, "cuda")`` took the module as a dtype, 'nonsense' raised AttributeError and a text
    spread ValueError, from deep inside, after the tokenizer was written."""
    config = {k: v for k, v in tiny_llama_config().items() if k not in ("dtype", "torch_dtype")}
    config[field] = value
    with pytest.raises(ModelDirError, match=f"field '{field}'"):
        write_model_dir(tmp_path / "m", config, weights=True, tokenizer=True)
    assert not (tmp_path / "m").exists()


def test_tokenizer_rejects_a_vocabulary_below_the_byte_alphabet(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="vocab_size"):
        write_tokenizer(tmp_path, vocab_size=MIN_VOCAB_SIZE - 1)


def test_tokenizer_needs_a_vocab_size_in_the_config(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="vocab_size"):
        write_model_dir(tmp_path, {"architectures": ["LlamaForCausalLM"]}, tokenizer=True)


def test_tokenizer_reads_a_nested_text_config(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    write_model_dir(tmp_path, {"architectures": ["X"], "text_config": {"vocab_size": 400}}, tokenizer=True)
    assert len(json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]) <= 400
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (BOS_ID, EOS_ID)


def test_tiny_llama_is_complete_and_deterministic(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    a = tiny_llama(tmp_path / "a", vocab_size=512, seed=3)
    b = tiny_llama(tmp_path / "b", vocab_size=512, seed=3)
    c = tiny_llama(tmp_path / "c", vocab_size=512, seed=4)
    names = {p.name for p in a.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {"generation_config.json"} <= names
    cfg = json.loads((a / "config.json").read_text())
    tensors = safetensors_torch.load_file(str(a / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == weight_shapes(cfg)
    assert all(v.dtype == torch.bfloat16 for v in tensors.values())
    assert torch.all(tensors["model.norm.weight"] == 1)
    assert _digest(a / "model.safetensors") == _digest(b / "model.safetensors")
    assert _digest(a / "tokenizer.json") == _digest(b / "tokenizer.json")
    assert _digest(a / "model.safetensors") != _digest(c / "model.safetensors")


def test_tiny_llama_loads_offline_in_transformers(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = tiny_llama(tmp_path / "m", vocab_size=400, hidden_size=64, intermediate_size=128, num_heads=1)
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert len(tok) == model.config.vocab_size == 400
    assert type(model).__name__ == "LlamaForCausalLM"
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("<s>") and prompt.endswith("<|assistant|>\n")
    enc = tok(["hi there"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=EOS_ID)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3
    assert isinstance(tok.decode(out[0]), str)


# Minimal configs: what a user writes when only the sizes matter. Each model type's config class in
# transformers fills the rest its own way (Mistral: 8 kv heads; Qwen2/Qwen3: 32 kv heads; Qwen3: head
# size 128 whatever the hidden size).
MINIMAL = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
           "vocab_size": 320}


@pytest.mark.parametrize("arch", WEIGHT_ARCHITECTURES)
def test_weights_from_a_minimal_config_load_in_transformers_as_written(tmp_path: Path, arch: str) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = {"architectures": [arch], **MINIMAL}
    folder = write_model_dir(tmp_path / "m", config, weights=True, tokenizer=True)
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, output_loading_info=True)
    assert type(model).__name__ == arch
    assert {k: v for k, v in info.items() if v} == {}  # nothing missing, unexpected or mismatched
    filled = transformers_config(config)
    loaded = model.config
    for key in ("num_key_value_heads", "vocab_size", "hidden_size", "tie_word_embeddings"):
        assert getattr(loaded, key) == filled[key], key
    assert model.model.layers[0].self_attn.head_dim == filled["head_dim"]
    written = json.loads((folder / "config.json").read_text())
    assert written["model_type"] == filled["model_type"]
    assert {k: written[k] for k in MINIMAL} == MINIMAL  # given values are kept as given
    assert written["num_key_value_heads"] == filled["num_key_value_heads"]


def test_transformers_defaults_per_model_type() -> None:
    shapes = {a: transformers_config({"architectures": [a], **MINIMAL}) for a in WEIGHT_ARCHITECTURES}
    assert {a: (f["model_type"], f["num_key_value_heads"], f["head_dim"]) for a, f in shapes.items()} == {
        "LlamaForCausalLM": ("llama", 4, 16),
        "MistralForCausalLM": ("mistral", 8, 16),
        "Qwen2ForCausalLM": ("qwen2", 32, 16),
        "Qwen3ForCausalLM": ("qwen3", 32, 128),
    }
    null_kv = transformers_config({"architectures": ["MistralForCausalLM"], **MINIMAL,
                                   "num_key_value_heads": None})
    assert null_kv["num_key_value_heads"] == 4  # __post_init__: null means as many as the heads


def test_a_size_left_out_is_transformers_default_and_the_refusal_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"hidden_size=4096.*transformers' defaults for mistral"):
        write_model_dir(tmp_path / "m", {"architectures": ["MistralForCausalLM"], "vocab_size": 300},
                        weights=True)


def test_weights_follow_the_umask(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    old = os.umask(0o027)
    try:
        folder = tiny_llama(tmp_path / "m", vocab_size=300, hidden_size=64, intermediate_size=64, num_heads=1)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert set(modes.values()) == {0o640}, modes


def test_one_write_model_dir_serves_strategies_too(tmp_path: Path) -> None:
    from pytest_lmbackend import strategies
    from pytest_lmbackend.strategies import MalformedConfig

    assert strategies.write_model_dir is write_model_dir
    raw = write_model_dir(tmp_path / "raw", MalformedConfig("not_json", b"nope"), workspace=True)
    assert (raw / "config.json").read_bytes() == b"nope"
    yaml = raw / "triton_models" / "weights" / "config.yaml"
    assert yaml.read_text() == workspace_yaml("LlamaForCausalLM")
    qwen = write_model_dir(tmp_path / "ws", {"architectures": ["Qwen2ForCausalLM"]}, workspace=True)
    assert "model_arch: Qwen2ForCausalLM" in (qwen / "triton_models" / "weights" / "config.yaml").read_text()
    with pytest.raises(ModelDirError, match="need the config as a mapping"):
        write_model_dir(tmp_path / "bad", MalformedConfig("empty_file", b""), weights=True)


def test_lm_model_synthetic_pipelines_start_for_every_model_type(pytester: pytest.Pytester) -> None:
    """``lm_model(config, synthetic=True)`` writes through ``write_model_dir``: each model type's
    minimal config gives a folder transformers loads and generates from."""
    from importlib.util import find_spec

    if find_spec("torch") is None or find_spec("transformers") is None:
        pytest.skip("needs torch and transformers (the test extra)")
    # head counts that transformers' default kv heads divide (Mistral 8, Qwen 32): generation works
    heads = {"MistralForCausalLM": 8, "Qwen2ForCausalLM": 32, "Qwen3ForCausalLM": 32}
    configs = {a: {"architectures": [a], **MINIMAL, "num_attention_heads": n} for a, n in heads.items()}
    pytester.makepyfile("\n".join(["import pytest", ""] + [
        f"@pytest.mark.lm_model({config!r}, synthetic=True)\n"
        f"def test_{arch.lower()}(lm_pipeline):\n"
        f"    assert lm_pipeline(['hi'], max_new_tokens=2)\n"
        for arch, config in configs.items()]))
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--lm-backend=transformers", "--lm-hardware=cpu")
    result.assert_outcomes(passed=3)
