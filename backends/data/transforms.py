"""Named row transforms: one raw row of a known dataset -> one internal row.

Internal shapes by kind (the conversation, never a rendered template):
  sft         {"prompt": str, "response": str}
  preference  {"prompt": str, "chosen": str, "rejected": str}
  prompt      {"prompt": str}
"prompt" is the user's last message with no template words; a multi-turn conversation adds "history", the
{"role", "content"} turns before it (`backends.common.data.prompt_fields`). Answers carry no DS-Chat leading
space.

Which columns make the question and the answers follows DeepSpeed-Chat's `dschat/utils/data/raw_datasets.py`
(microsoft/DeepSpeedExamples, applications/DeepSpeed-Chat): where DS-Chat builds `" Human: " + question +
" Assistant:"` the question is stored, and a prompt that a dataset ships in DS-Chat / Anthropic form
("\\n\\nHuman: …\\n\\nAssistant:") is parsed into its turns. DS-Chat's text comes back at training and
generation time with the template `dschat` (`backends.common.data.format_prompt`), the model's own chat
template with `chat`. For kind `sft` a preference dataset gives prompt + chosen (DS-Chat phase 1); for kind
`prompt` only the prompt is used (phase 3).

A transform reads source columns through `mapping` (internal field -> source column; a field that is
not mapped reads the column of the same name). It raises `RowProblem(column, message)` naming the
SOURCE column when a row cannot be converted, and passes values through unchanged otherwise (no
stripping; the caller validates empty strings and types).

The generic "columns" transform (plain column renaming, also used for images) is implemented by the
lead's `backends.data.shapes`; its name is reserved here.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.common.data import parse_turns, prompt_fields

KINDS = ("sft", "preference", "prompt", "images")
TEXT_KINDS = ("sft", "preference", "prompt")
PAIR_KINDS = ("preference", "sft", "prompt")
SFT_KINDS = ("sft", "prompt")
RESERVED = ("columns",)  # implemented outside this module (backends.data.shapes)


class RowProblem(Exception):
    """A row that a transform cannot convert; `column` is the source column at fault."""

    def __init__(self, column: str, message: str):
        self.column = column
        self.message = message
        super().__init__(f"{column}: {message}")


@dataclass(frozen=True)
class Transform:
    name: str
    fn: Callable[[dict, dict[str, str], str], dict]
    reads: tuple[str, ...]
    kinds: tuple[str, ...]
    description: str
    optional: tuple[str, ...] = ()  # fields among `reads` that may stay unmapped (alpaca's input)


# ------------------------------------------------------------------------------------- helpers
def _col(mapping: Mapping[str, str] | None, field: str) -> str:
    return (mapping or {}).get(field) or field


def _get(row: Mapping[str, Any], mapping: Mapping[str, str] | None, field: str) -> tuple[str, Any]:
    """(source column, value); RowProblem when the row has no such column."""
    col = _col(mapping, field)
    if col not in row:
        found = ", ".join(map(str, row)) or "(none)"
        raise RowProblem(col, f"column not found in the row (columns: {found})")
    return col, row[col]


def _text(col: str, value: Any, what: str = "text") -> str:
    """A string value for concatenation; None and non-strings are named, never coerced."""
    if value is None:
        raise RowProblem(col, f"is empty (null); expected {what}")
    if not isinstance(value, str):
        raise RowProblem(col, f"must be {what}, got {type(value).__name__}")
    return value


def _get_text(row, mapping, field: str) -> tuple[str, str]:
    col, value = _get(row, mapping, field)
    return col, _text(col, value)


def _human(question: str) -> str:
    """The question DS-Chat wraps as " Human: q Assistant:" (PromptRawDataset.get_prompt): stored as it is."""
    return question


def _dialogue(col: str, text: str) -> list[dict[str, str]]:
    """A prompt a dataset ships in DS-Chat / Anthropic form, parsed into its turns."""
    try:
        turns = parse_turns(text)
    except (TypeError, ValueError) as e:
        raise RowProblem(col, str(e)) from None
    if turns[-1]["role"] != "user":
        raise RowProblem(col, "the dialogue does not end with a Human turn to answer")
    return turns


def _answer(text: str) -> str:
    """An answer without DS-Chat's leading space (the dschat template adds it back)."""
    return text.strip()


def _shape(kind: str, prompt: str | list, chosen: Callable[[], Any] | None = None,
           rejected: Callable[[], Any] | None = None) -> dict:
    """The internal row for `kind` from the user's text or a list of turns ending with the user's; answers are
    computed lazily so kind `prompt` never needs them."""
    fields = prompt_fields(prompt) if isinstance(prompt, list) else {"prompt": prompt}
    if kind == "prompt":
        return fields
    if kind == "sft":
        return {**fields, "response": chosen()}
    if kind == "preference":
        return {**fields, "chosen": chosen(), "rejected": rejected()}
    raise ValueError(f"kind {kind!r} is not a text kind ({', '.join(TEXT_KINDS)})")


def _first(col: str, value: Any, key: str | None = None, what: str = "entry") -> Any:
    """value[0] (or value[0][key]) of a list of dicts; also accepts datasets' dict-of-lists layout."""
    if isinstance(value, Mapping) and key is not None:  # Sequence({...}) features load as {key: [..]}
        items = value.get(key)
        if not isinstance(items, Sequence) or isinstance(items, str) or not items:
            raise RowProblem(col, f"has no {what}")
        return items[0]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise RowProblem(col, f"must be a list, got {type(value).__name__}")
    if not value:
        raise RowProblem(col, f"has no {what} (empty list)")
    item = value[0]
    if key is None:
        return item
    if not isinstance(item, Mapping) or key not in item:
        raise RowProblem(col, f"first {what} has no {key!r} field")
    return item[key]


# -------------------------------------------------------------------- DeepSpeed-Chat built-ins
def _dschat_prompt_chosen_rejected(row, mapping, kind):
    # DahoasRmstaticDataset / DahoasFullhhrlhfDataset: prompt, chosen, rejected taken as they are (the
    # prompt's "\n\nHuman: …\n\nAssistant:" parsed into turns, the answers' leading space dropped).
    col, prompt = _get_text(row, mapping, "prompt")
    return _shape(kind, _dialogue(col, prompt), lambda: _answer(_get_text(row, mapping, "chosen")[1]),
                  lambda: _answer(_get_text(row, mapping, "rejected")[1]))


def _yitingxie(row, mapping, kind):
    # YitingxieRlhfrewarddatasetsDataset: prompt + "Assistant:", answers = text after the last "Assistant:".
    pcol, prompt = _get_text(row, mapping, "prompt")

    def answer(field):
        col, text = _get_text(row, mapping, field)
        if "Assistant:" not in text:
            raise RowProblem(col, "no 'Assistant:' turn to take the answer from")
        return _answer(text.split("Assistant:")[-1])

    return _shape(kind, _dialogue(pcol, prompt + "Assistant:"), lambda: answer("chosen"), lambda: answer("rejected"))


def _gptj_pairwise(row, mapping, kind):
    # DahoasSyntheticinstructgptjpairwiseDataset: " Human: " + prompt + " Assistant:", " " + answer.
    _, q = _get_text(row, mapping, "prompt")
    return _shape(kind, _human(q), lambda: _answer(_get_text(row, mapping, "chosen")[1]),
                  lambda: _answer(_get_text(row, mapping, "rejected")[1]))


_CITATION_SPACED = re.compile(r" [\(\[].*?[\)\]]")
_CITATION = re.compile(r"[\(\[].*?[\)\]]")


def _strip_citations(text: str) -> str:
    # OpenaiWebgptcomparisonsDataset removes "[1]"-style citations (and any bracketed/parenthesised span).
    return _CITATION.sub("", _CITATION_SPACED.sub("", text))


def _score(row, mapping, field) -> float:
    col, value = _get(row, mapping, field)
    if isinstance(value, bool) or value is None:
        raise RowProblem(col, f"must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RowProblem(col, f"must be a number, got {value!r}") from None


def _webgpt(row, mapping, kind):
    # OpenaiWebgptcomparisonsDataset: question.full_text; chosen = answer_0 if score_0 >= score_1 else
    # answer_1, rejected = the other one (a tie makes answer_0 chosen and answer_1 rejected, as DS-Chat).
    qcol, question = _get(row, mapping, "question")
    if isinstance(question, Mapping):
        if "full_text" not in question:
            raise RowProblem(qcol, "has no 'full_text' field")
        question = question["full_text"]
    prompt = _human(_text(qcol, question))

    def pick(want_chosen: bool):
        first_wins = _score(row, mapping, "score_0") >= _score(row, mapping, "score_1")
        field = "answer_0" if first_wins == want_chosen else "answer_1"
        _, text = _get_text(row, mapping, field)
        return _answer(_strip_citations(text))

    return _shape(kind, prompt, lambda: pick(True), lambda: pick(False))


def _shp(row, mapping, kind):
    # StanfordnlpSHPDataset: " Human: " + history + " Assistant:"; labels == 1 -> human_ref_A preferred.
    _, history = _get_text(row, mapping, "history")

    def pick(want_chosen: bool):
        col, label = _get(row, mapping, "labels")
        try:
            a_wins = int(label) == 1
        except (TypeError, ValueError):
            raise RowProblem(col, f"must be 0 or 1, got {label!r}") from None
        field = "human_ref_A" if a_wins == want_chosen else "human_ref_B"
        return _answer(_get_text(row, mapping, field)[1])

    return _shape(kind, _human(history), lambda: pick(True), lambda: pick(False))


def _pvduy_vicuna(row, mapping, kind):
    # PvduySharegptalpacaoavicunaformatDataset: prompt with USER/ASSISTANT renamed to Human/Assistant,
    # response " " + label; no rejected answer.
    col, prompt = _get_text(row, mapping, "prompt")
    prompt = prompt.replace("USER", "Human").replace("ASSISTANT", "Assistant")
    return _shape(kind, _dialogue(col, prompt), lambda: _answer(_get_text(row, mapping, "label")[1]))


def _zhihu(row, mapping, kind):
    # Wangrui6ZhihuKOLDataset: INSTRUCTION -> prompt, RESPONSE -> answer; no rejected answer.
    _, q = _get_text(row, mapping, "INSTRUCTION")
    return _shape(kind, _human(q), lambda: _answer(_get_text(row, mapping, "RESPONSE")[1]))


def _miracl(row, mapping, kind):
    # CohereMiracl{zh,ja}queries2212Dataset: query -> prompt, positive_passages[0].text -> chosen,
    # negative_passages[0].text -> rejected.
    _, q = _get_text(row, mapping, "query")

    def passage(field, what):
        col, value = _get(row, mapping, field)
        return _answer(_text(col, _first(col, value, "text", what)))

    return _shape(kind, _human(q), lambda: passage("positive_passages", "positive passage"),
                  lambda: passage("negative_passages", "negative passage"))


def _hc3(row, mapping, kind):
    # HelloSimpleAIHC3ChineseDataset: question -> prompt, human_answers[0] -> answer (chatgpt_answers unused).
    _, q = _get_text(row, mapping, "question")

    def answer():
        col, value = _get(row, mapping, "human_answers")
        return _answer(_text(col, _first(col, value, what="human answer")))

    return _shape(kind, _human(q), answer)


def _mkqa(lang: str):
    # Mkqa{Chinese,Japanese}Dataset: queries[lang] -> prompt, answers[lang][0].text -> answer.
    def fn(row, mapping, kind):
        qcol, queries = _get(row, mapping, "queries")
        if not isinstance(queries, Mapping) or lang not in queries:
            raise RowProblem(qcol, f"has no {lang!r} query")
        q = _text(qcol, queries[lang])

        def answer():
            acol, answers = _get(row, mapping, "answers")
            if not isinstance(answers, Mapping) or lang not in answers:
                raise RowProblem(acol, f"has no {lang!r} answers")
            return _answer(_text(acol, _first(acol, answers[lang], "text", f"{lang} answer")))

        return _shape(kind, _human(q), answer)

    return fn


def _qg_jaquad(row, mapping, kind):
    # LmqgQgjaquadDataset: question -> prompt, sentence (the sentence holding the answer) -> answer.
    _, q = _get_text(row, mapping, "question")
    return _shape(kind, _human(q), lambda: _answer(_get_text(row, mapping, "sentence")[1]))


def _qag_jaquad(row, mapping, kind):
    # LmqgQagjaquadDataset: questions[0] -> prompt, paragraph -> answer.
    col, questions = _get(row, mapping, "questions")
    q = _text(col, _first(col, questions, what="question"))
    return _shape(kind, _human(q), lambda: _answer(_get_text(row, mapping, "paragraph")[1]))


def _dschat_jsonfile(row, mapping, kind):
    # LocalJsonFileDataset: " " + prompt (already "Human: … Assistant:"), " " + chosen, " " + rejected;
    # the prompt is parsed into turns, the spaces come back with the dschat template.
    col, prompt = _get_text(row, mapping, "prompt")
    return _shape(kind, _dialogue(col, prompt), lambda: _answer(_get_text(row, mapping, "chosen")[1]),
                  lambda: _answer(_get_text(row, mapping, "rejected")[1]))


# ----------------------------------------------------------- ColossalChat / MedicalGPT sets
_ASSISTANT_TURN = "\n\nAssistant:"


def _split_dialogue(col: str, text: Any) -> tuple[str, str]:
    """Anthropic HH dialogue -> (everything up to and including the last "\\n\\nAssistant:", the rest)."""
    text = _text(col, text)
    cut = text.rfind(_ASSISTANT_TURN)
    if cut < 0:
        raise RowProblem(col, "no '\\n\\nAssistant:' turn to split at")
    cut += len(_ASSISTANT_TURN)
    return text[:cut], text[cut:]


def _hh_split(row, mapping, kind):
    # Anthropic/hh-rlhf ships whole dialogues in chosen/rejected; split them the way Dahoas/rm-static's
    # prompts look: prompt ends with "\n\nAssistant:", the answers are the differing last turns.
    ccol, chosen_text = _get(row, mapping, "chosen")
    prompt, chosen = _split_dialogue(ccol, chosen_text)

    def rejected():
        rcol, rejected_text = _get(row, mapping, "rejected")
        r_prompt, r_answer = _split_dialogue(rcol, rejected_text)
        if r_prompt != prompt:
            raise RowProblem(rcol, "its dialogue before the last Assistant turn differs from chosen's")
        return r_answer

    return _shape(kind, _dialogue(ccol, prompt), lambda: _answer(chosen), lambda: _answer(rejected()))


def _alpaca(row, mapping, kind):
    # Alpaca / InstructionWild: prompt = instruction (+ "\n\n" + input when input is non-empty),
    # stored as the user's text (DS-Chat would wrap it as " Human: … Assistant:"); response = output.
    _, instruction = _get_text(row, mapping, "instruction")
    icol = _col(mapping, "input")
    extra = row.get(icol)  # optional column (InstructionWild rows have no input)
    if extra is not None and not isinstance(extra, str):
        raise RowProblem(icol, f"must be text, got {type(extra).__name__}")
    q = instruction + "\n\n" + extra if extra else instruction
    return _shape(kind, _human(q), lambda: _answer(_get_text(row, mapping, "output")[1]))


_HUMAN_ROLES = {"human", "user"}
_GPT_ROLES = {"gpt", "assistant", "chatgpt", "bing", "bard", "model"}


def _sharegpt(row, mapping, kind):
    # ShareGPT conversations [{from: human|gpt, value}]: prompt = the turns before the last gpt turn (DS-Chat
    # would render " Human: q1 Assistant: a1 Human: q2 Assistant:"), response = the last gpt value.
    col, conv = _get(row, mapping, "conversations")
    if not isinstance(conv, Sequence) or isinstance(conv, str) or not conv:
        raise RowProblem(col, "must be a non-empty list of {from, value} turns")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise RowProblem(col, f"turn {i + 1} must be an object with 'from' and 'value'")
        role = str(turn["from"]).lower()
        value = turn["value"]
        if not isinstance(value, str):
            raise RowProblem(col, f"turn {i + 1} value must be text, got {type(value).__name__}")
        if role in _HUMAN_ROLES:
            turns.append(("human", value))
        elif role in _GPT_ROLES:
            turns.append(("gpt", value))
        elif role == "system":
            turns.append(("system", value))
        else:
            raise RowProblem(col, f"turn {i + 1} has an unknown speaker {turn['from']!r}")
    if kind == "prompt" and turns[-1][0] == "human":
        history, last = turns, None
    else:
        if turns[-1][0] != "gpt":
            raise RowProblem(col, f"the last turn is from {conv[-1]['from']!r}, not gpt: no answer to train on")
        history, last = turns[:-1], turns[-1][1]
    if not any(r == "human" for r, _ in history):
        raise RowProblem(col, "no human turn before the answer")
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    return _shape(kind, [{"role": roles[role], "content": value} for role, value in history], lambda: last)


# ----------------------------------------------------------------------------------- registry
def _t(name, fn, reads, kinds, description, optional=()) -> Transform:
    return Transform(name=name, fn=fn, reads=tuple(reads), kinds=tuple(kinds), description=description,
                     optional=tuple(optional))


TRANSFORMS: dict[str, Transform] = {t.name: t for t in (
    _t("dschat_prompt_chosen_rejected", _dschat_prompt_chosen_rejected, ("prompt", "chosen", "rejected"),
       PAIR_KINDS, "prompt/chosen/rejected in DS-Chat form (\\n\\nHuman: … \\n\\nAssistant:); the prompt split into turns"),
    _t("yitingxie", _yitingxie, ("prompt", "chosen", "rejected"), PAIR_KINDS,
       "prompt + 'Assistant:'; answers = the text after the last 'Assistant:' of chosen/rejected"),
    _t("gptj_pairwise", _gptj_pairwise, ("prompt", "chosen", "rejected"), PAIR_KINDS,
       "prompt -> prompt (DS-Chat: ' Human: ' + prompt + ' Assistant:'); chosen / rejected"),
    _t("webgpt", _webgpt, ("question", "answer_0", "answer_1", "score_0", "score_1"), PAIR_KINDS,
       "question.full_text; the higher-scored answer is chosen (tie: answer_0); [..]/(..) citations removed"),
    _t("shp", _shp, ("history", "human_ref_A", "human_ref_B", "labels"), PAIR_KINDS,
       "history -> prompt; labels == 1 -> human_ref_A chosen, else human_ref_B"),
    _t("pvduy_vicuna", _pvduy_vicuna, ("prompt", "label"), SFT_KINDS,
       "prompt's USER/ASSISTANT turns -> prompt; label -> response; no rejected answer"),
    _t("zhihu", _zhihu, ("INSTRUCTION", "RESPONSE"), SFT_KINDS,
       "INSTRUCTION -> prompt, RESPONSE -> response; no rejected answer"),
    _t("miracl", _miracl, ("query", "positive_passages", "negative_passages"), PAIR_KINDS,
       "query -> prompt; first positive passage chosen, first negative passage rejected"),
    _t("hc3", _hc3, ("question", "human_answers"), SFT_KINDS,
       "question -> prompt; first human answer -> response (ChatGPT answers unused, as DS-Chat)"),
    _t("mkqa_zh", _mkqa("zh_cn"), ("queries", "answers"), SFT_KINDS,
       "queries.zh_cn -> prompt; answers.zh_cn[0].text -> response"),
    _t("mkqa_ja", _mkqa("ja"), ("queries", "answers"), SFT_KINDS,
       "queries.ja -> prompt; answers.ja[0].text -> response"),
    _t("qg_jaquad", _qg_jaquad, ("question", "sentence"), SFT_KINDS,
       "question -> prompt; sentence (holding the answer) -> response"),
    _t("qag_jaquad", _qag_jaquad, ("questions", "paragraph"), SFT_KINDS,
       "questions[0] -> prompt; paragraph -> response"),
    _t("dschat_jsonfile", _dschat_jsonfile, ("prompt", "chosen", "rejected"), PAIR_KINDS,
       "DS-Chat local/jsonfile rows: prompt (Human: … Assistant:) split into turns; chosen / rejected"),
    _t("hh_split", _hh_split, ("chosen", "rejected"), PAIR_KINDS,
       "whole HH dialogues split at the last '\\n\\nAssistant:' into prompt + chosen / rejected answers"),
    _t("alpaca", _alpaca, ("instruction", "input", "output"), SFT_KINDS,
       "instruction (+ '\\n\\n' + input when non-empty) -> prompt; output -> response",
       optional=("input",)),
    _t("sharegpt", _sharegpt, ("conversations",), SFT_KINDS,
       "conversations [{from, value}]: turns before the last gpt turn -> prompt; last gpt value -> response"),
)}


def known_names() -> list[str]:
    return sorted(set(TRANSFORMS) | set(RESERVED))


def apply(name: str, row: dict, mapping: dict[str, str] | None, kind: str) -> dict:
    """The internal row of `kind` from `row` by the transform `name` (ValueError for an unknown name/kind)."""
    t = TRANSFORMS.get(name)
    if t is None:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(sorted(TRANSFORMS))}")
    if kind not in t.kinds:
        raise ValueError(f"transform {name!r} cannot produce kind {kind!r}; it produces: {', '.join(t.kinds)}")
    return t.fn(row, dict(mapping or {}), kind)


__all__ = ["KINDS", "RESERVED", "TRANSFORMS", "RowProblem", "Transform", "apply", "known_names"]
