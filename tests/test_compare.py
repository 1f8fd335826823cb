"""A/B compare with the real bundled SmolLM2 and the adapter the demo recipe trains: the fine-tune changes the
answers, the same model on both sides answers the same, the adapter toggle equals a separately loaded base,
reward scores appear, bad input is named; gradio_client and a real browser drive the page."""
from __future__ import annotations

import json
import threading

import pytest

from backends.common.errors import FieldError
from backends.infer import chat

pytestmark = [pytest.mark.slow]
PROMPT = "What is the capital of Italy?"
GREEDY = chat.GenSettings(max_new_tokens=20)


@pytest.fixture(scope="module")
def sides(prepared_data_dir, demo_adapter):
    base = chat.resolve_side("bundled:smollm2", prepared_data_dir)
    tuned = chat.resolve_side(str(demo_adapter), prepared_data_dir)
    return base, tuned


def _text(side, cache=chat.CACHE):
    _, tok, _, _ = cache.get(side)
    return chat.render([], PROMPT, chat.pick_template("auto", side, tok), tok)


def test_the_fine_tune_changes_the_answer_and_both_stream_together(sides):
    base, tuned = sides
    assert tuned.kind == "adapter" and tuned.model_path == base.model_path and tuned.template == "chat"
    text = _text(tuned)
    snaps = list(chat.stream_pair(chat.Pair(base, tuned, text, text), GREEDY))
    a, b = snaps[-1]
    print(f"base: {a!r}\ntuned: {b!r}")
    assert a and b and a != b
    assert b.startswith("Studio says") and not a.startswith("Studio says")
    # streamed: both panes grow over several updates, not one final dump
    growing = [s for s in snaps if 0 < len(s[0]) < len(a) and 0 < len(s[1]) < len(b)]
    assert len(snaps) > 5 and growing


def test_same_model_on_both_sides_answers_the_same(sides):
    base, _ = sides
    text = _text(base)
    a, b = chat.answer_pair(chat.Pair(base, base, text, text), GREEDY)
    assert a == b and a


@pytest.mark.parametrize("mode", ["batch", "parallel"])
def test_adapter_toggle_equals_a_separately_loaded_base(sides, mode, monkeypatch):
    base, tuned = sides
    text = _text(tuned)
    monkeypatch.setenv("STUDIO_AB_PAIR", mode)
    toggled = chat.answer_one(tuned, text, GREEDY, adapter=False)   # PeftModel.disable_adapter()
    fresh = chat.answer_one(base, text, GREEDY, cache=chat.ModelCache())  # a plain copy, never touched by peft
    # batch: one generate, the base row with the adapter off; parallel: the plain model and the PeftModel at once
    in_pair, with_adapter = chat.answer_pair(chat.Pair(base, tuned, text, text), GREEDY)
    assert toggled == fresh == in_pair
    assert with_adapter == chat.answer_one(tuned, text, GREEDY) != fresh


def test_the_plain_base_and_the_adapter_share_one_copy_of_the_weights(sides):
    base, tuned = sides
    plain, _, _, plain_lock = chat.CACHE.get(base)
    peft_model, _, name, peft_lock = chat.CACHE.get(tuned)
    assert name and not hasattr(plain, "peft_config") and plain_lock is not peft_lock  # can run at once
    q_plain = plain.model.layers[0].self_attn.q_proj
    q_peft = peft_model.get_base_model().model.layers[0].self_attn.q_proj
    assert hasattr(q_peft, "lora_A") and not hasattr(q_plain, "lora_A")
    assert q_peft.base_layer.weight.data_ptr() == q_plain.weight.data_ptr()
    plain_ptrs = {t.data_ptr() for t in plain.parameters()}
    base_params = [(n, t) for n, t in peft_model.named_parameters() if "lora_" not in n]
    assert base_params and all(t.data_ptr() in plain_ptrs for _, t in base_params)


def test_pair_mode(sides, monkeypatch):
    import torch

    _, tuned = sides
    model, _, _, _ = chat.CACHE.get(tuned)
    sampled = chat.GenSettings(do_sample=True)
    monkeypatch.setenv("STUDIO_AB_PAIR", "parallel")
    assert chat.pair_mode(model, GREEDY) == "parallel"
    assert chat.pair_mode(model, sampled) == "batch"  # one seeded stream for both rows
    monkeypatch.setenv("STUDIO_AB_PAIR", "fast")
    with pytest.raises(FieldError) as e:
        chat.pair_mode(model, GREEDY)
    assert e.value.field == "STUDIO_AB_PAIR" and "batch" in e.value.message
    monkeypatch.delenv("STUDIO_AB_PAIR")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the UI's budget
        assert chat.pair_mode(model, GREEDY) == ("parallel" if chat.usable_cores() >= 2 else "batch")
        torch.set_num_threads(chat.usable_cores())  # every core busy in each call: no room for a second one
        assert chat.pair_mode(model, GREEDY) == "batch"
    finally:
        torch.set_num_threads(threads)


def test_sampling_with_the_same_seed_repeats(sides):
    base, tuned = sides
    text = _text(tuned)
    s = chat.GenSettings(max_new_tokens=12, do_sample=True, temperature=1.0, seed=7)
    assert chat.answer_pair(chat.Pair(base, tuned, text, text), s) == chat.answer_pair(
        chat.Pair(base, tuned, text, text), s)


def test_stop_ends_generation_early(sides):
    base, tuned = sides
    text = _text(tuned)
    stop = threading.Event()
    stop.set()  # as if Stop was pressed at once: generation ends after the first token
    a, b = list(chat.stream_pair(chat.Pair(base, tuned, text, text), chat.GenSettings(max_new_tokens=200), stop))[-1]
    assert len(a.split()) <= 2 and len(b.split()) <= 2


def test_reward_scores_appear(prepared_data_dir, demo_adapter, tiny_reward_model):
    from app.context import StudioContext
    from app.tabs.compare import compare_once

    assert chat.is_reward_model(tiny_reward_model)
    ctx = StudioContext(prepared_data_dir)
    out = list(compare_once(ctx, PROMPT, "bundled:smollm2", str(demo_adapter), str(tiny_reward_model), "auto",
                            GREEDY))[-1]
    assert isinstance(out["reward_base"], float) and isinstance(out["reward_tuned"], float)
    assert out["reward_base"] != out["reward_tuned"]  # different answers, different scores
    rm = chat.scorer(str(tiny_reward_model), prepared_data_dir)
    text = _text(chat.resolve_side(str(demo_adapter), prepared_data_dir))
    assert rm.score(text, [out["base"]])[0] == pytest.approx(out["reward_base"], abs=1e-4)


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    """A different (tiny, random) causal LM folder: an adapter trained on SmolLM2 does not fit it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("other-base")
    LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(out)
    return out


@pytest.mark.parametrize("case", ["empty_prompt", "missing_job", "wrong_base", "max_new_0", "max_new_huge",
                                  "too_long", "not_a_reward_model"])
def test_bad_input_names_the_field(prepared_data_dir, demo_adapter, other_base, case):
    from app.context import StudioContext
    from app.tabs.compare import compare_once

    ctx = StudioContext(prepared_data_dir)
    args = dict(prompt=PROMPT, base="bundled:smollm2", tuned=str(demo_adapter), reward="", template="auto",
                settings=GREEDY)
    field = {"empty_prompt": "prompt", "missing_job": "finetuned", "wrong_base": "finetuned",
             "max_new_0": "max_new_tokens", "max_new_huge": "max_new_tokens", "too_long": "prompt",
             "not_a_reward_model": "reward_model"}[case]
    if case == "empty_prompt":
        args["prompt"] = "   "
    elif case == "missing_job":
        args["tuned"] = "job:20990101-000000-sft-dead"
    elif case == "wrong_base":
        args["base"] = str(other_base)
    elif case == "max_new_0":
        args["settings"] = chat.GenSettings(max_new_tokens=0)
    elif case == "max_new_huge":
        args["settings"] = chat.GenSettings(max_new_tokens=10 ** 9)
    elif case == "too_long":
        args["prompt"] = "tell me about the sea " * 2000  # ~10k tokens > SmolLM2's 8192
    elif case == "not_a_reward_model":
        args["reward"] = "bundled:smollm2"
    with pytest.raises(FieldError) as e:
        list(compare_once(ctx, args["prompt"], args["base"], args["tuned"], args["reward"], args["template"],
                          args["settings"]))
    assert e.value.field == field, e.value
    print(f"{case}: {e.value}")


# --------------------------------------------------------------------------------- API and page
def test_gradio_client_calls_the_chat_endpoints(start_studio, studio_data_dir, demo_adapter):
    from gradio_client import Client

    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    client = Client(studio.url, verbose=False)
    once = client.predict(PROMPT, "bundled:smollm2", str(demo_adapter), api_name="/compare_once")
    assert once["base"] and once["tuned"].startswith("Studio says") and once["template"] == "chat"
    assert once["mode"] == ("parallel" if chat.usable_cores() >= 2 else "batch")  # the studio runs at 1 thread
    result = client.predict(PROMPT, "bundled:smollm2", str(demo_adapter), "", "auto", "20", False, "0.7", "0.9",
                            "50", "1.0", "1234", False, api_name="/compare_chat")
    pane_a, pane_b = result[0], result[1]
    assert pane_a[-1]["role"] == "assistant" and pane_b[-1]["content"]
    assert any(isinstance(x, str) and "Both answers" in x for x in result)
    texts = {json.dumps(pane_a[-1]["content"]), json.dumps(pane_b[-1]["content"])}
    assert any("Studio says" in x for x in texts) and len(texts) == 2


@pytest.mark.browser
def test_page_streams_both_panes_and_saves_a_blind_vote(start_studio, studio_data_dir, demo_adapter, page):
    from conftest import doc_screenshot

    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    page.get_by_role("tab", name="A/B compare").click()
    import shutil

    shutil.copytree(demo_adapter, studio_data_dir / "results" / "demo-lora")  # typed relative to the data dir
    box = page.locator("#ab-tuned input")
    box.fill("results/demo-lora")
    box.press("Enter")
    page.locator("#ab-blind input").check()
    page.locator("#ab-prompt textarea").fill(PROMPT)
    page.locator("#ab-send").click()
    page.wait_for_function("() => document.querySelector('#ab-status').innerText.includes('Both answers')",
                           timeout=180_000)
    a, b = page.locator("#ab-chat-a").inner_text(), page.locator("#ab-chat-b").inner_text()
    assert PROMPT in a and PROMPT in b and a != b
    # the UI runs at one torch thread: with two cores the sides answer at once, from one copy of the weights
    status = page.locator("#ab-status").inner_text()
    assert ("both at once" if chat.usable_cores() >= 2 else "one batch") in status and "copy of the weights" in status
    assert ("Studio says" in a) != ("Studio says" in b)
    # blind: the panes are only "A" and "B" until the vote
    assert page.locator("#ab-label-a").inner_text().strip() == "A"
    page.locator("#ab-vote-b").click()
    page.wait_for_function("() => document.querySelector('#ab-status').innerText.includes('Vote B saved')",
                           timeout=30_000)
    assert "base" in page.locator("#ab-label-a").inner_text() or "fine-tuned" in page.locator(
        "#ab-label-a").inner_text()
    votes = [json.loads(x) for x in (studio_data_dir / "compare" / "votes.jsonl").read_text().splitlines()]
    assert votes[-1]["vote"] == "B" and votes[-1]["blind"] is True and votes[-1]["prompt"] == PROMPT
    tuned_pane = "B" if votes[-1]["a_is"] == "base" else "A"
    assert votes[-1]["winner"] == ("tuned" if tuned_pane == "B" else "base")
    page.locator("#ab-blind input").uncheck()
    page.locator("#ab-swap").click()
    page.wait_for_timeout(500)
    doc_screenshot(page, "compare.png", studio_data_dir)


def test_models_go_to_the_gpu_in_half_precision_when_torch_sees_one(monkeypatch):
    import torch

    if not torch.cuda.is_available():
        assert chat.placement() == ("cpu", "fp32")  # this machine: what every test above ran with
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, dtype in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert chat.placement() == ("cuda", dtype)
