"""Issue 13: studio datasets keep turns, not rendered text; the job's template is applied only at training and
inference time, by the same functions (backends.common.data.row_turns / format_prompt), so the A/B tab asks a
model in exactly the form it was trained on.

Rendering is checked at the data/template level: the SFT backend's data loading (`load_sft_data`, rendered the
way TRL renders a conversational prompt, `trl.apply_chat_template`) against the A/B tab's prompt builder
(`chat.pick_template` + `chat.render`, what `compare_once` sends to both sides). No model is trained or loaded;
only the bundled SmolLM2 tokenizer is read.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.common import data as D

QUESTION_EN = "Name a primary colour."
QUESTION_ZH = "写诗"  # short: two Chinese characters against the 14 Latin letters of "Human:"/"Assistant:"

ALPACA = [
    {"instruction": QUESTION_EN, "input": "", "output": "Red."},
    {"instruction": QUESTION_ZH, "input": "", "output": "春风"},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "猫", "input": "", "output": "喵"},
    {"instruction": "What is two plus two?", "input": "", "output": "Four."},
    {"instruction": "狗", "input": "", "output": "汪"},
]


def _smollm2(prepared_data_dir) -> Path:
    return prepared_data_dir / "models" / "smollm2-135m-instruct"


def _save_alpaca(tmp_path: Path, name: str = "mixed-alpaca") -> Path:
    """The alpaca file saved as a studio dataset the way the CLI / Datasets tab does (check, then store.save)."""
    from backends.data.__main__ import main

    src = tmp_path / "alpaca.json"
    src.write_text(json.dumps(ALPACA, ensure_ascii=False), encoding="utf-8")
    dd = tmp_path / "data"
    dd.mkdir(exist_ok=True)
    assert main(["save", str(src), "--kind", "sft", "--name", name, "--data-dir", str(dd), "--offline"]) == 0
    return dd / "datasets" / name


def _sft_rows(dd: Path, dataset: str, template: str, model: Path) -> list[dict]:
    from backends.sft import SFTArgs, load_sft_data, resolve

    cfg = SFTArgs(model_name_or_path=str(model), dataset=dataset, data_dir=str(dd), run_dir="runs/t",
                  template=template, eval_ratio=0.0, max_seq_len=256)
    train, eval_ds = load_sft_data(cfg, resolve(cfg))
    assert eval_ds is None
    return train.to_list()


def _ab_prompt(question: str, template: str, tok) -> str:
    """What the A/B tab sends a side for a new question (compare_once: pick_template, then render)."""
    from backends.infer import chat

    return chat.render([], question, chat.pick_template(template, None, tok), tok)


def test_alpaca_studio_dataset_trained_with_chat_is_asked_the_same_way(prepared_data_dir, tmp_path):
    import trl
    from transformers import AutoTokenizer

    folder = _save_alpaca(tmp_path)
    stored = [json.loads(x) for x in (folder / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert stored[0] == {"prompt": QUESTION_EN, "response": "Red."}  # the conversation, no template words
    assert stored[2] == {"prompt": "Translate to French.\n\nGood morning", "response": "Bonjour"}
    assert not any("Human:" in json.dumps(r) or "Assistant:" in json.dumps(r) for r in stored)

    model = _smollm2(prepared_data_dir)
    tok = AutoTokenizer.from_pretrained(model)
    rows = _sft_rows(tmp_path / "data", folder.name, "chat", model)
    assert len(rows) == len(ALPACA)
    for question in (QUESTION_EN, QUESTION_ZH):
        example = next(r for r in rows if question in json.dumps(r["prompt"], ensure_ascii=False))
        # the prompt TRL trains on (SFTTrainer tokenizes this same apply_chat_template(add_generation_prompt=True))
        trained = trl.apply_chat_template(example, tok)["prompt"]
        assert "Human:" not in trained and "Assistant:" not in trained, trained
        assert trained.endswith(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
        assert _ab_prompt(question, "chat", tok) == trained
        # auto picks chat for SmolLM2 when no fine-tuned side says otherwise
        assert _ab_prompt(question, "auto", tok) == trained


def test_dschat_template_renders_ds_chat_text_in_training_and_ab(prepared_data_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = _save_alpaca(tmp_path)
    model = _smollm2(prepared_data_dir)
    tok = AutoTokenizer.from_pretrained(model)
    rows = _sft_rows(tmp_path / "data", folder.name, "dschat", model)
    example = next(r for r in rows if QUESTION_ZH in r["prompt"])
    assert example == {"prompt": f"Human: {QUESTION_ZH}\n\nAssistant:", "completion": " 春风"}
    assert _ab_prompt(QUESTION_ZH, "dschat", tok) == example["prompt"]
    plain = _sft_rows(tmp_path / "data", folder.name, "plain", model)
    example = next(r for r in plain if QUESTION_EN in r["prompt"])
    assert example == {"prompt": QUESTION_EN + "\n", "completion": "Red."}
    assert _ab_prompt(QUESTION_EN, "plain", tok) == example["prompt"]


def test_a_studio_dataset_saved_before_turns_is_parsed_not_wrapped_again(prepared_data_dir, tmp_path):
    """data.jsonl written by the old transforms (" Human: q Assistant:" prompts, " a" answers) trains the same
    prompt as a new save, and the A/B tab (and ab_eval, fed the stored text) asks exactly that."""
    import trl
    from transformers import AutoTokenizer

    dd = tmp_path / "data"
    old = dd / "datasets" / "old-alpaca"
    old.mkdir(parents=True)
    (old / D.STUDIO_CARD).write_text("name: old-alpaca\nkind: sft\nrows: 2\n", encoding="utf-8")
    (old / D.STUDIO_DATA).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (
        {"prompt": f" Human: {QUESTION_ZH} Assistant:", "response": " 春风"},
        {"prompt": " Human: Hi Assistant: Hello! Human: Tell me a joke. Assistant:", "response": " No."},
    )), encoding="utf-8")
    model = _smollm2(prepared_data_dir)
    tok = AutoTokenizer.from_pretrained(model)
    rows = _sft_rows(dd, "old-alpaca", "chat", model)
    assert rows[0]["prompt"] == [{"role": "user", "content": QUESTION_ZH}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "春风"}]
    assert rows[1]["prompt"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                 {"role": "user", "content": "Tell me a joke."}]
    trained = trl.apply_chat_template(rows[0], tok)["prompt"]
    assert "Human:" not in trained and _ab_prompt(QUESTION_ZH, "chat", tok) == trained
    assert _ab_prompt(f" Human: {QUESTION_ZH} Assistant:", "chat", tok) == trained  # stored text given as is


def test_multi_turn_rows_keep_their_history_through_training_and_ab(prepared_data_dir, tmp_path):
    """ShareGPT rows (the first single-turn, so a later row's `history` column must not be lost on loading)."""
    import trl
    from transformers import AutoTokenizer

    from backends.data.__main__ import main

    src = tmp_path / "sharegpt.jsonl"
    convs = [[{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}],
             [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
              {"from": "human", "value": "讲个笑话"}, {"from": "gpt", "value": "不。"}]]
    src.write_text("".join(json.dumps({"conversations": c}, ensure_ascii=False) + "\n" for c in convs),
                   encoding="utf-8")
    dd = tmp_path / "data"
    assert main(["save", str(src), "--kind", "sft", "--name", "chats", "--data-dir", str(dd), "--offline"]) == 0
    stored = [json.loads(x) for x in (dd / "datasets" / "chats" / "data.jsonl").read_text("utf-8").splitlines()]
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert stored[1] == {"prompt": "讲个笑话", "history": history, "response": "不。"}
    model = _smollm2(prepared_data_dir)
    tok = AutoTokenizer.from_pretrained(model)
    rows = _sft_rows(dd, "chats", "chat", model)
    assert rows[1]["prompt"] == [*history, {"role": "user", "content": "讲个笑话"}]
    from backends.infer import chat

    # the A/B tab after the user said Hi and the model answered Hello!
    assert chat.render(history, "讲个笑话", "chat", tok) == trl.apply_chat_template(rows[1], tok)["prompt"]
    dschat = _sft_rows(dd, "chats", "dschat", model)
    assert dschat[1]["prompt"] == "Human: Hi\n\nAssistant: Hello!\n\nHuman: 讲个笑话\n\nAssistant:"
    assert chat.render(history, "讲个笑话", "dschat", tok) == dschat[1]["prompt"]


def test_language_mix_counts_the_users_text(tmp_path):
    """A half-Chinese alpaca file: half zh (it was "en 100%" when the rows held " Human: … Assistant:")."""
    import contextlib
    import io

    import yaml

    from backends.data.__main__ import main

    card = _save_alpaca(tmp_path) / D.STUDIO_CARD
    assert yaml.safe_load(card.read_text(encoding="utf-8"))["languages"] == {"en": 3, "zh": 3}
    # old-shape rows (DS-Chat text) are counted by their user text too, not by "Human"/"Assistant"
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"prompt": f" Human: {r['instruction']} Assistant:",
                                       "response": " " + r["output"]}, ensure_ascii=False) + "\n"
                           for r in ALPACA), encoding="utf-8")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["check", str(old), "--kind", "sft", "--json", "--data-dir", str(tmp_path / "data"),
                     "--offline"]) == 0
    assert json.loads(buf.getvalue())["languages"] == {"en": 3, "zh": 3}


@pytest.mark.parametrize("row, answer, turns", [
    ({"prompt": "q", "response": "a"}, "response",
     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
    ({"prompt": " Human: q Assistant:", "response": " a"}, "response",  # a studio dataset saved before turns
     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
    ({"prompt": "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:", "chosen": " c", "rejected": " r"},
     "rejected", [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                  {"role": "user", "content": "q2"}, {"role": "assistant", "content": "r"}]),
    ({"prompt": "q2", "history": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"},
                                  {"role": "assistant", "content": "a1"}]}, None,
     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"},
      {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]),
    ({"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, None,
     [{"role": "user", "content": "q"}]),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "c"}]}, "chosen",
     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}]),  # TRL's conversational form
    ({"prompt": "Explain why 'Human: hi' is a greeting."}, None,  # template words inside the text stay text
     [{"role": "user", "content": "Explain why 'Human: hi' is a greeting."}]),
])
def test_row_turns_reads_every_stored_shape(row, answer, turns):
    assert D.row_turns(row, answer) == turns


def test_format_prompt_renders_the_same_turns_from_any_shape():
    new = {"prompt": "q2", "history": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]}
    old = {"prompt": " Human: q1 Assistant: a1 Human: q2 Assistant:"}
    for row in (new, old):
        turns = D.row_turns(row, None)
        assert D.format_prompt(turns, "dschat") == "Human: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:"
        assert D.format_prompt(turns, "plain") == "q1\na1\nq2\n"
    assert D.format_answer(" a", "dschat") == " a" and D.format_answer("a", "dschat") == " a"
    assert D.format_answer("a", "chat") == "a"


def test_preference_and_prompt_rows_render_with_the_jobs_template(prepared_data_dir):
    """The shapes the reward model / DPO / PPO read: the bundled preference samples and old DS-Chat rows alike."""
    from transformers import AutoTokenizer

    from backends.infer import chat

    tok = AutoTokenizer.from_pretrained(_smollm2(prepared_data_dir))
    ds = D.load_rows(D.BUNDLED_DIR / "demo_preference.jsonl").select(range(2))
    first = ds[0]
    pc = D.to_preference(ds, template="chat")[0]
    assert pc["prompt"] == [{"role": "user", "content": first["prompt"]}]
    assert pc["chosen"] == [{"role": "assistant", "content": first["chosen"]}]
    dschat = D.to_preference(ds, template="dschat")[0]
    assert dschat == {"prompt": f"Human: {first['prompt']}\n\nAssistant:", "chosen": " " + first["chosen"],
                      "rejected": " " + first["rejected"]}
    from datasets import Dataset

    old = Dataset.from_list([{"prompt": f"\n\nHuman: {first['prompt']}\n\nAssistant:",
                              "chosen": " " + first["chosen"], "rejected": " " + first["rejected"]}])
    assert D.to_preference(old, template="dschat")[0] == dschat
    asked = D.to_prompt_only(ds, template="chat", tokenizer=tok)[0]["prompt"]
    assert asked == chat.render([], first["prompt"], "chat", tok) and "Human:" not in asked
    assert D.to_prompt_only(old, template="chat", tokenizer=tok)[0]["prompt"] == asked


def test_ab_eval_asks_a_multi_turn_prompt_with_its_history(tmp_path):
    from backends import ab_eval
    from backends.common import config as C
    from backends.data.__main__ import main
    from backends.infer import chat

    src = tmp_path / "open.jsonl"
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                               {"from": "human", "value": "Tell me a joke."}]},
            {"conversations": [{"from": "human", "value": "2+2?"}]}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dd = tmp_path / "data"
    assert main(["save", str(src), "--kind", "prompt", "--name", "open", "--data-dir", str(dd), "--offline"]) == 0
    cfg = C.from_dict(ab_eval.ABEvalArgs, {"data_dir": str(dd), "prompts": "open", "max_prompts": 5})
    prompts, _ = ab_eval.load_prompts(cfg, dd)
    assert prompts[1] == "2+2?"
    assert chat.render([], prompts[0], "dschat", None) == (
        "Human: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant:")
