"""Exports: the SFT data and DPO pairs in LLaMA-Factory's, TRL's and Hugging Face's formats,
read back the way each trainer reads them."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import datasets
import pytest

from autoif_dagster.assets.datasets import training_exports
from autoif_dagster.method import exports
from autoif_dagster.resources.exports import ExportError, ExportResource

from .rounds import frame

SFT = [{"sample_id": f"sft-{i}", "prompt_id": "prm-1", "response_id": f"resp-{i}", "instruction_id": "ins-1",
        "query_id": "qry-1", "pass_rate": 1.0, "score": 9,
        "messages": [{"role": "user", "content": f"Question {i}? Answer in capitals."},
                     {"role": "assistant", "content": f"ANSWER {i}"}]} for i in range(3)]
PAIRS = [{"pair_id": "pair-1", "prompt_id": "prm-1", "chosen_response_id": "resp-0", "rejected_response_id": "resp-9",
          "prompt": "Question 0? Answer in capitals.", "chosen": "ANSWER 0", "rejected": "answer 0",
          "chosen_pass_rate": 1.0, "rejected_pass_rate": 0.0, "rejected_with_instruction": True}]


def _export(tmp_path, **config):
    resource = ExportResource(directory=str(tmp_path / "exports"), **config)
    out = training_exports(dg.build_asset_context(), resource, frame("sft_dataset", SFT), frame("dpo_pairs", PAIRS))
    version = (tmp_path / "exports" / "LATEST").read_text().strip()
    return out, tmp_path / "exports" / version


def test_llama_factory_reads_every_set_by_its_dataset_info(tmp_path):
    out, root = _export(tmp_path)
    info = json.loads((root / "llama_factory" / "dataset_info.json").read_text())
    assert set(info) == set(exports.LLAMA_FACTORY)
    alpaca = json.loads((root / "llama_factory" / info["autoif_sft_alpaca"]["file_name"]).read_text())
    assert alpaca[0] == {"instruction": "Question 0? Answer in capitals.", "input": "", "output": "ANSWER 0", "id": "sft-0"}
    sharegpt = json.loads((root / "llama_factory" / info["autoif_sft_sharegpt"]["file_name"]).read_text())
    column = info["autoif_sft_sharegpt"]["columns"]["messages"]
    assert [t["from"] for t in sharegpt[1][column]] == ["human", "gpt"]
    for name in ("autoif_dpo_alpaca", "autoif_dpo_sharegpt"):  # preference sets: ranking, chosen/rejected columns
        entry = info[name]
        assert entry["ranking"] is True
        row = json.loads((root / "llama_factory" / entry["file_name"]).read_text())[0]
        chosen, rejected = row[entry["columns"]["chosen"]], row[entry["columns"]["rejected"]]
        assert (chosen, rejected) in [("ANSWER 0", "answer 0"),
                                      ({"from": "gpt", "value": "ANSWER 0"}, {"from": "gpt", "value": "answer 0"})]
    manifest = out.value
    assert manifest.filter(manifest["file"] == "llama_factory/autoif_sft_alpaca.json")["rows"].item() == 3
    assert out.metadata["files"].value == manifest.height


def test_messages_jsonl_and_hf_datasets_hold_the_same_rows(tmp_path):
    _, root = _export(tmp_path)
    sft = [json.loads(line) for line in (root / "messages" / "sft.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in sft] == ["ANSWER 0", "ANSWER 1", "ANSWER 2"]
    dpo = [json.loads(line) for line in (root / "messages" / "dpo.jsonl").read_text().splitlines()]
    assert dpo == [{"prompt": [{"role": "user", "content": "Question 0? Answer in capitals."}],
                    "chosen": [{"role": "assistant", "content": "ANSWER 0"}],
                    "rejected": [{"role": "assistant", "content": "answer 0"}], "id": "pair-1"}]
    hf_sft = datasets.load_from_disk(str(root / "hf" / "sft"))
    assert hf_sft.num_rows == 3 and hf_sft[2]["messages"] == sft[2]["messages"]
    assert datasets.load_from_disk(str(root / "hf" / "dpo"))[0]["rejected"] == dpo[0]["rejected"]


def test_the_same_data_exports_to_the_same_place_and_nothing_half_written_stays(tmp_path):
    first, root = _export(tmp_path)
    again, root_again = _export(tmp_path)
    assert root == root_again and first.value.equals(again.value)
    assert [p.name for p in (tmp_path / "exports").iterdir() if p.name.startswith(".")] == []


def test_an_export_that_fails_leaves_no_version_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken)
    with pytest.raises(OSError, match="disk full"):
        _export(tmp_path)
    assert list((tmp_path / "exports").iterdir()) == []  # no version, no LATEST, no staging


def test_a_hub_push_that_cannot_reach_the_hub_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match="could not push the sft set to the Hub repo 'someone/autoif'"):
        _export(tmp_path, hub_repo="someone/autoif")


def test_an_export_killed_mid_write_leaves_nothing_that_looks_whole_and_the_next_lands(tmp_path):
    """SIGKILL runs no cleanup: only writing beside the final name and renaming keeps a half
    export from looking whole. The child slows itself (its own hook, not the package's) so the
    kill lands after the SFT set is on disk and before the DPO set is."""
    directory = tmp_path / "exports"
    ExportResource(directory=str(directory)).export(SFT[:1], [])  # an earlier export: LATEST names it
    before = (directory / "LATEST").read_text().strip()
    script = textwrap.dedent(f"""
        import time
        import datasets
        from autoif_dagster.resources.exports import ExportResource
        from tests.test_exports import PAIRS, SFT

        save = datasets.Dataset.save_to_disk
        def slow(self, path, **kwargs):
            save(self, path, **kwargs)
            time.sleep(600)
        datasets.Dataset.save_to_disk = slow
        ExportResource(directory={str(directory)!r}).export(SFT, PAIRS)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])

    def sft_written() -> bool:
        return any(p.parts[-4] != before for p in directory.glob("*/hf/sft/state.json"))

    try:
        deadline = time.monotonic() + 60
        while not sft_written() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sft_written(), "the child never wrote the SFT set"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    assert {p.name for p in directory.iterdir() if not p.name.startswith(".")} == {"LATEST", before}
    assert (directory / "LATEST").read_text().strip() == before
    assert [p.name for p in directory.glob(f".*.{child.pid}.*.tmp")]  # the killed export's staging

    manifest = ExportResource(directory=str(directory)).export(SFT, PAIRS)
    assert not list(directory.glob(".*.tmp"))  # swept by the next export: its process is gone
    version = (directory / "LATEST").read_text().strip()
    assert version != before and {row["version"] for row in manifest} == {version}
    assert {p.name for p in directory.iterdir() if not p.name.startswith(".")} == {"LATEST", before, version}
    reference = ExportResource(directory=str(tmp_path / "reference")).export(SFT, PAIRS)
    assert [row["file"] for row in manifest] == [row["file"] for row in reference]  # every file of a whole export
    assert datasets.load_from_disk(str(directory / version / "hf" / "dpo")).num_rows == len(PAIRS)
    assert len((directory / version / "messages" / "sft.jsonl").read_text().splitlines()) == len(SFT)


def test_an_export_leaves_the_staging_of_a_running_one_alone(tmp_path):
    """Two runs may export into one home at once: only a dead process's staging is swept."""
    directory = tmp_path / "exports"
    running = directory / f".0123456789ab.{os.getpid()}.deadbeef.tmp"
    running.mkdir(parents=True)
    ExportResource(directory=str(directory)).export(SFT, PAIRS)
    assert running.is_dir()
