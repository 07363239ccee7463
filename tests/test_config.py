"""Reading model sources: folders, files, mappings, workspaces, the local hub cache, and typed errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_lmbackend import config
from pytest_lmbackend.config import (
    MAX_DEPTH,
    ConfigDepthError,
    ConfigEncodingError,
    ConfigError,
    ConfigJSONError,
    ConfigNotFoundError,
    ConfigPermissionError,
    ConfigReadError,
    ConfigTypeError,
    HubModelNotCachedError,
    ModelConfig,
    SymlinkLoopError,
    read_config,
)

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def write(folder: Path, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_folder_and_file_give_the_same_view() -> None:
    by_folder = read_config(MODELS / "qwen2-head64")
    by_file = read_config(MODELS / "qwen2-head64" / "config.json")
    assert by_folder.data == by_file.data
    assert by_folder.get("architectures") == ["Qwen2ForCausalLM"]
    assert by_folder.path.endswith("config.json")
    assert not by_folder.triton_models


def test_view_is_read_only() -> None:
    cfg = read_config(MODELS / "llama-head128")
    assert cfg.data is not None
    with pytest.raises(TypeError):
        cfg.data["hidden_size"] = 1  # type: ignore[index]


def test_mapping_source() -> None:
    cfg = read_config({"architectures": ["LlamaForCausalLM"], "text_config": {"hidden_size": 8}})
    assert cfg.path == "<mapping>"
    assert cfg.sub("text_config") == {"hidden_size": 8}
    assert cfg.sub("vision_config") is None


def test_quant_method_is_the_first_match_in_file_order() -> None:
    cfg = read_config(
        {
            "architectures": ["X"],
            "text_config": {"quantization_config": {"quant_method": "awq"}},
            "quantization_config": {"quant_method": "smooth_quant"},
        }
    )
    assert cfg.quant_method == "awq"
    assert read_config(MODELS / "llama-smooth-quant").quant_method == "smooth_quant"
    assert read_config({"architectures": ["X"], "layers": [{"quant_method": "gptq"}]}).quant_method == "gptq"


def test_auto_map_is_data_only(tmp_path: Path) -> None:
    # A config whose auto_map points at code that would fail loudly if it were imported.
    folder = write(tmp_path / "m", {"architectures": ["Evil"], "auto_map": {"AutoConfig": "boom.Boom"}})
    (folder / "boom.py").write_text("raise SystemExit('remote code ran')\n")
    assert read_config(folder).get("auto_map") == {"AutoConfig": "boom.Boom"}


def test_workspace_without_config() -> None:
    cfg = read_config(MODELS / "tm-workspace")
    assert cfg.data is None
    assert cfg.triton_models and cfg.workspace_weights
    assert cfg.workspace_arch == "LlamaForCausalLM"


@pytest.mark.parametrize(
    ("fixture", "error", "field"),
    [
        ("no-config", ConfigNotFoundError, "config.json"),
        ("malformed-json", ConfigJSONError, None),
        ("not-utf8", ConfigEncodingError, None),
    ],
)
def test_typed_errors_name_file_and_field(fixture: str, error: type[ConfigError], field: str | None) -> None:
    with pytest.raises(error) as info:
        read_config(MODELS / fixture)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert str(MODELS / fixture) in str(info.value)
    if field is not None:
        assert repr(field) in str(info.value)


def test_malformed_json_says_where(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"a": 1,\n  "b": }', encoding="utf-8")
    with pytest.raises(ConfigJSONError, match="line 2 column"):
        read_config(tmp_path)


def test_overlong_number(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": ' + "9" * 5000 + "}", encoding="utf-8")
    with pytest.raises(ConfigJSONError, match="unreadable JSON value"):
        read_config(tmp_path)


@pytest.mark.parametrize("value", [[1, 2], [["LlamaForCausalLM"]], {"a": "b"}, 3, "LlamaForCausalLM"])
def test_values_of_any_type_are_read_as_they_are(value: object) -> None:
    # what a release makes of them is the rules' to say (some answer, some raise)
    cfg = read_config({"architectures": value, "quantization_config": "x"})
    assert cfg.get("architectures") == value and not cfg.bare and cfg.notes == ()


@pytest.mark.parametrize("top", [[], "x", 1, None])
def test_top_level_must_be_an_object(tmp_path: Path, top: object) -> None:
    write(tmp_path, top)
    with pytest.raises(ConfigTypeError, match="top level must be a JSON object"):
        read_config(tmp_path)


def test_nesting_too_deep() -> None:
    deep: dict[str, object] = {"architectures": ["LlamaForCausalLM"]}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        child: dict[str, object] = {}
        node["n"] = child
        node = child
    cfg = read_config(deep)  # the nested search runs only when a rule needs it
    with pytest.raises(ConfigDepthError) as info:
        _ = cfg.quant_method
    assert info.value.path == "<mapping>"


def test_nesting_too_deep_for_the_parser(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ConfigDepthError):
        read_config(tmp_path)


def test_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "config.json").symlink_to(tmp_path / "config.json")
    with pytest.raises(SymlinkLoopError):
        read_config(tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(SymlinkLoopError):
        read_config(loop)


def test_missing_path() -> None:
    with pytest.raises(ConfigNotFoundError, match="no such file or folder"):
        read_config("./definitely/not/here")


def test_cache_sees_edits(tmp_path: Path) -> None:
    write(tmp_path, {"architectures": ["A"]})
    first = read_config(tmp_path)
    assert read_config(tmp_path) is first  # warm: served from the cache
    write(tmp_path, {"architectures": ["LongerName"]})
    assert read_config(tmp_path).get("architectures") == ["LongerName"]
    (tmp_path / "triton_models").mkdir()
    assert read_config(tmp_path).triton_models


def test_cache_keeps_each_source_label(tmp_path: Path) -> None:
    write(tmp_path, {"architectures": ["A"]})
    assert read_config(tmp_path).source == str(tmp_path)
    assert read_config(str(tmp_path) + "/").source == str(tmp_path) + "/"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache


def test_hub_id_from_local_cache(hub_cache: Path) -> None:
    repo = hub_cache / "models--acme--tiny-llama"
    write(repo / "snapshots" / "abc123", {"architectures": ["LlamaForCausalLM"]})
    write(repo / "snapshots" / "old000", {"architectures": ["Old"]})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123", encoding="utf-8")
    cfg = read_config("acme/tiny-llama")
    assert cfg.get("architectures") == ["LlamaForCausalLM"]
    assert cfg.source == "acme/tiny-llama"


def test_hub_id_from_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "home" / "hub" / "models--acme--m"
    write(repo / "snapshots" / "r1", {"architectures": ["M"]})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("r1")
    assert config.hub_cache_dirs() == [os.path.join(str(tmp_path / "home"), "hub")]
    assert read_config("acme/m").get("architectures") == ["M"]


@pytest.mark.parametrize("ref", [None, "r1\n", "r2"])
def test_hub_id_without_a_usable_ref_is_not_guessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    ref: str | None) -> None:
    """huggingface_hub offline reads refs/main exactly and looks no further; LMDeploy then fails.
    No snapshot is guessed: the error names the ref file."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--acme--m"
    write(repo / "snapshots" / "r1", {"architectures": ["M"]})
    if ref is not None:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(ref)
    with pytest.raises(HubModelNotCachedError, match="without a usable revision") as info:
        read_config("acme/m")
    assert "refs" in str(info.value) and "pass the snapshot folder" in str(info.value)


def test_sources_that_are_no_path_and_odd_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigTypeError, match=r"a model source is a folder or config\.json path, .*NoneType"):
        read_config(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigTypeError, match="not int"):
        read_config(123)  # type: ignore[arg-type]
    with pytest.raises(ConfigNotFoundError, match="an empty path names no model"):
        read_config("")
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / "config.json").symlink_to("../../blobs/missing")
    with pytest.raises(ConfigNotFoundError, match=r"dangling symlink .*unfinished download"):
        read_config(tmp_path / "dangling")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "config.json")
    with pytest.raises(ConfigNotFoundError, match="not a regular file"):
        read_config(fifo)  # would otherwise wait forever for a writer
    repo = tmp_path / "models--acme--m"
    (repo / "snapshots" / "r1").mkdir(parents=True)
    with pytest.raises(ConfigNotFoundError, match="Hugging Face cache repo; pass snapshots/<revision> or the "
                                                   "id 'acme/m'"):
        read_config(repo)


def test_hub_id_not_cached_never_downloads(hub_cache: Path) -> None:
    with pytest.raises(HubModelNotCachedError) as info:
        read_config("acme/not-cached")
    assert "not in the local Hugging Face cache" in str(info.value)
    assert str(hub_cache) in str(info.value)
    assert isinstance(info.value, ConfigNotFoundError)


def test_model_config_is_frozen() -> None:
    cfg = read_config({"architectures": ["A"]})
    assert isinstance(cfg, ModelConfig)
    with pytest.raises(AttributeError):
        cfg.path = "x"  # type: ignore[misc]


def test_the_quant_method_search_takes_an_order_and_any_depth_up_to_the_cap() -> None:
    cfg = read_config({"quantization_config": {"quant_method": "awq"},
                       "text_config": {"quant_method": "smooth_quant"}, "x": [{"quant_method": "fp8"}]})
    assert cfg.quant_method == "awq"
    assert cfg.quant_method_in_order(first=("text_config",)) == "smooth_quant"
    assert cfg.quant_method_in_order(last=("quantization_config", "text_config")) == "fp8"
    deep: dict[str, object] = {"architectures": ["LlamaForCausalLM"]}
    node = deep
    for _ in range(150):  # real LMDeploy answered at this depth
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    node["quant_method"] = "smooth_quant"
    assert read_config(deep).quant_method == "smooth_quant"


def test_a_config_file_path_never_sees_a_workspace_beside_it(tmp_path: Path) -> None:
    """LMDeploy 0.18.0 answered pytorch for the file and turbomind for its folder."""
    from pytest_lmbackend.rules import detect

    write(tmp_path, {"architectures": ["MistralForCausalLM"], "model_type": "mistral"})
    (tmp_path / "triton_models").mkdir()
    assert detect(tmp_path / "config.json", lmdeploy="0.18.0").backend == "pytorch"
    assert detect(tmp_path, lmdeploy="0.18.0").backend == "turbomind"


@pytest.mark.parametrize("source", ["a\x00b", "models/\x00/x", Path("x\x00")])
def test_a_nul_in_a_path_is_a_typed_error(source: str | Path) -> None:
    from pytest_lmbackend.rules import detect

    with pytest.raises(ConfigNotFoundError, match="NUL") as info:
        detect(source)
    assert "\\x00" in info.value.path  # shown escaped, never raw


def _denied(path: str, *args: object, **kwargs: object) -> object:
    raise PermissionError(13, "Permission denied", path)


def test_an_unreadable_config_is_a_permission_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write(tmp_path / "m", {"architectures": ["LlamaForCausalLM"]})
    config.clear_cache()
    monkeypatch.setattr(config, "open", _denied, raising=False)  # as for a file mode 000, even as root
    for source in (folder, folder / "config.json"):
        with pytest.raises(ConfigPermissionError, match="permission denied") as info:
            read_config(source)
        assert info.value.path == str(folder / "config.json")
        assert not isinstance(info.value, ConfigNotFoundError)
        assert isinstance(info.value, ConfigReadError) and info.value.errno == 13


def test_a_folder_that_cannot_be_searched_is_a_permission_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write(tmp_path / "m", {"architectures": ["LlamaForCausalLM"]})
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(config.os, "stat", stat)
    with pytest.raises(ConfigPermissionError) as info:
        read_config(folder)
    assert str(folder) in str(info.value) and "permission denied" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of any mode")
def test_a_real_mode_000_file_is_a_permission_error(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", {"architectures": ["LlamaForCausalLM"]})
    (folder / "config.json").chmod(0)
    try:
        with pytest.raises(ConfigPermissionError):
            read_config(folder)
    finally:
        (folder / "config.json").chmod(0o644)


def test_other_read_failures_are_read_errors_not_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write(tmp_path / "m", {"architectures": ["LlamaForCausalLM"]})
    config.clear_cache()

    def broken(path: str, *args: object, **kwargs: object) -> object:
        raise OSError(5, "Input/output error", path)

    monkeypatch.setattr(config, "open", broken, raising=False)
    with pytest.raises(ConfigReadError, match="Input/output error") as info:
        read_config(folder)
    assert not isinstance(info.value, (ConfigNotFoundError, ConfigPermissionError))
