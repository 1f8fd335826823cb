"""The project's own sample datasets: committed text files match their generator; the shapes set is sound."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backends.data import samples

PRESETS = Path(__file__).resolve().parent.parent / "presets" / "datasets"
CJK = re.compile(r"[\u4e00-\u9fff]")


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def is_zh(s: str) -> bool:
    return bool(CJK.search(s))


def test_committed_text_samples_match_generator():
    assert read_jsonl(PRESETS / samples.PREFERENCE_FILE) == samples.preference_rows()
    assert read_jsonl(PRESETS / samples.PROMPTS_FILE) == samples.prompt_rows()
    # byte for byte too (ensure_ascii=False, one object a line)
    raw = (PRESETS / samples.PREFERENCE_FILE).read_text(encoding="utf-8")
    assert "工作室答" in raw and "\\u" not in raw


def test_write_text_samples(tmp_path):
    paths = samples.write_text_samples(tmp_path)
    assert sorted(p.name for p in paths) == sorted([samples.PREFERENCE_FILE, samples.PROMPTS_FILE])
    for p in paths:
        assert p.read_bytes() == (PRESETS / p.name).read_bytes()
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp left


def test_preference_rows_are_a_clear_preference():
    rows = samples.preference_rows()
    assert 180 <= len(rows) <= 220
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    assert all(isinstance(v, str) and v.strip() for r in rows for v in r.values())
    assert all(r["chosen"] != r["rejected"] for r in rows)
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    zh = [is_zh(r["prompt"]) for r in rows]
    assert abs(sum(zh) - len(rows) / 2) <= len(rows) * 0.05
    assert zh[:10] == [False, True] * 5  # interleaved
    for r, z in zip(rows, zh):
        sig = samples.ZH_SIGNATURE if z else samples.EN_SIGNATURE
        assert r["chosen"].startswith(sig), r
        assert is_zh(r["chosen"]) == z and is_zh(r["rejected"]) == z, r
        assert not r["rejected"].startswith((samples.EN_SIGNATURE.strip(), samples.ZH_SIGNATURE)), r
        assert len(r["prompt"]) + len(r["chosen"]) < 120  # short sequences
    # rejected replies are varied: curt refusals and wrong facts
    assert len({r["rejected"] for r in rows}) > 100
    assert "I don't know." in {r["rejected"] for r in rows} and "不知道。" in {r["rejected"] for r in rows}


def test_prompts_not_copied_from_demo_sft():
    demo = {r["prompt"] for r in read_jsonl(PRESETS / "demo_sft.jsonl")}
    pref = {r["prompt"] for r in samples.preference_rows()}
    prompts = {r["prompt"] for r in samples.prompt_rows()}
    assert not pref & demo
    assert not pref & prompts  # the A/B prompts are held out from the reward data


def test_prompt_rows():
    rows = samples.prompt_rows()
    assert 90 <= len(rows) <= 110
    assert all(set(r) == {"prompt"} and r["prompt"].strip() for r in rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    zh = sum(is_zh(r["prompt"]) for r in rows)
    assert zh == len(rows) - zh
    assert all(len(r["prompt"]) <= 60 for r in rows)


def test_generators_are_deterministic():
    assert samples.preference_rows() == samples.preference_rows()
    assert samples.prompt_rows() == samples.prompt_rows()


def test_ensure_shapes(tmp_path):
    from PIL import Image

    folder = samples.ensure_shapes(tmp_path)
    assert folder == (tmp_path / "datasets" / "samples" / "shapes").resolve()
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert len(pngs) == 24
    meta = read_jsonl(folder / "metadata.jsonl")
    assert sorted(m["file_name"] for m in meta) == pngs
    assert sorted(p.name for p in folder.iterdir()) == sorted(pngs + ["metadata.jsonl"])
    assert not [p for p in folder.parent.iterdir() if p.name != "shapes"]  # no temp dir left behind
    for m in meta:
        assert m["text"].strip() and m["text_zh"].strip()
        colour, shape, _ = m["file_name"][:-4].split("_")
        assert m["text"] == f"a {colour} {shape} on a white background"
        assert samples.COLOURS[colour][1] in m["text_zh"] and samples.SHAPES[shape] in m["text_zh"]
        with Image.open(folder / m["file_name"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            im.load()
            assert im.getpixel((32, 32)) == samples.COLOURS[colour][0]  # every shape covers the centre
            for corner in [(0, 0), (63, 0), (0, 63), (63, 63)]:
                assert im.getpixel(corner) == (255, 255, 255)

    red = next(m for m in meta if m["file_name"] == "red_circle_0.png")
    assert red["text"] == "a red circle on a white background" and red["text_zh"] == "白色背景上的红色圆形"
    with Image.open(folder / "red_circle_0.png") as im:
        r, g, b = im.getpixel((32, 32))
        assert r > 180 and g < 80 and b < 80
        assert im.getpixel((1, 1)) == (255, 255, 255)
        assert im.getpixel((32, 10)) == (r, g, b) and im.getpixel((12, 12)) == (255, 255, 255)  # round, not square

    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert samples.ensure_shapes(str(tmp_path)) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_ensure_shapes_deterministic_and_repairs(tmp_path):
    a = samples.ensure_shapes(tmp_path / "a")
    b = samples.ensure_shapes(tmp_path / "b")
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes()
    (b / "red_star_0.png").unlink()  # an incomplete folder is rebuilt whole
    assert samples.ensure_shapes(tmp_path / "b") == b
    assert (b / "red_star_0.png").read_bytes() == (a / "red_star_0.png").read_bytes()
    assert [p.name for p in b.parent.iterdir()] == ["shapes"]


def test_cli(tmp_path, capsys):
    assert samples.main(["shapes", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path.resolve() / "datasets" / "samples" / "shapes")
    assert samples.main(["text", "--dest", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / samples.PREFERENCE_FILE).exists()
    with pytest.raises(SystemExit):
        samples.main([])
