"""Where the training data goes for trainers: files in the formats they read, optionally the Hub.

One export is a directory named for its content (the same data exports to the same place),
written beside its final name and renamed into place, so a killed run never leaves an export
that looks whole:

    DIRECTORY/VERSION/llama_factory/   dataset_info.json + one NAME.json per LLaMA-Factory set
    DIRECTORY/VERSION/messages/        sft.jsonl, dpo.jsonl (chat turns: TRL's formats)
    DIRECTORY/VERSION/hf/              sft/, dpo/ (Hugging Face `datasets`, save_to_disk)
    DIRECTORY/LATEST                   the newest VERSION
"""

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..method import exports


class ExportError(RuntimeError):
    """The export cannot be written or pushed (not bad rows: those never reach here)."""


def _version(parts: dict[str, Sequence[dict[str, Any]]]) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:12]


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1))


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class ExportResource(dg.ConfigurableResource):
    directory: str = Field(description="Where exports are written (a local directory).")
    hub_repo: str | None = Field(
        None, description="Also push both sets to this Hugging Face dataset repo (e.g. you/autoif), as the "
        "configs `sft` and `dpo`; needs the Hub and a token (HF_TOKEN).",
    )
    hub_private: bool = True

    def export(self, sft: Sequence[dict[str, Any]], dpo: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write every format of these rows; one manifest row per file written."""
        rows = {"sft": list(sft), "dpo": list(dpo)}
        version = _version(rows)
        root = Path(self.directory)
        final = root / version
        _sweep(root)
        if not final.exists():
            staging = _staging(root, version)
            try:
                self._write(staging, rows)
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        latest = _staging(root, "LATEST")
        latest.write_text(version + "\n")
        os.replace(latest, root / "LATEST")
        if self.hub_repo:
            self._push(final)
        return self._manifest(final, version, rows)

    def _write(self, staging: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
        for name, (kind, to_rows, _) in exports.LLAMA_FACTORY.items():
            _write_json(staging / "llama_factory" / f"{name}.json", to_rows(rows[kind]))
        _write_json(staging / "llama_factory" / "dataset_info.json", exports.dataset_info())
        for kind, (to_rows, _) in exports.MESSAGES.items():
            _write_jsonl(staging / "messages" / f"{kind}.jsonl", to_rows(rows[kind]))
        try:
            import datasets
        except ImportError as exc:
            raise ExportError("the Hugging Face export needs the `datasets` package (pip install datasets)") from exc
        for kind, (to_rows, columns) in exports.MESSAGES.items():
            data = to_rows(rows[kind])
            table = datasets.Dataset.from_dict({c: [r[c] for r in data] for c in columns})
            table.save_to_disk(str(staging / "hf" / kind))

    def _push(self, final: Path) -> None:
        import datasets

        for kind in exports.MESSAGES:
            try:
                datasets.load_from_disk(str(final / "hf" / kind)).push_to_hub(
                    self.hub_repo, config_name=kind, private=self.hub_private)
            except Exception as exc:  # no network, no token, no such org: one clear error
                raise ExportError(f"could not push the {kind} set to the Hub repo {self.hub_repo!r}: {exc}") from exc

    @staticmethod
    def _manifest(final: Path, version: str, rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        manifest = []
        for path in sorted(p for p in final.rglob("*") if p.is_file()):
            relative = path.relative_to(final).as_posix()
            fmt = relative.split("/")[0]
            kind = "dpo" if "dpo" in relative else "sft" if "sft" in relative else ""
            manifest.append({"file": relative, "format": fmt, "set": kind, "version": version,
                             "rows": len(rows[kind]) if kind else 0, "bytes": path.stat().st_size,
                             "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        return manifest


def _staging(root: Path, name: str) -> Path:
    """Where `name` is written before it is renamed in; named for this process, so that what a
    killed export left behind can be told from what a running one is writing."""
    return root / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _sweep(root: Path) -> None:
    """Remove the staging of exports whose process is gone (killed mid-write): never read, and
    their space is needed."""
    for stale in root.glob(".*.*.*.tmp"):
        pid = stale.name.split(".")[-3]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True
