"""The TensorRT plan cache: keys, profiles, file naming, records and their checks. Pure Python,
so it is tested here without TensorRT or a GPU."""

import json
import shutil
from dataclasses import replace

import pytest

from iqart.engine.backends import plugin
from iqart.engine.backends.plan_cache import (
    DEFAULT_MAX_SIDE,
    NATIVE_GRAPH,
    NO_PLUGIN,
    TRT_GRAPH,
    Environment,
    PlanCache,
    PlanKey,
    PlanMismatchError,
    Profile,
    fixed_size,
    mismatch,
    profile_for,
)

H100 = Environment(
    "a" * 64, "NVIDIA H100 80GB HBM3", "9.0", "11.0.0", TRT_GRAPH, "0123456789abcdef", settings="5e77135e77135e77"
)
RTX = Environment(
    "a" * 64,
    "any GPU of its targets",
    "8.0,8.6,8.9,12.0",
    "1.7.1.116",
    NATIVE_GRAPH,
    NO_PLUGIN,
    library="tensorrt-rtx",
    settings="5e77135e77135e77",
)
NATIVE_SPEC = {"inputs": [{"name": "image", "shape": ["N", "H", "W", 3]}]}
FIXED_SPEC = {
    "inputs": [{"name": "image", "shape": ["N", 224, 224, 3]}, {"name": "reference", "shape": ["N", 224, 224, 3]}]
}


def test_profile_checks_its_ranges():
    with pytest.raises(ValueError, match="batch sizes must be min <= opt <= max"):
        Profile((8, 1, 32))
    with pytest.raises(ValueError, match="each >= 1"):
        Profile((0, 1, 2))
    with pytest.raises(ValueError, match="image sides"):
        Profile((1, 1, 1), (64, 32, 128))


def test_profile_coverage_and_shapes():
    wide, narrow = Profile((1, 8, 32), (32, 512, 2048)), Profile((1, 8, 8), (32, 512, 1024))
    assert wide.covers(narrow) and not narrow.covers(wide)
    assert not Profile((1, 8, 32)).covers(narrow)  # a fixed-size plan never serves native resolution
    assert narrow.accepts(8, 1024, 40) is None
    assert narrow.accepts(9, 64, 64) == "batch of 9 is outside the plan's batch range 1..8"
    assert "1100x64 is outside the plan's image sides 32..1024" in narrow.accepts(1, 64, 1100)
    assert "--max-side" in narrow.accepts(1, 64, 1100)
    assert narrow.input_shapes(None) == ((1, 32, 32, 3), (8, 512, 512, 3), (8, 1024, 1024, 3))
    assert Profile((1, 4, 16)).input_shapes((224, 224)) == ((1, 224, 224, 3), (4, 224, 224, 3), (16, 224, 224, 3))
    with pytest.raises(ValueError, match="native-resolution model needs a profile with image sides"):
        Profile((1, 4, 16)).input_shapes(None)


def test_profile_for_follows_the_spec():
    assert fixed_size(FIXED_SPEC) == (224, 224) and fixed_size(NATIVE_SPEC) is None
    assert profile_for(FIXED_SPEC, (1, 8, 32)) == Profile((1, 8, 32))
    assert profile_for(NATIVE_SPEC, (1, 8, 8)) == Profile((1, 8, 8), (32, 512, DEFAULT_MAX_SIDE))
    assert profile_for(NATIVE_SPEC, (1, 2, 2), max_side=300).side == (32, 300, 300)
    with pytest.raises(ValueError, match="max side must be at least 32"):
        profile_for(NATIVE_SPEC, (1, 2, 2), max_side=16)


def test_key_round_trips_and_names_its_file():
    key = PlanKey(H100, Profile((1, 8, 32), (32, 512, 1024)))
    assert PlanKey.from_json(json.loads(json.dumps(key.to_json()))) == key
    assert key.stem == f"model.trt-plugin-sm90-trt11.0.0-{key.digest}" and len(key.digest) == 16
    variants = [
        PlanKey(replace(H100, graph_sha256="b" * 64), key.profile),
        PlanKey(replace(H100, gpu="NVIDIA A100-SXM4-80GB", sm="8.0"), key.profile),
        PlanKey(replace(H100, tensorrt="11.1.0"), key.profile),
        PlanKey(replace(H100, plugin="fedcba9876543210"), key.profile),
        PlanKey(replace(H100, graph=NATIVE_GRAPH, plugin=NO_PLUGIN), key.profile),
        PlanKey(H100, Profile((1, 8, 16), (32, 512, 1024))),
        PlanKey(H100, Profile((1, 8, 32), (32, 512, 2048))),
        PlanKey(replace(H100, settings="0000000000000000"), key.profile),
        PlanKey(replace(H100, library="tensorrt-rtx"), key.profile),
    ]
    assert len({key.digest, *(v.digest for v in variants)}) == 10  # every part of the key counts
    assert variants[4].stem.startswith("model.trt-native-sm90-")
    rtx = PlanKey(RTX, key.profile)
    assert rtx.stem == f"model.trt-native-sm80+sm86+sm89+sm120-trtrtx1.7.1.116-{rtx.digest}"
    assert PlanKey.from_json(json.loads(json.dumps(rtx.to_json()))) == rtx
    older = {k: v for k, v in key.to_json().items() if k != "settings"}  # a record from before build settings
    with pytest.raises(KeyError, match="settings"):
        PlanKey.from_json(older)


def test_plan_of_other_build_settings_or_library_is_refused(tmp_path):
    """Changing how plans are built (workspace, flags, targets) changes the
    settings digest, and the old plan is rebuilt, not reused; as is one of the other TensorRT."""
    cache = PlanCache(tmp_path)
    key = PlanKey(H100, Profile((1, 8, 8)))
    cache.store(key, b"plan")
    changed = replace(H100, settings="0123012301230123")
    assert cache.select(changed, key.profile) is None
    assert "built with other build settings" in mismatch(key, changed, key.profile)
    assert mismatch(key, replace(H100, library="tensorrt-rtx"), key.profile) == (
        "built with tensorrt, this backend is tensorrt-rtx"
    )
    record = json.loads(cache.record_path(key).read_text())
    del record["settings"]
    cache.record_path(key).write_text(json.dumps(record))
    assert "no field 'settings' (written by an older iqart: rebuild)" in cache.explain_missing(H100, key.profile)


def test_store_select_and_load(tmp_path):
    cache = PlanCache(tmp_path)
    wide = PlanKey(H100, Profile((1, 8, 32), (32, 512, 2048)))
    narrow = PlanKey(H100, Profile((1, 8, 8), (32, 512, 1024)))
    elsewhere = PlanKey(replace(H100, gpu="NVIDIA A100-SXM4-80GB", sm="8.0"), narrow.profile)
    for key in (wide, narrow, elsewhere):
        cache.store(key, f"plan for {key.digest}".encode())
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == sorted(
        f"{k.stem}{suffix}" for k in (wide, narrow, elsewhere) for suffix in (".plan", ".json")
    )  # nothing temporary
    assert cache.select(H100, Profile((1, 4, 4), (32, 512, 512))) == narrow  # the narrowest that covers
    assert cache.select(H100, Profile((1, 16, 16), (32, 512, 1024))) == wide
    assert cache.select(H100, Profile((1, 8, 64), (32, 512, 1024))) is None
    assert cache.select(H100, Profile((1, 8, 8))) is None  # fixed-size request, native plans only
    assert cache.load(narrow, H100) == f"plan for {narrow.digest}".encode()
    record = json.loads(cache.record_path(narrow).read_text())
    assert record["gpu"] == H100.gpu and record["sm"] == "9.0" and record["tensorrt"] == "11.0.0"
    assert record["plan_bytes"] == len(cache.load(narrow, H100))


def test_plan_from_another_gpu_or_version_is_refused_with_the_reason(tmp_path):
    cache = PlanCache(tmp_path)
    key = PlanKey(H100, Profile((1, 8, 8)))
    cache.store(key, b"plan")
    a100 = replace(H100, gpu="NVIDIA A100-SXM4-80GB", sm="8.0")
    expected = r"built for NVIDIA H100 80GB HBM3 \(sm_90\), this GPU is NVIDIA A100-SXM4-80GB \(sm_80\)"
    with pytest.raises(PlanMismatchError, match=expected):
        cache.load(key, a100)
    newer = replace(H100, tensorrt="11.2.0")
    with pytest.raises(PlanMismatchError, match="built with TensorRT 11.0.0, this is TensorRT 11.2.0"):
        cache.load(key, newer)
    assert cache.select(newer, key.profile) is None
    message = cache.explain_missing(newer, key.profile)
    assert f"{key.stem}.json: built with TensorRT 11.0.0, this is TensorRT 11.2.0" in message
    assert "iqart build DIR" in message


def test_plan_of_another_graph_is_refused(tmp_path):
    cache = PlanCache(tmp_path)
    key = PlanKey(H100, Profile((1, 8, 8)))
    cache.store(key, b"plan")
    reexported = replace(H100, graph_sha256="c" * 64)
    assert mismatch(key, reexported, key.profile).startswith("built from another graph")
    assert cache.select(reexported, key.profile) is None


def test_damaged_plan_or_record_is_refused(tmp_path):
    cache = PlanCache(tmp_path)
    key = PlanKey(H100, Profile((1, 8, 8)))
    cache.store(key, b"plan bytes")
    cache.plan_path(key).write_bytes(b"plan byte")  # truncated
    with pytest.raises(PlanMismatchError, match="contents do not match its record"):
        cache.load(key, H100)
    cache.record_path(key).write_text("{not json")
    with pytest.raises(PlanMismatchError, match="cannot read the plan record"):
        cache.load(key, H100)
    assert cache.select(H100, key.profile) is None
    assert "unreadable record" in cache.explain_missing(H100, key.profile)


def test_plan_without_its_file_is_not_selected(tmp_path):
    cache = PlanCache(tmp_path)
    key = PlanKey(H100, Profile((1, 8, 8)))
    cache.store(key, b"plan")
    cache.plan_path(key).unlink()
    assert cache.select(H100, key.profile) is None
    assert "fits, but its .plan file is missing" in cache.explain_missing(H100, key.profile)


def test_timing_cache_is_per_architecture_and_version(tmp_path):
    cache = PlanCache(tmp_path)
    assert cache.timing_cache_path(H100).name == "timing-sm90-trt11.0.0.cache"
    other_graph = replace(H100, graph_sha256="d" * 64)
    assert cache.timing_cache_path(other_graph) == cache.timing_cache_path(H100)
    cache.store_timing_cache(H100, b"tactics")
    assert cache.timing_cache_path(H100).read_bytes() == b"tactics"
    assert cache.select(H100, Profile((1, 1, 1))) is None  # a timing cache is not a plan


def test_plan_of_the_other_attention_graph_is_not_used(tmp_path):
    cache = PlanCache(tmp_path)
    key = PlanKey(H100, Profile((1, 8, 8)))
    cache.store(key, b"plugin plan")
    native = replace(H100, graph=NATIVE_GRAPH, plugin=NO_PLUGIN)
    assert cache.select(native, key.profile) is None
    assert mismatch(key, native, key.profile) == f"built from {TRT_GRAPH}, this backend runs {NATIVE_GRAPH}"


@pytest.fixture
def kernel_sources(tmp_path, monkeypatch):
    """A copy of kernels/ that plugin.build_key() hashes, so a test can change the plugin's code."""
    copy = shutil.copytree(plugin.KERNELS_DIR, tmp_path / "kernels")
    monkeypatch.setattr(plugin, "KERNELS_DIR", copy)
    monkeypatch.delenv(plugin.LIBRARY_ENV, raising=False)
    return copy


def test_changed_plugin_build_is_rebuilt_not_reused(tmp_path, kernel_sources):
    """A plan keeps the plugin's workspace size from the code that built it: after the plugin's
    sources change, the cached plan no longer fits (the backend then builds a new one) and
    loading it anyway is refused, naming the plugin builds."""
    cache = PlanCache(tmp_path / "artifact")
    before = replace(H100, plugin=plugin.build_key())
    key = PlanKey(before, Profile((1, 8, 8)))
    cache.store(key, b"plan with the old plugin")
    assert cache.select(before, key.profile) == key
    source = kernel_sources / "plugin_core.cpp"
    source.write_text(source.read_text() + "\n// workspace rule changed\n")
    after = replace(H100, plugin=plugin.build_key())
    assert after.plugin != before.plugin
    assert cache.select(after, key.profile) is None
    assert "plugin build" in cache.explain_missing(after, key.profile)
    with pytest.raises(
        PlanMismatchError,
        match=f"built with plugin build {before.plugin}, the plugin library loaded now is {after.plugin}",
    ):
        cache.load(key, after)
    rebuilt = PlanKey(after, key.profile)
    cache.store(rebuilt, b"plan with the new plugin")
    assert cache.select(after, key.profile) == rebuilt and cache.load(rebuilt, after) == b"plan with the new plugin"


def test_prebuilt_plugin_library_is_keyed_by_its_bytes(tmp_path, monkeypatch):
    library = tmp_path / "libiqart_plugins.so"
    library.write_bytes(b"\x7fELF one build")
    monkeypatch.setenv(plugin.LIBRARY_ENV, str(library))
    first = plugin.prebuilt_library()
    assert first.path == library and first.key.startswith("file-")
    library.write_bytes(b"\x7fELF another build")
    assert plugin.prebuilt_library().key != first.key
