"""The dataset catalog (presets/datasets.yaml), its row transforms and where catalog datasets load from.

Rows below copy the column layout of the real hub datasets; which columns make the question and the answers
follows DeepSpeed-Chat's dschat/utils/data/raw_datasets.py. Rows are stored as turns (no " Human: … Assistant:"
text); DS-Chat's form comes back from the dschat template (`_dschat` below). No library is mocked: local copies are written with datasets/pyarrow,
and the online path really tries the (unreachable) hub.
"""
from __future__ import annotations

import json
import time

import pytest

from backends.common.data import format_answer, format_prompt, row_turns
from backends.data import catalog
from backends.data import transforms as tf
from backends.data.catalog import DatasetUnavailable, get_entry, load_catalog, load_entry
from backends.data.transforms import RowProblem, apply

# shared/reference/deepspeed-chat.md, B.6: the names DS-Chat's get_raw_dataset knows.
DSCHAT_NAMES = [
    "Dahoas/rm-static", "Dahoas/full-hh-rlhf", "Dahoas/synthetic-instruct-gptj-pairwise",
    "yitingxie/rlhf-reward-datasets", "openai/webgpt_comparisons", "stanfordnlp/SHP",
    "pvduy/sharegpt_alpaca_oa_vicuna_format",
    "wangrui6/Zhihu-KOL", "Cohere/miracl-zh-queries-22-12", "Hello-SimpleAI/HC3-Chinese", "mkqa-Chinese",
    "mkqa-Japanese", "Cohere/miracl-ja-queries-22-12", "lmqg/qg_jaquad", "lmqg/qag_jaquad",
    "local/jsonfile",
]


# ------------------------------------------------------------------------------------- catalog
def test_catalog_loads_with_every_dschat_name_and_valid_transforms():
    entries = load_catalog()
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    for name in DSCHAT_NAMES:
        assert name in ids, name
        assert "DeepSpeed-Chat" in get_entry(name).origin
    for extra in ("Anthropic/hh-rlhf", "tatsu-lab/alpaca", "InstructionWild-en", "InstructionWild-zh",
                  "shibing624/sharegpt_gpt4", "demo_sft", "demo_preference", "demo_prompts", "demo_shapes"):
        assert extra in ids, extra
    for e in entries:
        assert e.kinds and e.languages and e.origin and e.description and e.description_zh
        if e.transform in tf.RESERVED:
            assert e.source == "bundled"
            continue
        t = tf.TRANSFORMS[e.transform]
        assert set(e.kinds) <= set(t.kinds), e.id
        assert set(e.mapping) <= set(t.reads), e.id
        if e.source == "hub":
            assert e.hub_id and e.url.startswith("https://")
    # sets without a rejected answer offer no preference kind
    for name in ("pvduy/sharegpt_alpaca_oa_vicuna_format", "wangrui6/Zhihu-KOL", "Hello-SimpleAI/HC3-Chinese",
                 "mkqa-Chinese", "lmqg/qg_jaquad", "tatsu-lab/alpaca", "shibing624/sharegpt_gpt4"):
        assert "preference" not in get_entry(name).kinds, name
    assert get_entry("demo_shapes").kinds == ("images",)
    assert get_entry("demo_shapes").mapping == {"image": "file_name", "text": "text"}
    assert get_entry("stanfordnlp/SHP").eval_split == "validation"


def test_get_entry_suggests_close_matches():
    with pytest.raises(KeyError, match="Dahoas/rm-static"):
        get_entry("rm-static")
    assert get_entry("dahoas/RM-static").id == "Dahoas/rm-static"


def _entry_yaml(eid: str, transform: str = "dschat_prompt_chosen_rejected") -> str:
    return f"""
- id: {eid}
  source: hub
  hub_id: {eid}
  kinds: [preference]
  languages: [en]
  license: MIT
  size: "1 row"
  origin: [DeepSpeed-Chat]
  url: https://huggingface.co/datasets/{eid}
  description: d
  description_zh: d
  mapping: {{prompt: prompt, chosen: chosen, rejected: rejected}}
  transform: {transform}
"""


def test_broken_catalog_names_the_entry(tmp_path):
    p = tmp_path / "cat.yaml"
    p.write_text(_entry_yaml("a/one") + _entry_yaml("a/one"))
    with pytest.raises(ValueError, match=r"'a/one'.*id: duplicate"):
        load_catalog(p)
    p.write_text(_entry_yaml("a/one") + _entry_yaml("b/two", transform="no_such_transform"))
    with pytest.raises(ValueError, match=r"'b/two'.*transform: unknown transform 'no_such_transform'"):
        load_catalog(p)
    p.write_text(_entry_yaml("c/three", transform="zhihu"))  # zhihu has no rejected answer
    with pytest.raises(ValueError, match=r"'c/three'.*kinds"):
        load_catalog(p)
    p.write_text(_entry_yaml("d/four").replace("  license: MIT\n", ""))
    with pytest.raises(ValueError, match=r"'d/four'.*license: missing"):
        load_catalog(p)
    p.write_text(_entry_yaml("e/five").replace("kinds: [preference]", "kinds: [preference, audio]"))
    with pytest.raises(ValueError, match=r"'e/five'.*unknown kind 'audio'"):
        load_catalog(p)


# ---------------------------------------------------------------------------------- transforms
def _entry_apply(entry_id: str, row: dict, kind: str) -> dict:
    e = get_entry(entry_id)
    return apply(e.transform, row, e.mapping, kind)


def _dschat(out: dict, answer: str | None = None) -> str:
    """A stored row as the dschat template renders it for training: prompt (+ answer)."""
    text = format_prompt(row_turns(out, answer=None), "dschat")
    return text + format_answer(out[answer], "dschat") if answer else text


def test_rm_static_parsed_into_turns():
    row = {"prompt": "\n\nHuman: What is a kiwi?\n\nAssistant:", "response": " A bird.",
           "chosen": " A flightless bird from New Zealand.", "rejected": " A car."}
    out = _entry_apply("Dahoas/rm-static", row, "preference")
    assert out == {"prompt": "What is a kiwi?", "chosen": "A flightless bird from New Zealand.", "rejected": "A car."}
    assert _dschat(out, "chosen") == "Human: What is a kiwi?\n\nAssistant: A flightless bird from New Zealand."
    assert _entry_apply("Dahoas/full-hh-rlhf", row, "sft") == {"prompt": "What is a kiwi?",
                                                               "response": "A flightless bird from New Zealand."}
    assert _entry_apply("Dahoas/rm-static", {"prompt": row["prompt"]}, "prompt") == {"prompt": "What is a kiwi?"}
    with pytest.raises(RowProblem) as ei:
        _entry_apply("Dahoas/rm-static", {"prompt": row["prompt"], "chosen": "x"}, "preference")
    assert ei.value.column == "rejected"


def test_gptj_pairwise_keeps_the_question():
    row = {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "No."}
    out = _entry_apply("Dahoas/synthetic-instruct-gptj-pairwise", row, "preference")
    assert out == {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "No."}
    assert _dschat(out, "rejected") == "Human: Name a fruit.\n\nAssistant: No."
    with pytest.raises(RowProblem, match="chosen: must be text, got int") as ei:
        _entry_apply("Dahoas/synthetic-instruct-gptj-pairwise", {**row, "chosen": 3}, "sft")
    assert ei.value.column == "chosen"


def test_yitingxie_appends_assistant_and_takes_last_answer():
    row = {"prompt": "\n\nHuman: Hi there\n\n", "chosen": "Assistant: Hello! How can I help?",
           "rejected": "Assistant: Go away."}
    assert _entry_apply("yitingxie/rlhf-reward-datasets", row, "preference") == {
        "prompt": "Hi there", "chosen": "Hello! How can I help?", "rejected": "Go away."}
    with pytest.raises(RowProblem, match="rejected: no 'Assistant:'"):
        _entry_apply("yitingxie/rlhf-reward-datasets", {**row, "rejected": "Go away."}, "preference")


def _webgpt_row(score_0, score_1):
    return {
        "question": {"id": "q1", "full_text": "Why is the sky blue?", "dataset": "eli5"},
        "quotes_0": {"title": ["Rayleigh"], "extract": ["..."]},
        "answer_0": "Blue light scatters more [1]. That is Rayleigh scattering (Rayleigh, 1871)[2].",
        "tokens_0": {"prediction": ["..."]},
        "score_0": score_0,
        "quotes_1": {"title": [], "extract": []},
        "answer_1": "Because of the ocean.",
        "tokens_1": {"prediction": ["..."]},
        "score_1": score_1,
    }


def test_webgpt_picks_by_score_and_strips_citations():
    out = _entry_apply("openai/webgpt_comparisons", _webgpt_row(1.0, -1.0), "preference")
    assert out == {"prompt": "Why is the sky blue?",
                   "chosen": "Blue light scatters more. That is Rayleigh scattering.",
                   "rejected": "Because of the ocean."}
    flipped = _entry_apply("openai/webgpt_comparisons", _webgpt_row(-0.5, 0.5), "preference")
    assert flipped["chosen"] == "Because of the ocean."
    assert flipped["rejected"].startswith("Blue light")
    tie = _entry_apply("openai/webgpt_comparisons", _webgpt_row(0.0, 0.0), "preference")  # DS-Chat: >= wins
    assert tie["chosen"].startswith("Blue light") and tie["rejected"] == "Because of the ocean."
    assert _entry_apply("openai/webgpt_comparisons", _webgpt_row(1.0, 0.0), "sft")["response"].startswith("Blue")
    with pytest.raises(RowProblem) as ei:
        _entry_apply("openai/webgpt_comparisons", _webgpt_row("high", 0.0), "preference")
    assert ei.value.column == "score_0"


def _shp_row(labels):
    return {"post_id": "himc90", "domain": "askacademia_train", "upvote_ratio": 0.99,
            "history": "Is a PhD worth it?", "c_root_id_A": "fu1", "c_root_id_B": "fu2",
            "created_at_utc_A": 1593535113, "created_at_utc_B": 1593535114, "score_A": 52, "score_B": 5,
            "human_ref_A": "Only if you love research.", "human_ref_B": "No.", "labels": labels,
            "seconds_difference": 1.0, "score_ratio": 10.4}


def test_shp_uses_labels():
    assert _entry_apply("stanfordnlp/SHP", _shp_row(1), "preference") == {
        "prompt": "Is a PhD worth it?", "chosen": "Only if you love research.", "rejected": "No."}
    assert _entry_apply("stanfordnlp/SHP", _shp_row(0), "preference")["chosen"] == "No."
    with pytest.raises(RowProblem) as ei:
        _entry_apply("stanfordnlp/SHP", _shp_row("A"), "sft")
    assert ei.value.column == "labels"


HH_CHOSEN = ("\n\nHuman: What should I cook tonight?\n\nAssistant: How about pasta?\n\nHuman: "
             "Something quicker?\n\nAssistant: A sandwich takes five minutes.")
HH_REJECTED = ("\n\nHuman: What should I cook tonight?\n\nAssistant: How about pasta?\n\nHuman: "
               "Something quicker?\n\nAssistant: Nothing, order pizza.")


def test_hh_split_multi_turn_dialogue():
    out = _entry_apply("Anthropic/hh-rlhf", {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "preference")
    assert out == {"prompt": "Something quicker?",
                   "history": [{"role": "user", "content": "What should I cook tonight?"},
                               {"role": "assistant", "content": "How about pasta?"}],
                   "chosen": "A sandwich takes five minutes.", "rejected": "Nothing, order pizza."}
    assert "\n\n" + _dschat(out, "chosen") == HH_CHOSEN  # nothing lost: the dschat template gives it back
    assert _entry_apply("Anthropic/hh-rlhf", {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "prompt") == {
        "prompt": "Something quicker?", "history": out["history"]}
    sft = _entry_apply("Anthropic/hh-rlhf", {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, "sft")
    assert row_turns(sft)[-1] == {"role": "assistant", "content": "A sandwich takes five minutes."}
    with pytest.raises(RowProblem) as ei:
        _entry_apply("Anthropic/hh-rlhf", {"chosen": "\n\nHuman: hi", "rejected": HH_REJECTED}, "preference")
    assert ei.value.column == "chosen"
    assert "no '\\n\\nAssistant:' turn to split at" in str(ei.value)
    with pytest.raises(RowProblem) as ei:  # the two dialogues must share their history
        _entry_apply("Anthropic/hh-rlhf", {"chosen": HH_CHOSEN, "rejected": "\n\nHuman: x\n\nAssistant: y"},
                     "preference")
    assert ei.value.column == "rejected"


def test_alpaca_and_instructionwild():
    row = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour",
           "text": "Below is an instruction..."}
    out = _entry_apply("tatsu-lab/alpaca", row, "sft")
    assert out == {"prompt": "Translate to French.\n\nGood morning", "response": "Bonjour"}
    assert _dschat(out, "response") == "Human: Translate to French.\n\nGood morning\n\nAssistant: Bonjour"
    assert _entry_apply("tatsu-lab/alpaca", {**row, "input": ""}, "prompt") == {"prompt": "Translate to French."}
    wild = {"instruction": "写一首关于春天的诗。", "output": "春风拂面……", "id": "seed_task_0"}  # no input column
    assert _entry_apply("InstructionWild-zh", wild, "sft") == {"prompt": "写一首关于春天的诗。", "response": "春风拂面……"}
    assert "input" in tf.TRANSFORMS["alpaca"].optional
    with pytest.raises(RowProblem) as ei:
        _entry_apply("tatsu-lab/alpaca", {"instruction": "x", "input": ""}, "sft")
    assert ei.value.column == "output"


def test_sharegpt_conversations():
    row = {"id": "abc", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Tell me a joke."}, {"from": "gpt", "value": "Why did the chicken..."}]}
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    out = _entry_apply("shibing624/sharegpt_gpt4", row, "sft")
    assert out == {"prompt": "Tell me a joke.", "history": history, "response": "Why did the chicken..."}
    assert _dschat(out) == "Human: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant:"
    one = {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}
    assert _entry_apply("shibing624/sharegpt_gpt4", one, "sft") == {"prompt": "2+2?", "response": "4"}
    open_end = {"conversations": row["conversations"][:3]}
    assert _entry_apply("shibing624/sharegpt_gpt4", open_end, "prompt") == {
        "prompt": "Tell me a joke.", "history": history}
    with pytest.raises(RowProblem, match="not gpt") as ei:
        _entry_apply("shibing624/sharegpt_gpt4", open_end, "sft")
    assert ei.value.column == "conversations"


def test_pvduy_zhihu_hc3():
    row = {"prompt": "USER: What is 2+2? ASSISTANT:", "label": "4"}
    assert _entry_apply("pvduy/sharegpt_alpaca_oa_vicuna_format", row, "sft") == {
        "prompt": "What is 2+2?", "response": "4"}
    zh = {"INSTRUCTION": "如何学习编程？", "RESPONSE": "多写代码。", "SOURCE": "Zhihu", "METADATA": "{}"}
    assert _entry_apply("wangrui6/Zhihu-KOL", zh, "sft") == {"prompt": "如何学习编程？", "response": "多写代码。"}
    hc3 = {"id": "0", "question": "什么是光合作用？", "human_answers": ["植物利用光能制造有机物。", "另一个"],
           "chatgpt_answers": ["光合作用是……"]}
    assert _entry_apply("Hello-SimpleAI/HC3-Chinese", hc3, "sft") == {
        "prompt": "什么是光合作用？", "response": "植物利用光能制造有机物。"}
    with pytest.raises(RowProblem) as ei:
        _entry_apply("Hello-SimpleAI/HC3-Chinese", {**hc3, "human_answers": []}, "sft")
    assert ei.value.column == "human_answers"


def test_miracl_positive_chosen_negative_rejected():
    row = {"query_id": "0", "query": "東京タワーの高さは？",
           "positive_passages": [{"docid": "1#0", "title": "東京タワー", "text": "高さは333メートル。"}],
           "negative_passages": [{"docid": "2#0", "title": "富士山", "text": "富士山は日本一高い山。"}]}
    assert _entry_apply("Cohere/miracl-ja-queries-22-12", row, "preference") == {
        "prompt": "東京タワーの高さは？", "chosen": "高さは333メートル。", "rejected": "富士山は日本一高い山。"}
    no_neg = {**row, "negative_passages": []}
    assert _entry_apply("Cohere/miracl-zh-queries-22-12", no_neg, "sft")["response"] == "高さは333メートル。"
    with pytest.raises(RowProblem) as ei:
        _entry_apply("Cohere/miracl-zh-queries-22-12", no_neg, "preference")
    assert ei.value.column == "negative_passages"


def test_mkqa_and_jaquad():
    row = {"example_id": 1, "query": "who wrote hamlet",
           "queries": {"en": "who wrote hamlet", "zh_cn": "谁写了哈姆雷特", "ja": "ハムレットを書いたのは誰"},
           "answers": {"en": [{"type": 0, "entity": "Q692", "text": "William Shakespeare", "aliases": []}],
                       "zh_cn": [{"type": 0, "entity": "Q692", "text": "威廉·莎士比亚", "aliases": []}],
                       "ja": [{"type": 0, "entity": "Q692", "text": "ウィリアム・シェイクスピア", "aliases": []}]}}
    assert _entry_apply("mkqa-Chinese", row, "sft") == {"prompt": "谁写了哈姆雷特", "response": "威廉·莎士比亚"}
    assert _entry_apply("mkqa-Japanese", row, "sft")["response"] == "ウィリアム・シェイクスピア"
    no_text = {**row, "answers": {**row["answers"], "ja": [{"type": 5, "entity": "", "text": None, "aliases": []}]}}
    with pytest.raises(RowProblem) as ei:
        _entry_apply("mkqa-Japanese", no_text, "sft")
    assert ei.value.column == "answers"
    qg = {"answer": "1600年", "paragraph_question": "...", "question": "関ヶ原の戦いはいつ？",
          "sentence": "関ヶ原の戦いは1600年に起きた。", "paragraph": "関ヶ原の戦いは1600年に起きた。徳川家康が勝った。",
          "sentence_answer": "...", "paragraph_answer": "...", "paragraph_sentence": "...", "paragraph_id": "p1"}
    assert _entry_apply("lmqg/qg_jaquad", qg, "sft") == {
        "prompt": "関ヶ原の戦いはいつ？", "response": "関ヶ原の戦いは1600年に起きた。"}
    qag = {"paragraph": "関ヶ原の戦いは1600年に起きた。", "questions": ["いつ起きた？", "誰が勝った？"],
           "answers": ["1600年", "徳川家康"], "questions_answers": "..."}
    assert _entry_apply("lmqg/qag_jaquad", qag, "sft") == {
        "prompt": "いつ起きた？", "response": "関ヶ原の戦いは1600年に起きた。"}


def test_dschat_jsonfile_rows():
    row = {"prompt": "Human: Hi Assistant:", "chosen": "Hello!", "rejected": "Bye."}
    out = _entry_apply("local/jsonfile", row, "preference")
    assert out == {"prompt": "Hi", "chosen": "Hello!", "rejected": "Bye."}
    assert _dschat(out, "chosen") == "Human: Hi\n\nAssistant: Hello!"
    with pytest.raises(RowProblem) as ei:
        _entry_apply("local/jsonfile", {**row, "rejected": None}, "preference")
    assert ei.value.column == "rejected"


def test_mapping_renames_columns_and_apply_rejects_unknowns():
    row = {"q": "Name a fruit.", "good": "An apple.", "bad": "No."}
    out = apply("gptj_pairwise", row, {"prompt": "q", "chosen": "good", "rejected": "bad"}, "preference")
    assert out == {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "No."}
    with pytest.raises(RowProblem) as ei:
        apply("gptj_pairwise", row, {}, "sft")
    assert ei.value.column == "prompt" and "q, good, bad" in ei.value.message
    with pytest.raises(ValueError, match="unknown transform 'nope'.*webgpt"):
        apply("nope", row, {}, "sft")
    with pytest.raises(ValueError, match="cannot produce kind 'preference'"):
        apply("zhihu", {"INSTRUCTION": "a", "RESPONSE": "b"}, {}, "preference")
    assert "columns" not in tf.TRANSFORMS and "columns" in tf.RESERVED
    assert str(RowProblem("chosen", "bad")) == "chosen: bad"


# --------------------------------------------------------------------------------- loading
def test_offline_hub_entry_says_where_to_put_a_copy(tmp_path):
    entry = get_entry("Dahoas/rm-static")
    with pytest.raises(DatasetUnavailable) as ei:
        load_entry(entry, tmp_path, offline=True)
    msg = str(ei.value)
    assert str(tmp_path / "datasets" / "hub" / "Dahoas" / "rm-static") in msg
    assert "datasets.load_dataset('Dahoas/rm-static').save_to_disk('rm-static')" in msg
    assert "no internet" in msg
    zh = catalog.unavailable_message(entry, tmp_path, lang="zh")
    assert "本地副本" in zh and "save_to_disk" in zh
    assert catalog.local_copy_dirs(entry, tmp_path) == [tmp_path / "datasets" / "hub" / "Dahoas" / "rm-static",
                                                         tmp_path / "datasets" / "Dahoas" / "rm-static"]


def _rm_static_dict():
    import datasets

    def rows(tag, n):
        return {"prompt": [f"\n\nHuman: {tag} question {i}\n\nAssistant:" for i in range(n)],
                "response": [f" {tag} response {i}" for i in range(n)],
                "chosen": [f" {tag} chosen {i}" for i in range(n)],
                "rejected": [f" {tag} rejected {i}" for i in range(n)]}

    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows("train", 3)),
                                 "test": datasets.Dataset.from_dict(rows("test", 2))})


def test_local_save_to_disk_copy(tmp_path):
    folder = tmp_path / "datasets" / "hub" / "Dahoas" / "rm-static"
    _rm_static_dict().save_to_disk(str(folder))
    entry = get_entry("Dahoas/rm-static")
    assert catalog.find_local_copy(entry, tmp_path) == folder
    train = load_entry(entry, tmp_path, offline=True)
    assert len(train) == 3 and train[0]["chosen"] == " train chosen 0"
    assert set(train.column_names) == {"prompt", "response", "chosen", "rejected"}
    test = load_entry(entry, tmp_path, offline=True, split="test")
    assert len(test) == 2 and test[1]["prompt"].endswith("test question 1\n\nAssistant:")
    with pytest.raises(DatasetUnavailable, match="no split 'validation'.*train, test"):
        load_entry(entry, tmp_path, offline=True, split="validation")
    out = apply(entry.transform, train[0], entry.mapping, "preference")
    assert out == {"prompt": "train question 0", "chosen": "train chosen 0", "rejected": "train rejected 0"}


def test_local_parquet_snapshot_copy(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "datasets" / "Dahoas" / "full-hh-rlhf"  # the second place looked at
    (folder / "data").mkdir(parents=True)
    for split, n in (("train", 4), ("test", 1)):
        pq.write_table(pa.table({"prompt": [f"\n\nHuman: {split} {i}\n\nAssistant:" for i in range(n)],
                                 "response": [" r"] * n, "chosen": [f" {split} good {i}" for i in range(n)],
                                 "rejected": [" bad"] * n}),
                       folder / "data" / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text("snapshot")
    entry = get_entry("Dahoas/full-hh-rlhf")
    assert catalog.find_local_copy(entry, tmp_path) == folder
    train = load_entry(entry, tmp_path, offline=True)
    assert len(train) == 4 and train[3]["chosen"] == " train good 3"
    test = load_entry(entry, tmp_path, offline=True, split="test")
    assert len(test) == 1 and test[0]["chosen"] == " test good 0"


def test_local_snapshot_uses_the_entry_file_pattern(tmp_path):
    # A snapshot of QingyiSi/Alpaca-CoT holds many sets; InstructionWild-en reads only its own file.
    folder = tmp_path / "datasets" / "hub" / "QingyiSi" / "Alpaca-CoT"
    (folder / "instinwild").mkdir(parents=True)
    (folder / "alpaca").mkdir()
    (folder / "instinwild" / "instinwild_en.json").write_text(json.dumps(
        [{"instruction": "Say hi.", "input": "", "output": "Hi!"}]))
    (folder / "instinwild" / "instinwild_ch.json").write_text(json.dumps(
        [{"instruction": "说你好。", "input": "", "output": "你好！"}, {"instruction": "b", "input": "", "output": "c"}]))
    (folder / "alpaca" / "alpaca_data.json").write_text(json.dumps([{"instruction": "x", "input": "", "output": "y"}]))
    en = load_entry(get_entry("InstructionWild-en"), tmp_path, offline=True)
    assert en.to_list() == [{"instruction": "Say hi.", "input": "", "output": "Hi!"}]
    zh = load_entry(get_entry("InstructionWild-zh"), tmp_path, offline=True)
    assert len(zh) == 2 and zh[0]["output"] == "你好！"


def test_local_jsonfile_layout(tmp_path):
    entry = get_entry("local/jsonfile")
    with pytest.raises(DatasetUnavailable, match="data/train.json"):
        load_entry(entry, tmp_path, offline=True)
    data = tmp_path / "datasets" / "local" / "jsonfile" / "data"
    data.mkdir(parents=True)
    train = [{"prompt": "Human: Hi Assistant:", "chosen": "Hello!", "rejected": "Go."},
             {"prompt": "Human: 2+2? Assistant:", "chosen": "4", "rejected": "5"}]
    (data / "train.json").write_text(json.dumps(train))
    with pytest.raises(DatasetUnavailable, match="eval.json not found"):
        load_entry(entry, tmp_path, offline=True, split="eval")
    (data / "eval.json").write_text(json.dumps(train[:1]))
    got = load_entry(entry, tmp_path, offline=True)
    assert got.to_list() == train
    assert load_entry(entry, tmp_path, offline=False, split="eval").to_list() == train[:1]
    assert apply(entry.transform, got[1], entry.mapping, "sft") == {"prompt": "2+2?", "response": "4"}


def test_bundled_and_images_entries(tmp_path):
    sft = load_entry(get_entry("demo_sft"), tmp_path, offline=True)
    assert {"prompt", "response"} <= set(sft.column_names) and len(sft) > 10
    with pytest.raises(DatasetUnavailable, match="image folders"):
        load_entry(get_entry("demo_shapes"), tmp_path, offline=True)


def test_online_without_network_is_unavailable_at_once(tmp_path, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    if catalog.hub_unreachable() is None:
        pytest.skip("the hub's host name resolves here: this test is about a machine without internet")
    t0 = time.monotonic()
    with pytest.raises(DatasetUnavailable) as ei:
        load_entry(get_entry("stanfordnlp/SHP"), tmp_path, offline=False)
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert "cannot resolve" in msg and str(tmp_path / "datasets" / "hub" / "stanfordnlp" / "SHP") in msg


def test_online_load_dataset_error_becomes_unavailable(tmp_path, monkeypatch):
    """The real datasets.load_dataset call without network. huggingface_hub retries a failed lookup five
    times with back-off (~25 s; HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT do not shorten retries), so
    this is the one slow test here. Only our own pre-check is switched off, no library is patched."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if catalog.hub_unreachable() is None:
        pytest.skip("the hub's host name resolves here: this test is about a machine without internet")
    monkeypatch.setattr(catalog, "hub_unreachable", lambda: None)
    with pytest.raises(DatasetUnavailable) as ei:
        load_entry(get_entry("Dahoas/rm-static"), tmp_path, offline=False)
    msg = str(ei.value)
    assert "save_to_disk('rm-static')" in msg
    assert "ConnectionError" in msg or "Error" in msg.splitlines()[-1]
    assert isinstance(ei.value.__cause__, Exception)
