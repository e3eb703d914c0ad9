"""Where the training data goes for trainers: files in the formats they read, optionally the Hub.

One export is a directory named for its content (the same data exports to the same place),
written beside its final name and renamed into place, so a killed run never leaves an export
that looks whole:

    DIRECTORY/VERSION/llama_factory/   dataset_info.json + one NAME.json per LLaMA-Factory set
    DIRECTORY/VERSION/messages/        sft.jsonl, dpo.jsonl (chat turns: TRL's formats)
    DIRECTORY/VERSION/hf/              sft/, dpo/ (Hugging Face `datasets`, save_to_disk)
    DIRECTORY/LATEST                   the newest VERSION

The RL prompts (`export_rlvr`) the same way, one level down, each version named for its rows:

    DIRECTORY/rlvr/VERSION/trl/rl_prompts.jsonl            TRL GRPOTrainer: prompt turns, verifiers, probe, ids
    DIRECTORY/rlvr/VERSION/hf/rl_prompts/                   the same rows as a Hugging Face `datasets` (save_to_disk)
    DIRECTORY/rlvr/VERSION/verl/rl_prompts.parquet          verl: data_source, prompt, ability, reward_model, extra_info
    DIRECTORY/rlvr/VERSION/open_instruct/rl_prompts.jsonl   open-instruct RLVR: messages, ground_truth, dataset, ...
    DIRECTORY/rlvr/LATEST                                   the newest RLVR VERSION

Both go through one write path (`_publish`): the version is a hash of the rows, a version
already there is not written again, a new one is written into a staging directory named for
this process and renamed into place, then LATEST is replaced; staging left by a killed export is
swept by the next one once its process is gone. (The formats themselves are method/exports.py.)
"""

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..method import exports


RLVR = "rlvr"  # DIRECTORY/rlvr/: the RL prompts' exports
RL_SET = "rl_prompts"


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


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ExportError("the Hugging Face export needs the `datasets` package (pip install datasets)") from exc
    return datasets


def _write_hf(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A Hugging Face `datasets` directory (save_to_disk) of `rows`, with `columns` also when empty."""
    _datasets().Dataset.from_dict({c: [r[c] for r in rows] for c in columns}).save_to_disk(str(path))


def _verl_schema() -> Any:
    """verl's RL parquet columns as its preprocessing scripts write them (`datasets` to_parquet):
    the turns a list of structs, reward_model and extra_info structs."""
    import pyarrow as pa

    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()), ("prompt", pa.list_(turn)), ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("prompt_id", pa.string()), ("instruction_id", pa.string()),
                                  ("instruction", pa.string()), ("probe", pa.bool_())])),
    ])


def _write_parquet(path: Path, rows: Sequence[dict[str, Any]], schema: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), str(path))


class ExportResource(dg.ConfigurableResource):
    directory: str = Field(description="Where exports are written (a local directory).")
    hub_repo: str | None = Field(
        None, description="Also push the sets to this Hugging Face dataset repo (e.g. you/autoif), as the "
        "configs `sft` and `dpo` (training_exports) and `rl_prompts` (rlvr_exports); needs the Hub and a "
        "token (HF_TOKEN).",
    )
    hub_private: bool = True

    def export(self, sft: Sequence[dict[str, Any]], dpo: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write every format of these rows; one manifest row per file written."""
        return self._publish(Path(self.directory), {"sft": list(sft), "dpo": list(dpo)}, self._write)

    def export_rlvr(self, rl_prompts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write the RL prompts (rl_prompts rows) in TRL's, verl's and open-instruct's formats
        into DIRECTORY/rlvr/; one manifest row per file written."""
        return self._publish(Path(self.directory) / RLVR, {RL_SET: list(rl_prompts)}, self._write_rlvr)

    def _publish(self, root: Path, rows: dict[str, list[dict[str, Any]]],
                 write: Callable[[Path, dict[str, list[dict[str, Any]]]], None]) -> list[dict[str, Any]]:
        """root/VERSION, VERSION the rows' hash: written by `write` beside it and renamed in
        unless it is there already; then root/LATEST names it, and the Hub gets its `hf` sets."""
        version = _version(rows)
        final = root / version
        _sweep(root)
        if not final.exists():
            staging = _staging(root, version)
            try:
                write(staging, rows)
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        latest = _staging(root, "LATEST")
        latest.write_text(version + "\n")
        os.replace(latest, root / "LATEST")
        if self.hub_repo:
            self._push(final, list(rows))
        return self._manifest(final, version, rows)

    def _write(self, staging: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
        for name, (kind, to_rows, _) in exports.LLAMA_FACTORY.items():
            _write_json(staging / "llama_factory" / f"{name}.json", to_rows(rows[kind]))
        _write_json(staging / "llama_factory" / "dataset_info.json", exports.dataset_info())
        for kind, (to_rows, _) in exports.MESSAGES.items():
            _write_jsonl(staging / "messages" / f"{kind}.jsonl", to_rows(rows[kind]))
        for kind, (to_rows, columns) in exports.MESSAGES.items():
            _write_hf(staging / "hf" / kind, to_rows(rows[kind]), columns)

    def _write_rlvr(self, staging: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
        prompts = rows[RL_SET]
        trl_rows, trl_columns = exports.rl_trl(prompts), exports.RLVR["trl"][1]
        _write_jsonl(staging / "trl" / f"{RL_SET}.jsonl", trl_rows)
        _write_hf(staging / "hf" / RL_SET, trl_rows, trl_columns)
        _write_parquet(staging / "verl" / f"{RL_SET}.parquet", exports.rl_verl(prompts), _verl_schema())
        _write_jsonl(staging / "open_instruct" / f"{RL_SET}.jsonl", exports.rl_open_instruct(prompts))

    def _push(self, final: Path, kinds: list[str]) -> None:
        import datasets

        for kind in kinds:
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
            kind = next((k for k in sorted(rows) if k in relative), "")
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
