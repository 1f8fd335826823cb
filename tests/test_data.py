"""The data layer as a user meets it: every format loads, every bad input gets a message naming the file,
line or column, the validation report counts what is wrong, data_split is reproducible, studio datasets
save atomically and the SFT backend reads them; `python -m backends.data` prints the same report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backends.common import data as datalib
from backends.common.errors import FieldError
from backends.data import store
from backends.data.check import CheckOptions, check
from backends.data.report import language_of
from backends.data.sources import confine, open_source, store_upload

ROOT = Path(__file__).resolve().parent.parent
ROWS = [{"prompt": "What is 2+2?", "response": "4"}, {"prompt": "Capital of France?", "response": "Paris"},
        {"prompt": "法国的首都是？", "response": "巴黎"}]


def _cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backends.data", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def dd(tmp_path) -> Path:
    d = tmp_path / "data"
    (d / "datasets").mkdir(parents=True)
    return d


def _write_all_formats(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["jsonl"] = folder / "a.jsonl"
    out["jsonl"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    out["json"] = folder / "a.json"
    out["json"].write_text(json.dumps(ROWS, ensure_ascii=False, indent=1), encoding="utf-8")
    out["csv"] = folder / "a.csv"
    out["csv"].write_text('prompt,response\n"What is 2+2?",4\n"Capital of France?",Paris\n法国的首都是？,巴黎\n',
                          encoding="utf-8")
    out["tsv"] = folder / "a.tsv"
    out["tsv"].write_text("prompt\tresponse\nWhat is 2+2?\t4\nCapital of France?\tParis\n法国的首都是？\t巴黎\n",
                          encoding="utf-8")
    out["parquet"] = folder / "a.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), out["parquet"])
    from datasets import Dataset

    out["arrow"] = folder / "saved"
    Dataset.from_list(ROWS).save_to_disk(str(out["arrow"]))
    return out


# ------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet", "arrow"])
def test_each_format_loads_to_the_same_rows(dd, fmt):
    files = _write_all_formats(dd / "datasets" / "f")
    op = open_source(str(files[fmt].relative_to(dd)), dd, confine_to_data_dir=True)
    assert op.format == fmt
    assert [{"prompt": r["prompt"], "response": str(r["response"])} for r in op.table.rows] == ROWS
    assert "sft" in op.kinds and "prompt" in op.kinds and "preference" not in op.kinds
    _, rep, rows = check(str(files[fmt]), CheckOptions(kind="sft"), dd)
    assert rep.usable and rep.rows_kept == 3 and rows[2] == {"prompt": "法国的首都是？", "response": "巴黎"}


def test_jsonl_saved_as_json_and_bom_are_read(dd):
    p = dd / "datasets" / "lines.json"
    p.write_text("\ufeff" + "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    tb = datalib.read_table(p)
    assert len(tb.rows) == 3 and tb.where[1] == "line 2"


def test_image_folder_with_captions(dd, tmp_path):
    from PIL import Image

    folder = dd / "datasets" / "imgs"
    folder.mkdir()
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (16, 16), colour).save(folder / f"{colour}.png")
    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "red.png", "text": "a red square"}) + "\n"
        + json.dumps({"file_name": "blue.png", "text": "a blue square"}) + "\n", encoding="utf-8")
    op, rep, rows = check("datasets/imgs", CheckOptions(kind="images"), dd)
    assert op.format == "imagefolder" and op.kinds == ["images"]
    assert rep.usable and rep.rows_kept == 2, rep.to_text()
    saved = store.save("shapes2", rows, rep, data_dir=dd, source="datasets/imgs", image_folder=op.image_folder)
    assert (saved / "images" / "red.png").is_file() and (saved / "images" / "metadata.jsonl").is_file()


# ------------------------------------------------------------------------------------ bad input
def _fatal(dd, rel: str, kind: str = "sft", **kw) -> str:
    _, rep, rows = check(rel, CheckOptions(kind=kind, **kw), dd, confine=True)
    assert not rep.usable and not rows, rep.to_text()
    return rep.fatal


def test_malformed_json_names_line_and_column(dd):
    (dd / "datasets" / "bad.json").write_text('[\n {"prompt": "a", "response": "b"},\n {"prompt": "c" "response": 1}\n]')
    msg = _fatal(dd, "datasets/bad.json")
    assert "bad.json is not valid JSON" in msg and "line 3" in msg


def test_malformed_jsonl_line_is_reported_and_dropped(dd):
    lines = [json.dumps(ROWS[0]), '{"prompt": "broken", ', json.dumps(ROWS[1])]
    (dd / "datasets" / "bad.jsonl").write_text("\n".join(lines) + "\n")
    _, rep, rows = check("datasets/bad.jsonl", CheckOptions(kind="sft"), dd, confine=True)
    assert rep.usable and len(rows) == 2
    assert rep.counts["load"] == 1
    assert any("line 2 is not valid JSON" in str(p) for p in rep.problems), rep.to_text()
    with pytest.raises(FieldError, match="line 2 is not valid JSON"):  # training reads strictly
        datalib.peek(dd / "datasets" / "bad.jsonl")


def test_csv_with_ragged_rows_names_the_line(dd):
    (dd / "datasets" / "r.csv").write_text("prompt,response\na,b\nc,d,e\nf\ng,h\n")
    _, rep, rows = check("datasets/r.csv", CheckOptions(kind="sft"), dd, confine=True)
    text = rep.to_text()
    assert "r.csv line 3" in text and "3 fields, the header has 2" in text
    assert "r.csv line 4" in text and "1 fields" in text
    assert [r["prompt"] for r in rows] == ["a", "g"] and rep.dropped == {"load": 2}


def test_empty_file(dd):
    (dd / "datasets" / "empty.jsonl").write_text("")
    assert "empty.jsonl is empty (0 bytes)" in _fatal(dd, "datasets/empty.jsonl")


def test_no_needed_columns_lists_the_columns_found(dd):
    (dd / "datasets" / "cols.jsonl").write_text(json.dumps({"foo": "x", "bar": "y"}) + "\n")
    msg = _fatal(dd, "datasets/cols.jsonl", kind="preference")
    assert "map prompt" in msg and "foo, bar" in msg


def test_binary_garbage_named_json(dd):
    (dd / "datasets" / "garbage.json").write_bytes(os.urandom(64) + b"\x00\x01\x02" + os.urandom(64))
    assert "garbage.json is not a text file" in _fatal(dd, "datasets/garbage.json")


def test_zero_row_parquet(dd):
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "response": pa.array([], pa.string())}),
                   dd / "datasets" / "zero.parquet")
    msg = _fatal(dd, "datasets/zero.parquet")
    assert "zero.parquet has 0 rows" in msg and "prompt, response" in msg


def test_not_utf8_names_the_line(dd):
    text = '{"prompt": "ok", "response": "ok"}\n{"prompt": "caf\xe9", "response": "x"}\n'
    (dd / "datasets" / "latin1.jsonl").write_bytes(text.encode("latin-1"))
    msg = _fatal(dd, "datasets/latin1.jsonl")
    assert "not UTF-8" in msg and "line 2" in msg and "0xE9" in msg


def test_path_outside_the_data_dir(dd):
    msg = _fatal(dd, "../../etc/passwd")
    assert "outside the data dir" in msg
    with pytest.raises(FieldError, match="outside the data dir"):
        confine("/etc/passwd", dd)


def test_symlink_out_of_the_data_dir(dd, tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps(ROWS[0]) + "\n")
    (dd / "datasets" / "link.jsonl").symlink_to(secret)
    msg = _fatal(dd, "datasets/link.jsonl")
    assert "outside the data dir" in msg and "links to" in msg


def test_upload_over_the_size_limit_writes_nothing(dd, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps(ROWS[0]) * 200)
    with pytest.raises(FieldError, match="over the 0 MB upload limit"):
        store_upload([big], dd, limit=1000)
    assert not (dd / "datasets" / "uploads").exists() or not any((dd / "datasets" / "uploads").iterdir())
    ok = store_upload([big], dd, limit=10 ** 6, original_names=["../../evil name.jsonl"])
    assert ok.parent == dd / "datasets" / "uploads" and ok.name == "evil_name.jsonl"


def test_image_folder_naming_missing_files(dd):
    from PIL import Image

    folder = dd / "datasets" / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "red.png")
    (folder / "notes.png").write_text("not an image")
    meta = [{"file_name": "red.png", "text": "red"}, {"file_name": "gone.png", "text": "gone"},
            {"file_name": "notes.png", "text": "text file"}, {"file_name": "../../x.png", "text": "escape"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    _, rep, rows = check("datasets/imgs", CheckOptions(kind="images"), dd, confine=True)
    text = rep.to_text()
    assert "metadata.jsonl line 2 [file_name]: gone.png not found" in text
    assert "notes.png is not a readable image" in text and "outside the image folder" in text
    assert rows == [{"file_name": "red.png", "text": "red"}] and rep.counts == {"missing_file": 2, "bad_image": 1}


# ---------------------------------------------------------------------------------- validation
def test_report_counts_each_problem_and_drop_or_keep(dd):
    rows = [
        {"prompt": "Q1", "chosen": "good", "rejected": "bad"},
        {"prompt": "Q2", "chosen": "same", "rejected": "same"},
        {"prompt": "Q1", "chosen": "good", "rejected": "bad"},
        {"prompt": "", "chosen": "x", "rejected": "y"},
        {"prompt": 7, "chosen": "x", "rejected": "y"},
        {"prompt": "Q6", "chosen": "x"},
        {"prompt": "Q7", "chosen": "long " * 300, "rejected": "short"},
    ]
    (dd / "datasets" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, rep, kept = check("datasets/p.jsonl", CheckOptions(kind="preference", max_len=64, model="none-such"), dd)
    assert rep.counts == {"missing": 1, "empty": 1, "non_string": 1, "same_pair": 1, "duplicate": 1}
    text = rep.to_text()
    assert "p.jsonl line 2 [rejected]: chosen and rejected are the same text" in text
    assert "p.jsonl line 3: same as line 1" in text
    assert "p.jsonl line 5 [prompt]: prompt must be text, got int" in text
    assert "p.jsonl line 6 [rejected]: no value for rejected" in text
    assert len(kept) == 2 and sum(rep.dropped.values()) == 5 and "dropped 5 rows" in text
    assert "token lengths skipped" in text  # no tokenizer by that name: said, not crashed
    _, rep2, kept2 = check("datasets/p.jsonl", CheckOptions(kind="preference", drop_bad=False, model="none-such"), dd)
    assert len(kept2) == 7 and not rep2.dropped and "rows with problems are kept" in rep2.to_text()


def test_token_lengths_use_the_models_tokenizer(prepared_data_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(prepared_data_dir / "models" / "smollm2-135m-instruct"))
    _, rep, rows = check("demo_sft", CheckOptions(kind="sft", max_len=24), prepared_data_dir)
    lengths = sorted(len(tok(f"{r['prompt']}\n{r['response']}")["input_ids"]) for r in rows)
    s = rep.token_stats
    assert s["max"] == lengths[-1] and s["p50"] == lengths[len(lengths) // 2 - 1 + len(lengths) % 2]
    assert s["over"] == sum(v > 24 for v in lengths) > 0 and rep.counts["too_long"] == s["over"]
    assert sum(n for _, _, n in rep.histogram) == len(rows) == 200
    assert rep.rows_kept == 200  # too long is truncated by training, not dropped, unless asked
    _, rep2, rows2 = check("demo_sft", CheckOptions(kind="sft", max_len=24, drop_too_long=True), prepared_data_dir)
    assert len(rows2) == 200 - s["over"] and rep2.dropped == {"too_long": s["over"]}
    han = sum(any("\u4e00" <= c <= "\u9fff" for c in r["prompt"] + r["response"]) for r in rows)
    assert rep.languages == {"en": 200 - han, "zh": han} and 90 <= han <= 110


def test_language_of():
    assert language_of("The capital of France is Paris.") == "en"
    assert language_of("法国的首都是巴黎。") == "zh"
    assert language_of("日本の首都は東京です。") == "ja"
    assert language_of("12345 !!") == "other"


# ---------------------------------------------------------------------------------- data_split
def test_data_split_is_reproducible_and_disjoint():
    from datasets import Dataset

    ds = Dataset.from_list([{"i": i} for i in range(101)])
    parts = [list(datalib.apply_data_split(ds, "2,4,4", phase=p, seed=1234)["i"]) for p in range(3)]
    again = [list(datalib.apply_data_split(ds, "2,4,4", phase=p, seed=1234)["i"]) for p in range(3)]
    assert parts == again
    assert sorted(parts[0] + parts[1] + parts[2]) == list(range(101))
    assert [len(p) for p in parts] == [20, 40, 41]
    counts = datalib.split_counts(101, "2,4,4", 0.1)
    assert counts == {"step1 sft": 20, "step2 reward": 40, "step3 rlhf": 41, "train": 18, "eval": 2}
    assert list(datalib.apply_data_split(ds, "2,4,4", phase=0, seed=7)["i"]) != parts[0]


def test_saved_dataset_feeds_sft_with_its_split(dd):
    (dd / "datasets" / "d.jsonl").write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n"
                                                     for i in range(50)))
    _, rep, rows = check("datasets/d.jsonl", CheckOptions(kind="sft", data_split="2,4,4", eval_ratio=0.1,
                                                            model="none-such"), dd)
    assert rep.mapping["prompt"] == "question" and rep.mapping["response"] == "answer"
    assert rep.splits["step1 sft"] == 10
    folder = store.save("qa", rows, rep, data_dir=dd, source="datasets/d.jsonl", data_split="2,4,4", seed=99)
    with pytest.raises(FieldError, match="exists"):
        store.save("qa", rows, rep, data_dir=dd, source="x")
    assert [c["name"] for c in store.list_datasets(dd, "sft")] == ["qa"] and store.list_datasets(dd, "images") == []
    assert not [p for p in (dd / "datasets").iterdir() if p.name.startswith(".")]  # no temp folders left
    path = datalib.resolve_dataset("qa", dd)
    assert path == folder / "data.jsonl"
    assert datalib.split_for(path, "", 1234) == ("2,4,4", 99)
    assert datalib.split_for(path, "1,1", 5) == ("1,1", 5)
    step1 = datalib.apply_data_split(datalib.load_rows(path), "2,4,4", phase=0, seed=99)
    assert len(step1) == 10 and set(step1.column_names) == {"prompt", "response"}


@pytest.mark.parametrize("name", ["", "../x", "uploads", "a b"])
def test_bad_dataset_names(dd, name):
    with pytest.raises(FieldError, match="name"):
        store.check_name(name)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_check_and_save(dd):
    (dd / "datasets" / "d.csv").write_text("question,answer\nq1,a1\nq2,a2\nq3,\n")
    r = _cli("check", str(dd / "datasets" / "d.csv"), "--kind", "sft", "--data-dir", str(dd), "--model", "x")
    assert r.returncode == 0, r.stderr
    assert "format: csv" in r.stdout and "prompt ← question" in r.stdout and "d.csv line 4 [answer]" in r.stdout
    r = _cli("check", str(dd / "datasets" / "d.csv"), "--kind", "preference", "--data-dir", str(dd))
    assert r.returncode == 1 and "CANNOT USE" in r.stdout and "question, answer" in r.stdout
    r = _cli("check", str(dd / "datasets" / "d.csv"), "--kind", "sft", "--map", "prompt", "--data-dir", str(dd))
    assert r.returncode == 2 and "FIELD=COLUMN" in r.stderr
    r = _cli("save", str(dd / "datasets" / "d.csv"), "--kind", "sft", "--name", "mine", "--data-dir", str(dd),
             "--map", "prompt=answer", "--map", "response=question", "--model", "x")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((dd / "datasets" / "mine" / "data.jsonl").read_text().splitlines()[0]) == {
        "prompt": "a1", "response": "q1"}
    r = _cli("list", "--data-dir", str(dd))
    assert "mine" in r.stdout and "sft" in r.stdout
    r = _cli("check", "Dahoas/rm-static", "--kind", "preference", "--data-dir", str(dd), "--offline")
    assert r.returncode == 1 and "save_to_disk" in r.stdout


def test_replace_dir_swaps_a_folder_whole(tmp_path):
    """Saving a dataset (or a checkpoint) again under the same name: the folder is the old one or the new one,
    never a mix, and no aside copy is left behind."""
    from backends.common.paths import replace_dir

    dst, new = tmp_path / "ds", tmp_path / ".tmp-ds"
    new.mkdir()
    (new / "data.jsonl").write_text("new\n")
    replace_dir(new, dst)  # first save: a plain rename
    assert (dst / "data.jsonl").read_text() == "new\n" and not new.exists()
    again = tmp_path / ".tmp-ds2"
    again.mkdir()
    (again / "other.txt").write_text("2\n")
    replace_dir(again, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["other.txt"]  # nothing of the old folder is left in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # and no .old- aside copy stays
