"""Fake hardware: shipped named profiles, ``NAMExN``, and user JSON/TOML profile files."""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import tomllib
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_lmbackend.hardware.equipment import equip, split_equipment
from pytest_lmbackend.hardware.model import GPU, MAX_NODES, NPU, Hardware, ProfileError
from pytest_lmbackend.hardware.npusmi import chip_name
from pytest_lmbackend.hardware.packages import normalize, read_packages
from pytest_lmbackend.hardware.units import parse_capability, parse_memory
from pytest_lmbackend.hardware.visibility import Device, apply_npu_visibility, apply_visibility

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
_TOP_KEYS = {"name", "description", "driver", "cuda", "ascend", "backends", "packages", "gpus",
             "cuda_visible_devices", "nodes", "npus", "npu_driver", "ascend_rt_visible_devices"}
_GPU_KEYS = {"name", "capability", "memory_total", "memory_free", "count", "uuid", "pci_bus_id"}
_NPU_KEYS = {"name", "memory_total", "memory_free", "count", "pci_bus_id"}
_REPEAT = re.compile(r"^(.+?)x([0-9]+)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # what a shipped name (or NAMExN) can be
MAX_GPUS = 1024


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``pytest_lmbackend/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _fake_uuid(profile: str, index: int) -> str:
    # stable per (profile, index) and shaped like a real UUID; crc32 avoids loading hashlib's OpenSSL
    a, b = zlib.crc32(f"{profile}:{index}".encode()), zlib.crc32(f"{index}:{profile}".encode())
    return f"GPU-{a:08x}-{b >> 16:04x}-{b & 0xFFFF:04x}-{len(profile) & 0xFFFF:04x}-{index:012x}"


def _looks_like_file(spec: str) -> bool:
    return spec.endswith((".toml", ".json")) or "/" in spec or "\\" in spec


MAX_PROFILE_BYTES = 1024 * 1024  # a profile of 1024 GPU tables is about 100 KB


def _read_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes, from a regular file of at most ``MAX_PROFILE_BYTES`` only: a FIFO would wait
    for a writer forever and a device (``/dev/zero``) never ends. Opened without blocking, then
    checked on the open descriptor, so what is read is what was checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        message = f"hardware profile {shown}: cannot read it: {exc.strerror or exc}"
        raise ProfileError(message, path=shown) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ProfileError(f"hardware profile {shown}: not a regular file (a folder, FIFO, socket or "
                               "device); a profile is a .toml or .json file", path=shown)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_PROFILE_BYTES:
            chunk = os.read(fd, MAX_PROFILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        message = f"hardware profile {shown}: cannot read it: {exc.strerror or exc}"
        raise ProfileError(message, path=shown) from exc
    finally:
        os.close(fd)
    if size > MAX_PROFILE_BYTES:
        raise ProfileError(f"hardware profile {shown}: larger than 1 MiB; a profile is a few hundred bytes",
                           path=shown)
    return b"".join(chunks)


def _read_file(path: Path, shown: str) -> dict[str, Any]:
    raw = _read_bytes(path, shown)
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        if path.suffix == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except RecursionError as exc:
        message = f"hardware profile {shown}: not valid {kind}: nested too deeply"
        raise ProfileError(message, path=shown) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProfileError(f"hardware profile {shown}: not valid {kind}: {exc}", path=shown) from exc
    if not isinstance(data, dict):
        raise ProfileError(f"hardware profile {shown}: must hold an object/table at the top, "
                           f"not {type(data).__name__}", path=shown)
    return data


def _brief(value: object) -> str:
    """``repr(value)`` cut short for a message: a field's value may be any size or depth."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a {type(value).__name__} nested too deeply"
    return text if len(text) <= 60 else f"{text[:40]}...{text[-10:]}"


def _fail(shown: str, field: str, problem: str) -> ProfileError:
    return ProfileError(f"hardware profile {shown}: field {field!r}: {problem}", path=shown, field=field)


def _optional_str(data: Mapping[str, Any], key: str, shown: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # cuda = 12.8 written as a number
    if not isinstance(value, str):
        raise _fail(shown, key, f"must be a string, not {_brief(value)}")
    return value


_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")


def _version(data: Mapping[str, Any], key: str, shown: str) -> str | None:
    """A driver or CUDA version: digits and dots (``"12.8"``, ``"550.127.05"``); a number is read as
    written (``cuda = 13`` is "13", which compares as 13.0). Quote it: TOML reads 12.10 as 12.1."""
    value = _optional_str(data, key, shown)
    if value is not None and not _VERSION.fullmatch(value.strip()):
        raise _fail(shown, key, f"must be a version such as \"12.8\", not {_brief(data.get(key))}")
    return value.strip() if value is not None else None


def _entries(data: Mapping[str, Any], key: str, shown: str, known: set[str],
             required: tuple[str, ...]) -> list[tuple[str, dict[str, Any], int]]:
    """The tables of ``gpus`` or ``npus``, each with its field path and count, checked for shape."""
    entries = data.get(key, [])
    what = key[:-1].upper()
    if not isinstance(entries, list):
        raise _fail(shown, key, f"must be a list of {what} tables, not {type(entries).__name__}")
    out: list[tuple[str, dict[str, Any], int]] = []
    total = 0
    for n, entry in enumerate(entries):
        where = f"{key}[{n}]"
        if not isinstance(entry, dict):
            raise _fail(shown, where, f"must be a table/object, not {_brief(entry)}")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise _fail(shown, f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(known))})")
        for field in required:
            if field not in entry:
                raise _fail(shown, f"{where}.{field}", "missing")
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise _fail(shown, f"{where}.name", f"must be a non-empty string, not {_brief(name)}")
        count = entry.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GPUS:
            raise _fail(shown, f"{where}.count",
                        f"must be an integer from 1 to {MAX_GPUS}, not {_brief(count)}")
        total += count
        if total > MAX_GPUS:  # checked before any device is made: a huge profile costs nothing
            raise _fail(shown, key, f"more than {MAX_GPUS} {what}s")
        for field in ("uuid", "pci_bus_id"):
            value = entry.get(field)
            if value is not None and (not isinstance(value, str) or count != 1):
                raise _fail(shown, f"{where}.{field}",
                            "must be a string, and only on an entry with count = 1")
        out.append((where, entry, count))
    return out


def _memory(entry: Mapping[str, Any], where: str, shown: str) -> tuple[int, int]:
    """``memory_total`` and ``memory_free`` (default: the total) in bytes."""
    values: dict[str, int | None] = {}
    for key in ("memory_total", "memory_free"):
        try:
            values[key] = parse_memory(entry[key]) if key in entry else None
        except ValueError as exc:
            raise _fail(shown, f"{where}.{key}", str(exc)) from exc
    total = values["memory_total"] or 0
    free = values["memory_free"] if values["memory_free"] is not None else total
    if free > total:
        raise _fail(shown, f"{where}.memory_free", "is larger than memory_total")
    return total, free


def _gpus(data: Mapping[str, Any], shown: str, profile: str) -> list[GPU]:
    gpus: list[GPU] = []
    required = ("name", "capability", "memory_total")
    for where, entry, count in _entries(data, "gpus", shown, _GPU_KEYS, required):
        try:
            capability = parse_capability(entry["capability"])
        except ValueError as exc:
            raise _fail(shown, f"{where}.capability", str(exc)) from exc
        total, free = _memory(entry, where, shown)
        uuid, bus = entry.get("uuid"), entry.get("pci_bus_id")
        for _ in range(count):
            i = len(gpus)
            gpus.append(GPU(index=i, physical_index=i, uuid=uuid or _fake_uuid(profile, i),
                            name=entry["name"], capability=capability, memory_total=total, memory_free=free,
                            pci_bus_id=bus))
    seen: dict[str, int] = {}
    for gpu in gpus:
        first = seen.setdefault(gpu.uuid.lower(), gpu.index)
        if first != gpu.index:
            raise _fail(shown, "gpus.uuid",
                        f"{gpu.uuid!r} is given to GPU {first} and GPU {gpu.index}: each GPU has its own")
    return gpus


def _npus(data: Mapping[str, Any], shown: str) -> list[NPU]:
    npus: list[NPU] = []
    for where, entry, count in _entries(data, "npus", shown, _NPU_KEYS, ("name", "memory_total")):
        total, free = _memory(entry, where, shown)
        for _ in range(count):
            i = len(npus)
            npus.append(NPU(index=i, physical_index=i, name=chip_name(entry["name"]), memory_total=total,
                            memory_free=free, pci_bus_id=entry.get("pci_bus_id")))
    return npus


def _nodes(data: Mapping[str, Any], shown: str) -> int:
    """How many machines like this one the profile's job spans: a whole number, 1 unless stated."""
    nodes = data.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise _fail(shown, "nodes",
                    f"must be a whole number of nodes from 1 to {MAX_NODES}, not {_brief(nodes)}")
    return nodes


def hardware_from_data(data: Mapping[str, Any], *, shown: str, profile: str,
                       local_packages: Mapping[str, str] | None = None) -> Hardware:
    """Check a profile's fields and build its ``Hardware``; ``ProfileError`` names the bad field."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _fail(shown, unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    gpus = _gpus(data, shown, profile)
    npus = _npus(data, shown)
    ascend = data.get("ascend", bool(npus))
    if not isinstance(ascend, bool):
        raise _fail(shown, "ascend", f"must be true or false, not {_brief(ascend)}")
    if npus and not ascend:
        raise _fail(shown, "ascend", "is false, but the profile lists NPUs")
    backends = data.get("backends")
    if backends is not None and (not isinstance(backends, list)
                                 or not all(isinstance(b, str) and b for b in backends)):
        raise _fail(shown, "backends", f"must be a list of backend names, not {_brief(backends)}")
    packages_data = data.get("packages")
    if packages_data is None:
        packages = dict(read_packages() if local_packages is None else local_packages)
    elif isinstance(packages_data, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in packages_data.items()):
        packages = {(k if k == "lmdeploy.turbomind" else normalize(k)): v for k, v in packages_data.items()}
    else:
        raise _fail(shown, "packages",
                    'must map package names to version strings, e.g. {lmdeploy = "0.18.0"}')
    visible, notes = _masked_gpus(data, gpus, shown, profile)
    visible_npus, npu_notes = _masked_npus(data, npus, shown, profile)
    return Hardware(gpus=visible, driver=_version(data, "driver", shown),
                    cuda=_version(data, "cuda", shown), source="profile", profile=profile,
                    ascend=ascend, packages=packages,
                    backends=tuple(backends) if backends is not None else None, warnings=(*notes, *npu_notes),
                    packages_stated=packages_data is not None, nodes=_nodes(data, shown),
                    npus=visible_npus, npu_driver=_version(data, "npu_driver", shown))


def _masked_gpus(data: Mapping[str, Any], gpus: list[GPU], shown: str,
                 profile: str) -> tuple[tuple[GPU, ...], tuple[str, ...]]:
    """The profile's own ``cuda_visible_devices`` over its GPUs (not this machine's environment)."""
    spec = _optional_str(data, "cuda_visible_devices", shown)
    if spec is None:
        return tuple(gpus), ()
    visible, masked = apply_visibility([Device(g) for g in gpus], spec)
    return visible, tuple(f"profile {profile!r}: cuda_visible_devices{n.removeprefix('CUDA_VISIBLE_DEVICES')}"
                          for n in masked)


def _masked_npus(data: Mapping[str, Any], npus: list[NPU], shown: str,
                 profile: str) -> tuple[tuple[NPU, ...], tuple[str, ...]]:
    """The profile's own ``ascend_rt_visible_devices`` over its NPUs."""
    spec = _optional_str(data, "ascend_rt_visible_devices", shown)
    if spec is None:
        return tuple(npus), ()
    return apply_npu_visibility(npus, spec, variable=f"profile {profile!r}: ascend_rt_visible_devices")


def _repeat_base(kind: str) -> Path | None:
    """The shipped profile an ``xN`` name repeats: ``kind`` itself (``a10``), else a shipped
    ``kindxM`` of one kind (``a100-80gbx8`` for ``a100-80gbx4``)."""
    exact = PROFILE_DIR / f"{kind}.toml"
    if exact.is_file():
        return exact
    for path in sorted(PROFILE_DIR.glob(f"{kind}x*.toml")):
        found = _REPEAT.match(path.stem)
        if found is None or found.group(1) != kind:
            continue
        data = _read_file(path, f"{path.stem!r}")
        entries = [e for key in ("gpus", "npus") for e in (data.get(key) or []) if isinstance(e, dict)]
        held = sum(e.get("count", 1) for e in entries)
        if held == int(found.group(2)):  # really M of a kind, not a product name like rtx3090
            return path
    return None


def _repeat(data: dict[str, Any], count: int, shown: str) -> dict[str, Any]:
    """``data`` with ``count`` devices of its one kind (GPU or NPU)."""
    tables = [(key, e) for key in ("gpus", "npus") for e in (data.get(key) or []) if isinstance(e, dict)]
    kinds = {(key, e.get("name"), str(e.get("capability")), str(e.get("memory_total"))) for key, e in tables}
    if len(kinds) != 1:
        raise ProfileError(f"hardware profile {shown}: 'xN' needs a profile with exactly one kind of "
                           "GPU or NPU", path=shown, field="gpus")
    key, first = tables[0]
    device = {k: v for k, v in first.items() if k not in ("count", "uuid", "pci_bus_id")}
    return {**data, key: [{**device, "count": count}]}


def _load_file(spec: str, local_packages: Mapping[str, str] | None) -> Hardware:
    path = Path(spec)
    data = _read_file(path, spec)
    name = data.get("name")
    return hardware_from_data(data, shown=spec, profile=name if isinstance(name, str) else path.stem,
                              local_packages=local_packages)


MAX_NAME = 255  # longer than any file name: neither a shipped name nor a file


def _held(data: Mapping[str, Any]) -> int:
    """How many GPUs and NPUs a profile's tables hold."""
    return sum(e.get("count", 1) for key in ("gpus", "npus") for e in (data.get(key) or [])
               if isinstance(e, dict) and isinstance(e.get("count", 1), int))


def _load_repeat(name: str, spec: str, local_packages: Mapping[str, str] | None) -> Hardware | None:
    """``NAMExN``: N devices of the shipped one-kind profile NAME; None when NAME is not shipped."""
    match = _REPEAT.match(name)
    base_file = _repeat_base(match.group(1)) if match else None
    if match is None or base_file is None:
        return None
    kind, count = match.group(1), int(match.group(2))
    if not 1 <= count <= MAX_GPUS:
        raise ProfileError(f"hardware profile {spec!r}: count must be 1 to {MAX_GPUS}", path=spec)
    base = _read_file(base_file, f"{base_file.stem!r}")
    held = _held(base)
    if base_file.stem == kind and held > 1:
        # a100-80gbx8x2: the base already counts its GPUs; a product name such as rtx4090 does not
        single = _REPEAT.match(kind)
        plain = single.group(1) if single is not None else kind
        unit = "NPUs" if base.get("npus") else "GPUs"
        raise ProfileError(f"hardware profile {spec!r}: {kind!r} already names {held} {unit}; "
                           f"for {count} of its kind say {plain}x{count}", path=spec)
    data = _repeat(base, count, f"{spec!r}")
    return hardware_from_data(data, shown=f"{spec!r}", profile=name, local_packages=local_packages)


def _is_file(spec: str) -> bool:
    try:
        return Path(spec).is_file()
    except (OSError, ValueError):
        return False


def _unknown(spec: str) -> ProfileError:
    """No such profile: the shipped names, and the closest one when a name was mistyped."""
    shipped = shipped_profiles()
    name = spec.lower()
    close = difflib.get_close_matches(name, shipped, n=1, cutoff=0.75)
    match = _REPEAT.match(name)
    if not close and match is not None:  # h10x2: the kind mistyped, the count kept
        kinds = difflib.get_close_matches(match.group(1), shipped, n=1, cutoff=0.6)
        close = [f"{kinds[0]}x{match.group(2)}"] if kinds else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ProfileError(f"hardware profile {spec!r}: no such profile or file{hint}; shipped: "
                        f"{', '.join(shipped)} (add xN for N devices of one kind, e.g. a10x2), or give a "
                        "path to a .toml/.json file", path=spec)


def load_profile(spec: str, *, local_packages: Mapping[str, str] | None = None) -> Hardware:
    """A ``Hardware`` from a shipped name (``h100``), ``NAMExN`` (``a10x4``) or a ``.toml``/``.json``
    file, optionally equipped with LMDeploy (``h100x8+lmdeploy``, ``+lmdeploy=0.18.0``,
    ``+lmdeploy-pytorch``; see ``equip``).

    :param local_packages: packages to report when the profile states none (default: this interpreter's).
    :raises ProfileError: unknown name or bad file; the message names the file and the field.
    """
    spec = spec.strip()
    if not spec:
        raise ProfileError("hardware profile: empty name")
    base, equipment = split_equipment(spec) if not _is_file(spec) else (spec, None)
    if equipment is not None:
        return equip(load_profile(base, local_packages=local_packages), *equipment)
    if _looks_like_file(spec):
        return _load_file(spec, local_packages)
    if len(spec) > MAX_NAME:
        raise ProfileError(f"hardware profile {_brief(spec)}: a name of {len(spec)} characters is longer "
                           f"than any file name ({MAX_NAME}); shipped names are short, e.g. h100x8",
                           path=spec[:MAX_NAME])
    odd = next((ch for ch in spec if ch.isdigit() and not ch.isascii()), None)
    if odd is not None:
        raise ProfileError(f"hardware profile {spec!r}: {odd!r} is not an ASCII digit; names and counts "
                           "are written with 0-9 (e.g. h100x3)", path=spec)
    name = spec.lower()
    if _NAME.match(name):
        file = PROFILE_DIR / f"{name}.toml"
        if file.is_file():
            return hardware_from_data(_read_file(file, repr(name)), shown=repr(name), profile=name,
                                      local_packages=local_packages)
        repeated = _load_repeat(name, spec, local_packages)
        if repeated is not None:
            return repeated
    if _is_file(spec):  # a file without a suffix, after the shipped names so "h100" stays ours
        return _load_file(spec, local_packages)
    raise _unknown(spec)


def load_profiles(specs: str, *, local_packages: Mapping[str, str] | None = None) -> list[Hardware]:
    """One ``Hardware`` per comma-separated profile (``"a100-40gb,h100x8"``), in order."""
    names = [s.strip() for s in specs.split(",") if s.strip()]
    if not names:
        raise ProfileError("hardware profile: empty list")
    if local_packages is None:
        local_packages = read_packages()  # scan once for all profiles that state no packages
    return [load_profile(name, local_packages=local_packages) for name in names]
