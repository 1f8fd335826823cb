"""Issue 12: every attack of the security review, replayed through the real endpoints of one studio started
with --auth u:p on a fresh data dir (logged-in gradio_client, or raw HTTP where a browser would do it)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, Studio, free_port, wait_http

AUTH = ("u", "p")
UPLOAD_MB = 1  # STUDIO_MAX_UPLOAD_MB of the test studio


def _png(path: Path, color=(200, 30, 30)) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), color).save(path)
    return path


@pytest.fixture(scope="module")
def sec(tmp_path_factory, prepared_data_dir):
    """One studio for the module: <base>/a/data is its data dir (made by the studio itself), <base> holds the
    files an attacker wants; the bundled models are linked in after the start."""
    base = tmp_path_factory.mktemp("sec")
    dd = base / "a" / "data"  # made by the studio
    secret = base / "secret.png"
    _png(secret)
    secret.chmod(0o600)
    (base / "outside.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}", "response": "r"}) + "\n"
                                                for i in range(3)))
    (base / "outside_prompts.jsonl").write_text(json.dumps({"prompt": "a prompt from outside"}) + "\n")
    (base / "x").mkdir()
    (base / "x" / "output").symlink_to(prepared_data_dir / "models" / "smollm2-135m-instruct")

    port = free_port()
    log = base / "studio.log"
    env = {**os.environ, "STUDIO_MAX_UPLOAD_MB": str(UPLOAD_MB)}
    env.pop("GRADIO_TEMP_DIR", None)
    argv = [sys.executable, "-m", "app", "--port", str(port), "--data-dir", str(dd), "--auth", "u:p",
            "--no-prepare", "--offline"]
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
    studio = Studio(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_http(studio.url + "/", proc, log)
        (dd / "models").symlink_to(prepared_data_dir / "models", target_is_directory=True)
        from gradio_client import Client

        client = Client(studio.url + "/", auth=AUTH, verbose=False)
        yield SimpleNamespace(base=base, dd=dd, url=studio.url, client=client, studio=studio, secret=secret)
    finally:
        studio.stop()


# ---------------------------------------------------------------------- 1. image dataset save
def _save_images(c, spec: str, name: str):
    c.predict(spec, "images", api_name="/datasets_inspect")
    return c.predict(spec, name, False, "images", "columns", "", "512",
                     False,  # "Drop rows with problems" unticked
                     False, "", "0.1", "1234", "file_name", "text", "", "", "", "", api_name="/datasets_save")[0]


def test_image_save_never_follows_dotdot_out_of_the_image_folder(sec):
    from gradio_client import handle_file

    meta = sec.base / "upload1" / "metadata.jsonl"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"file_name": "../../../../secret.png", "text": "a caption"}) + "\n")
    sec.client.predict([handle_file(str(meta))], api_name="/datasets_upload")
    report = _save_images(sec.client, "datasets/uploads", "travimg")
    # the review's chain: read <base>/secret.png, write it to <base>/a/secret.png (outside the data dir)
    assert not (sec.base / "a" / "secret.png").exists()
    assert not (sec.dd / "datasets" / "travimg").exists()
    assert "row 1 ('../../../../secret.png')" in report and "points outside the image folder" in report
    assert "Drop rows with problems" in report
    (sec.dd / "datasets" / "uploads" / "metadata.jsonl").unlink()  # uploads/ is no image folder any more


def test_image_save_refuses_a_link_out_of_the_image_folder(sec):
    imgs = sec.dd / "datasets" / "imgs"
    imgs.mkdir(parents=True)
    _png(imgs / "ok.png", (10, 200, 10))
    (imgs / "link.png").symlink_to(sec.secret)
    (imgs / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": "t " + n}) + "\n"
                                                 for n in ("ok.png", "link.png")))
    report = _save_images(sec.client, "datasets/imgs", "linked")
    assert "row 2 ('link.png')" in report and "points outside the image folder" in report
    assert not (sec.dd / "datasets" / "linked").exists()


def test_image_save_with_a_missing_file_fails_naming_the_row(sec):
    imgs = sec.dd / "datasets" / "imgs2"
    imgs.mkdir(parents=True)
    _png(imgs / "a.png")
    (imgs / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": "t " + n}) + "\n"
                                                 for n in ("a.png", "nope.png")))
    report = _save_images(sec.client, "datasets/imgs2", "missing")
    assert "row 2 ('nope.png'): image file not found" in report
    assert not (sec.dd / "datasets" / "missing").exists()
    # the same folder without the bad row saves, images and all
    (imgs / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "t"}) + "\n")
    report = _save_images(sec.client, "datasets/imgs2", "good")
    assert "✅" in report and (sec.dd / "datasets" / "good" / "images" / "a.png").is_file()


def test_job_side_cannot_leave_runs(sec):
    # <base>/x/output is a real model: before the fix job:../../x loaded it from outside runs/
    msg = sec.client.predict("", "10", "a typed prompt", "bundled:smollm2", "job:../../../x",
                             api_name="/compare_batch_eval")
    assert "finetuned: '../../../x' points outside the runs folder" in msg
    msg = sec.client.predict("", "10", "a typed prompt", "bundled:smollm2", "job:" + str(sec.base / "x"),
                             api_name="/compare_batch_eval")
    assert "points outside the runs folder" in msg
    assert not list((sec.dd / "runs").iterdir())


# ---------------------------------------------------------------------- 2. dataset / prompt fields
def _train_error(c, **fields) -> str:
    """/sft_train with named fields (issue 13): a bad one raises, naming the field's label and parameter."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        c.predict(**fields, api_name="/sft_train")
    return str(e.value)


def test_sft_dataset_field_is_confined_to_the_data_dir(sec):
    c, dd = sec.client, sec.dd
    msg = _train_error(c, dataset=str(sec.base / "outside.jsonl"))
    assert msg == (f"Dataset (dataset): {sec.base / 'outside.jsonl'} is outside the data dir {dd}; put the file "
                   f"under {dd / 'datasets'} or upload it")
    # issue 11: a relative path out of the data dir said "unsupported file type ''"
    msg = _train_error(c, dataset="../../etc/passwd")
    assert "outside the data dir" in msg and "unsupported" not in msg
    # a link inside the data dir to a file outside
    (dd / "datasets").mkdir(exist_ok=True)
    (dd / "datasets" / "link.jsonl").symlink_to(sec.base / "outside.jsonl")
    msg = _train_error(c, dataset="datasets/link.jsonl")
    assert "outside the data dir" in msg and "links to" in msg
    # the file-type list names .tsv, as the field's help does
    (dd / "datasets" / "notes.txt").write_text("prompt,response\n")
    msg = _train_error(c, dataset="datasets/notes.txt")
    assert "use .jsonl, .json, .csv, .tsv or .parquet" in msg
    assert not list((dd / "runs").iterdir())


def test_prompt_set_field_is_confined_and_a_big_folder_is_not_walked(sec):
    c, dd = sec.client, sec.dd
    msg = c.predict(str(sec.base / "outside_prompts.jsonl"), "10", "", "bundled:smollm2", "bundled:smollm2",
                    api_name="/compare_batch_eval")
    assert msg.startswith("⚠ prompts: ") and "is outside the data dir" in msg
    t0 = time.time()
    msg = c.predict("/usr", "10", "", "bundled:smollm2", "bundled:smollm2", api_name="/compare_batch_eval")
    assert "/usr is outside the data dir" in msg and time.time() - t0 < 3
    big = dd / "datasets" / "big" / "sub"
    big.mkdir(parents=True)
    for i in range(10_001):
        (big / f"f{i}").touch()
    msg = c.predict("datasets/big", "10", "", "bundled:smollm2", "bundled:smollm2", api_name="/compare_batch_eval")
    assert "holds more than 10000 entries" in msg
    assert not list((dd / "runs").iterdir())


def test_bundled_samples_and_data_dir_files_still_resolve(sec):
    from backends.common import data as datalib

    dd = sec.dd
    (dd / "datasets" / "mine.jsonl").write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert datalib.resolve_dataset("presets/datasets/demo_sft.jsonl", dd) == datalib.DEMO_SFT.resolve()
    assert datalib.resolve_dataset("bundled:demo_sft", dd) == datalib.DEMO_SFT
    assert datalib.resolve_dataset("mine.jsonl", dd) == (dd / "datasets" / "mine.jsonl").resolve()
    assert datalib.resolve_dataset("datasets/mine.jsonl", dd) == (dd / "datasets" / "mine.jsonl").resolve()
    # by hand, without a data dir, any readable file may be named
    assert datalib.resolve_dataset(str(sec.base / "outside.jsonl")) == (sec.base / "outside.jsonl").resolve()


# ---------------------------------------------------------------------- 3. uploads
def _tmp_files(dd: Path) -> list[Path]:
    return [p for p in (dd / "tmp").rglob("*") if p.is_file()]


def test_upload_temp_copies_are_deleted_and_the_limit_is_gradios(sec):
    from gradio_client import handle_file

    c, dd, src = sec.client, sec.dd, sec.base / "uploads-src"
    src.mkdir()
    ok = src / "small.jsonl"
    ok.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    out = c.predict([handle_file(str(ok))], api_name="/datasets_upload")
    assert (dd / "datasets" / "uploads" / "small.jsonl").is_file(), out
    halves = []
    for n in ("h1.jsonl", "h2.jsonl"):  # each under the limit, together over it: refused by the studio
        halves.append(src / n)
        halves[-1].write_bytes(b"x" * int(0.6 * 1024 * 1024))
    out = c.predict([handle_file(str(h)) for h in halves], api_name="/datasets_upload")
    assert "over the 1 MB upload limit" in out[-1]
    big = b"y" * int(1.5 * 1024 * 1024)
    (src / "big.jsonl").write_bytes(big)
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        c.predict([handle_file(str(src / "big.jsonl"))], api_name="/datasets_upload")  # the page checks too
    import httpx

    with httpx.Client(base_url=sec.url, timeout=30) as h:  # and the server refuses it while it arrives
        assert h.post("/login", data={"username": "u", "password": "p"}).status_code == 200
        r = h.post("/gradio_api/upload", files={"files": ("big.jsonl", big)})
        assert r.status_code == 413, r.text
    time.sleep(0.5)
    # Gradio's File component leaves one empty tmp* file per file it hands over (gradio/components/file.py);
    # what must not stay is a copy of what was uploaded
    left = [p for p in _tmp_files(dd) if p.stat().st_size]
    assert left == [], "temporary upload copies left in <data-dir>/tmp"


# ---------------------------------------------------------------------- 4. hardening
def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_data_dir_and_what_the_studio_writes_are_private(sec):
    from gradio_client import handle_file

    dd = sec.dd
    assert _mode(dd) == 0o700
    assert _mode(dd / "jobs.sqlite") == 0o600
    src = sec.base / "perm-src"
    src.mkdir()
    _png(src / "p.png").chmod(0o644)
    (src / "metadata.jsonl").write_text(json.dumps({"file_name": "p.png", "text": "t"}) + "\n")
    folder = sec.client.predict([handle_file(str(src / "p.png")), handle_file(str(src / "metadata.jsonl"))],
                                api_name="/datasets_upload")[1]
    assert "✅" in _save_images(sec.client, folder, "perm-imgs")
    assert _mode(dd / "datasets") == 0o700
    up = dd / folder
    assert _mode(up) == 0o700 and _mode(up / "p.png") == 0o600
    saved = dd / "datasets" / "perm-imgs"
    assert _mode(saved) == 0o700 and _mode(saved / "data.jsonl") == 0o600
    assert _mode(saved / "images" / "p.png") == 0o600
    # a queued job's run folder (stopped at once: only the files matter)
    sec.client.predict("", "1", "hi", "bundled:smollm2", "bundled:smollm2", api_name="/compare_batch_eval")
    runs = list((dd / "runs").iterdir())
    assert len(runs) == 1
    job = runs[0].name
    sec.client.predict(job, api_name="/job_details")  # the Jobs tab shows it (its log, config, command)
    sec.client.predict(job, api_name="/job_stop")
    assert _mode(runs[0]) == 0o700
    files = [f for f in runs[0].iterdir() if f.is_file()]
    assert {f.name for f in files} >= {"config.yaml", "log.txt", "command.sh"}
    want = {f.name: oct(0o700 if f.name == "command.sh" else 0o600) for f in files}
    assert {f.name: oct(_mode(f)) for f in files} == want


def test_cross_origin_posts_are_refused(sec):
    import httpx

    with httpx.Client(base_url=sec.url, timeout=20) as h:
        evil = {"Origin": "http://localhost:8000"}
        r = h.post("/login", data={"username": "u", "password": "p"}, headers=evil)
        assert r.status_code == 403 and not h.cookies
        assert r.text == "cross-origin request refused by Finetune Studio"  # all such a page can read
        r = h.post("/login", data={"username": "u", "password": "p"})  # no Origin (gradio_client, curl)
        assert r.status_code == 200 and h.cookies
        r = h.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}, headers=evil)
        assert r.status_code == 403
        r = h.get("/config", headers={"Origin": "null"})
        assert r.status_code == 403
        r = h.get("/config", headers=evil)  # with the user's cookie, another local site read the config
        assert r.status_code == 403 and "components" not in r.text
        own = {"Origin": sec.url}  # the page itself
        r = h.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")}, headers=own)
        assert r.status_code == 200, r.text
        for p in r.json():  # what the page's own upload left (no handler ran)
            Path(p).unlink(missing_ok=True)


def test_start_sweeps_old_temp_files_and_warns_about_auth_on_the_command_line(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "app.cli", "--help"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
    assert "process list" in help_text and "--auth-file" in help_text.split("--auth USER")[1][:300]
    dd = tmp_path / "d"
    old, fresh = dd / "tmp" / "0123abcd", dd / "tmp" / "4567ef01"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "upload.bin").write_bytes(b"x" * 1000)
    two_hours_ago = time.time() - 7200
    for p in (old / "upload.bin", old):
        os.utime(p, (two_hours_ago, two_hours_ago))
    argv = [sys.executable, "-m", "app", "--listen", "--auth", "u:p", "--port", str(free_port()),
            "--data-dir", str(dd), "--no-prepare", "--offline"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = ""
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "[studio] data dir" not in seen:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
    finally:
        proc.terminate()
        proc.wait(15)
    assert "--auth puts the password in the process list" in seen and "--auth-file" in seen
    assert not old.exists(), "a two-hour-old upload left in <data-dir>/tmp was not swept at start"
    assert (fresh / "upload.bin").is_file(), "a fresh temp file (another studio's upload in flight) was swept"
