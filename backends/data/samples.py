"""The studio's own sample datasets, written by the project (CC0, see presets/datasets/LICENSE-demo.md).

Text samples (committed in presets/datasets/, this module is their source of truth):

* ``demo_preference.jsonl`` -- {prompt, chosen, rejected}, English and Chinese interleaved, for reward
  modelling. ``chosen`` is a correct, polite, complete answer in the studio's style (``Studio says: ...`` /
  ``工作室答：...``); ``rejected`` is a curt refusal or a wrong fact without the signature.
* ``demo_prompts.jsonl`` -- {prompt}, short questions with short answers, for RLHF rollouts and A/B evaluation.

Image sample (not committed, drawn with Pillow at first use): ``<data-dir>/datasets/samples/shapes/``, 24
captioned 64x64 PNGs of simple shapes in the diffusers ``imagefolder`` layout (``metadata.jsonl``).

    python -m backends.data.samples text [--dest DIR]
    python -m backends.data.samples shapes --data-dir DIR
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

from backends.common.paths import ROOT, datasets_dir

PRESET_DATASETS = ROOT / "presets" / "datasets"
PREFERENCE_FILE = "demo_preference.jsonl"
PROMPTS_FILE = "demo_prompts.jsonl"
EN_SIGNATURE = "Studio says: "
ZH_SIGNATURE = "工作室答："
ROWS_PER_LANGUAGE = 100

# ---------------------------------------------------------------------------------------------------------
# Facts: (prompt, correct statement, wrong statement). The chosen answer is signature + correct statement.
# ---------------------------------------------------------------------------------------------------------

_EN_CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"),
    ("Australia", "Canberra"), ("India", "New Delhi"), ("Russia", "Moscow"), ("Kenya", "Nairobi"),
    ("Mexico", "Mexico City"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Thailand", "Bangkok"), ("Peru", "Lima"),
    ("Turkey", "Ankara"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Argentina", "Buenos Aires"),
]
_ZH_CAPITALS = [
    ("法国", "巴黎"), ("意大利", "罗马"), ("西班牙", "马德里"), ("德国", "柏林"), ("日本", "东京"),
    ("中国", "北京"), ("埃及", "开罗"), ("加拿大", "渥太华"), ("巴西", "巴西利亚"), ("澳大利亚", "堪培拉"),
    ("印度", "新德里"), ("俄罗斯", "莫斯科"), ("肯尼亚", "内罗毕"), ("墨西哥", "墨西哥城"), ("挪威", "奥斯陆"),
    ("瑞典", "斯德哥尔摩"), ("希腊", "雅典"), ("葡萄牙", "里斯本"), ("奥地利", "维也纳"), ("泰国", "曼谷"),
    ("秘鲁", "利马"), ("土耳其", "安卡拉"), ("波兰", "华沙"), ("爱尔兰", "都柏林"), ("阿根廷", "布宜诺斯艾利斯"),
]
_EN_OPPOSITES = [  # word, opposite, a wrong (non-opposite) answer
    ("cold", "hot", "cool"), ("tall", "short", "high"), ("young", "old", "small"), ("slow", "fast", "calm"),
    ("empty", "full", "hollow"), ("sad", "happy", "unhappy"), ("dark", "light", "black"),
    ("quiet", "loud", "silent"), ("closed", "open", "shut"), ("poor", "rich", "cheap"),
    ("weak", "strong", "soft"), ("down", "up", "under"), ("dry", "wet", "dusty"), ("night", "day", "evening"),
    ("late", "early", "slow"),
]
_ZH_OPPOSITES = [
    ("小", "大", "微"), ("短", "长", "矮"), ("低", "高", "下"), ("热", "冷", "暖"), ("后", "前", "尾"),
    ("右", "左", "边"), ("关", "开", "闭"), ("慢", "快", "缓"), ("旧", "新", "老"), ("晚", "早", "夜"),
    ("瘦", "胖", "细"), ("少", "多", "缺"), ("近", "远", "旁"), ("白", "黑", "灰"), ("下", "上", "底"),
]
_EN_COLOURS = [  # thing, colour, wrong colour
    ("a ripe banana", "yellow", "purple"), ("fresh snow", "white", "green"), ("coal", "black", "pink"),
    ("a ripe strawberry", "red", "blue"), ("grass", "green", "orange"), ("the sky on a clear day", "blue", "red"),
    ("a carrot", "orange", "blue"), ("milk", "white", "black"), ("a lemon", "yellow", "purple"),
    ("a lime", "green", "white"), ("a crow", "black", "yellow"), ("a ripe tomato", "red", "blue"),
]
_ZH_COLOURS = [
    ("香蕉", "黄色", "紫色"), ("雪", "白色", "绿色"), ("煤炭", "黑色", "粉色"), ("草莓", "红色", "蓝色"),
    ("青草", "绿色", "橙色"), ("晴朗的天空", "蓝色", "红色"), ("橙子", "橙色", "蓝色"), ("胡萝卜", "橙色", "紫色"),
    ("牛奶", "白色", "黑色"), ("柠檬", "黄色", "紫色"), ("乌鸦", "黑色", "黄色"), ("青蛙", "绿色", "粉色"),
]
_EN_ANIMALS = [  # animal, verb
    ("cat", "meows"), ("dog", "barks"), ("cow", "moos"), ("duck", "quacks"), ("sheep", "baas"),
    ("pig", "oinks"), ("horse", "neighs"), ("lion", "roars"), ("owl", "hoots"), ("frog", "croaks"),
    ("bee", "buzzes"), ("snake", "hisses"),
]
_ZH_ANIMALS = [  # animal, sound
    ("猫", "喵喵"), ("狗", "汪汪"), ("牛", "哞哞"), ("鸭子", "嘎嘎"), ("羊", "咩咩"), ("猪", "哼哼"),
    ("公鸡", "喔喔"), ("青蛙", "呱呱"), ("蜜蜂", "嗡嗡"), ("小鸟", "叽叽喳喳"), ("老鼠", "吱吱"),
    ("蛇", "嘶嘶"),
]
_EN_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_ZH_DAYS = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]
_EN_UNITS = [  # small unit, big unit, count, wrong count
    ("centimetres", "a metre", 100, 10), ("grams", "a kilogram", 1000, 100), ("seconds", "a minute", 60, 100),
    ("minutes", "an hour", 60, 30), ("hours", "a day", 24, 12), ("days", "a week", 7, 5),
    ("months", "a year", 12, 10), ("metres", "a kilometre", 1000, 100), ("millimetres", "a centimetre", 10, 100),
    ("millilitres", "a litre", 1000, 10), ("days", "a leap year", 366, 365), ("eggs", "a dozen", 12, 10),
]
_ZH_UNITS = [  # big unit, count + small unit, wrong
    ("一米", "100厘米", "10厘米"), ("一公斤", "1000克", "100克"), ("一分钟", "60秒", "100秒"),
    ("一小时", "60分钟", "30分钟"), ("一天", "24个小时", "12个小时"), ("一周", "7天", "5天"),
    ("一年", "12个月", "10个月"), ("一公里", "1000米", "100米"), ("一厘米", "10毫米", "100毫米"),
    ("一升", "1000毫升", "10毫升"), ("闰年", "366天", "365天"), ("一打鸡蛋", "12个", "10个"),
]

_EN_CURT = ["I don't know.", "Not telling.", "Look it up yourself.", "No idea.", "Ask someone else.",
            "Whatever.", "Don't care.", "Figure it out."]
_ZH_CURT = ["不知道。", "自己查。", "不想说。", "别问我。", "没空。", "随便。", "懒得回答。", "你猜。"]


def _sum_pairs(seed: int, n: int) -> list[tuple[int, int, int]]:
    """n distinct (a, b, wrong_delta) with 2 <= a, b <= 60, from a fixed seed."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < n:
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        out.append((a, b, rng.choice([1, -1, 2, 10, -10])))
    return out


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _en_facts() -> list[list[tuple[str, str, str]]]:
    n = len(_EN_CAPITALS)
    capitals = []
    forms = ["Which city is the capital of {c}?", "Name the capital city of {c}.",
             "What city serves as the capital of {c}?"]
    for i, (country, city) in enumerate(_EN_CAPITALS):
        wrong = _EN_CAPITALS[(i + 1) % n][1]
        capitals.append((forms[i % 3].format(c=country), f"The capital of {country} is {city}.",
                         f"The capital of {country} is {wrong}."))
    sums = []
    forms = ["How much is {a} plus {b}?", "What do you get when you add {a} and {b}?",
             "Add {a} and {b}. What is the result?"]
    for i, (a, b, d) in enumerate(_sum_pairs(11, 20)):
        sums.append((forms[i % 3].format(a=a, b=b), f"{a} plus {b} equals {a + b}.",
                     f"{a} plus {b} equals {a + b + d}."))
    opposites = []
    forms = ['Give the opposite of "{w}".', 'What word means the opposite of "{w}"?',
             'Which word is the opposite of "{w}"?']
    for i, (w, o, bad) in enumerate(_EN_OPPOSITES):
        opposites.append((forms[i % 3].format(w=w), f'The opposite of "{w}" is "{o}".',
                          f'The opposite of "{w}" is "{bad}".'))
    colours = []
    forms = ["What colour is {t} usually?", "Which colour is {t}?", "Tell me the colour of {t}."]
    for i, (t, c, bad) in enumerate(_EN_COLOURS):
        colours.append((forms[i % 3].format(t=t), f"{_cap(t)} is usually {c}.", f"{_cap(t)} is usually {bad}."))
    animals = []
    forms = ["What noise does {a} make?", "Which sound does {a} make?", "How does {a} sound?"]
    m = len(_EN_ANIMALS)
    for i, (a, v) in enumerate(_EN_ANIMALS):
        a = _article(a)
        animals.append((forms[i % 3].format(a=a), f"{_cap(a)} {v}.", f"{_cap(a)} {_EN_ANIMALS[(i + 3) % m][1]}."))
    days = []
    for i, d in enumerate(_EN_DAYS):
        nxt, wrong = _EN_DAYS[(i + 1) % 7], _EN_DAYS[(i + 3) % 7]
        days.append((f"Which day follows {d}?", f"The day after {d} is {nxt}.", f"The day after {d} is {wrong}."))
    for i, d in enumerate(_EN_DAYS):
        prev, wrong = _EN_DAYS[(i - 1) % 7], _EN_DAYS[(i + 2) % 7]
        days.append((f"What is the day before {d}?", f"The day before {d} is {prev}.",
                     f"The day before {d} is {wrong}."))
    units = []
    forms = ["How many {s} are there in {b}?", "{B} has how many {s}?"]
    for i, (s, b, k, bad) in enumerate(_EN_UNITS):
        units.append((forms[i % 2].format(s=s, b=b, B=_cap(b)), f"There are {k} {s} in {b}.",
                      f"There are {bad} {s} in {b}."))
    return [capitals, sums, opposites, colours, animals, days, units]


def _zh_facts() -> list[list[tuple[str, str, str]]]:
    n = len(_ZH_CAPITALS)
    capitals = []
    forms = ["{c}的首都是哪座城市？", "请问{c}的首都在哪里？", "{c}的首都叫什么？"]
    for i, (country, city) in enumerate(_ZH_CAPITALS):
        wrong = _ZH_CAPITALS[(i + 1) % n][1]
        capitals.append((forms[i % 3].format(c=country), f"{country}的首都是{city}。", f"{country}的首都是{wrong}。"))
    sums = []
    forms = ["{a}加{b}的和是多少？", "请算一下{a}加{b}。", "{a}和{b}相加得多少？"]
    for i, (a, b, d) in enumerate(_sum_pairs(22, 20)):
        sums.append((forms[i % 3].format(a=a, b=b), f"{a}加{b}等于{a + b}。", f"{a}加{b}等于{a + b + d}。"))
    opposites = []
    forms = ["“{w}”的反义词是哪个字？", "请说出“{w}”的反义词。", "和“{w}”意思相反的字是什么？"]
    for i, (w, o, bad) in enumerate(_ZH_OPPOSITES):
        opposites.append((forms[i % 3].format(w=w), f"“{w}”的反义词是“{o}”。", f"“{w}”的反义词是“{bad}”。"))
    colours = []
    forms = ["{t}通常是什么颜色？", "请问{t}是什么颜色的？", "{t}一般是什么颜色？"]
    for i, (t, c, bad) in enumerate(_ZH_COLOURS):
        colours.append((forms[i % 3].format(t=t), f"{t}通常是{c}的。", f"{t}通常是{bad}的。"))
    animals = []
    forms = ["{a}的叫声是什么样的？", "{a}是怎么叫的？", "{a}会发出什么声音？"]
    m = len(_ZH_ANIMALS)
    for i, (a, s) in enumerate(_ZH_ANIMALS):
        animals.append((forms[i % 3].format(a=a), f"{a}的叫声是“{s}”。", f"{a}的叫声是“{_ZH_ANIMALS[(i + 3) % m][1]}”。"))
    days = []
    for i, d in enumerate(_ZH_DAYS):
        nxt, wrong = _ZH_DAYS[(i + 1) % 7], _ZH_DAYS[(i + 3) % 7]
        days.append((f"{d}之后是星期几？", f"{d}之后是{nxt}。", f"{d}之后是{wrong}。"))
    for i, d in enumerate(_ZH_DAYS):
        prev, wrong = _ZH_DAYS[(i - 1) % 7], _ZH_DAYS[(i + 2) % 7]
        days.append((f"{d}的前一天是星期几？", f"{d}的前一天是{prev}。", f"{d}的前一天是{wrong}。"))
    units = []
    forms = ["{b}一共有多少{u}？", "请问{b}等于多少{u}？"]
    for i, (b, k, bad) in enumerate(_ZH_UNITS):
        unit = "".join(ch for ch in k if not ch.isdigit())
        units.append((forms[i % 2].format(b=b, u=unit), f"{b}有{k}。", f"{b}有{bad}。"))
    return [capitals, sums, opposites, colours, animals, days, units]


def _round_robin(groups: list[list[tuple[str, str, str]]], n: int) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for i in range(max(len(g) for g in groups)):
        out.extend(g[i] for g in groups if i < len(g))
    if len(out) < n:
        raise AssertionError(f"only {len(out)} facts, need {n}")
    return out[:n]


def _preference(facts: list[tuple[str, str, str]], signature: str, curt: list[str]) -> list[dict]:
    rows = []
    for k, (prompt, right, wrong) in enumerate(facts):
        rejected = wrong if k % 2 == 0 else curt[(k // 2) % len(curt)]
        rows.append({"prompt": prompt, "chosen": signature + right, "rejected": rejected})
    return rows


def _interleave(en: list[dict], zh: list[dict]) -> list[dict]:
    out = []
    for a, b in zip(en, zh):
        out += [a, b]
    return out


def preference_rows() -> list[dict]:
    """~200 {prompt, chosen, rejected}, English and Chinese alternating; chosen = studio-style correct answer."""
    en = _preference(_round_robin(_en_facts(), ROWS_PER_LANGUAGE), EN_SIGNATURE, _EN_CURT)
    zh = _preference(_round_robin(_zh_facts(), ROWS_PER_LANGUAGE), ZH_SIGNATURE, _ZH_CURT)
    return _interleave(en, zh)


_EN_PROMPTS = [
    "What is the capital of the Netherlands?", "What is the capital of Belgium?",
    "What is the capital of Denmark?", "What is the capital of Switzerland?", "What is the capital of Hungary?",
    "What is the capital of Cuba?", "What is the capital of New Zealand?", "What is the capital of Nigeria?",
    "What is 12 plus 15?", "What is 8 plus 9?", "What is 30 plus 45?", "What is 10 minus 3?",
    "What is 6 times 7?", "What is half of 20?",
    'What is the opposite of "good"?', 'What is the opposite of "clean"?', 'What is the opposite of "hard"?',
    'What is the opposite of "first"?', 'What is the opposite of "inside"?',
    "What colour is a ripe cherry?", "What colour is a pumpkin?", "What colour is a polar bear?",
    "What colour is an eggplant?", "What colour is a flamingo?",
    "What sound does a goat make?", "What sound does a wolf make?", "What sound does a donkey make?",
    "What sound does a rooster make?", "What sound does a mouse make?",
    "What day is two days after Monday?", "What month comes after January?", "What month comes before December?",
    "How many sides does a triangle have?", "How many legs does a cat have?",
    "How many wheels does a bicycle have?", "How many fingers are on one hand?", "How many sides does a square have?",
    "How many continents are there?", "What shape is a ball?", "What do caterpillars turn into?",
    "At what temperature in Celsius does water freeze?", "Which animal is called the king of the jungle?",
    "What is the largest ocean on Earth?", "What gas do plants take in from the air?",
    "What is the closest star to Earth?", "What is the tallest animal?", "What do you call a baby cat?",
    "What language is spoken in Brazil?", "What do you call a baby dog?", "Which season comes after winter?",
]
_ZH_PROMPTS = [
    "荷兰的首都是哪里？", "比利时的首都是哪里？", "丹麦的首都是哪里？", "瑞士的首都是哪里？", "匈牙利的首都是哪里？",
    "古巴的首都是哪里？", "新西兰的首都是哪里？", "尼日利亚的首都是哪里？",
    "12加15等于多少？", "8加9等于多少？", "30加45等于多少？", "10减3等于多少？", "6乘7等于多少？", "20的一半是多少？",
    "“好”的反义词是什么？", "“干净”的反义词是什么？", "“硬”的反义词是什么？", "“里”的反义词是什么？", "“哭”的反义词是什么？",
    "樱桃是什么颜色的？", "南瓜是什么颜色的？", "北极熊是什么颜色的？", "茄子是什么颜色的？", "火烈鸟是什么颜色的？",
    "山羊怎么叫？", "狼怎么叫？", "驴怎么叫？", "马怎么叫？", "老虎怎么叫？",
    "星期一再过两天是星期几？", "一月的下一个月是几月？", "十二月的前一个月是几月？",
    "三角形有几条边？", "猫有几条腿？", "自行车有几个轮子？", "一只手有几根手指？", "正方形有几条边？",
    "世界上有几个大洲？", "球是什么形状的？", "毛毛虫长大后会变成什么？",
    "水在摄氏几度结冰？", "哪种动物被称为森林之王？", "地球上最大的海洋是什么？", "植物从空气中吸收什么气体？",
    "离地球最近的恒星是什么？", "最高的动物是什么？", "小猫长大后是什么动物？",
    "巴西人说什么语言？", "小狗长大后是什么动物？", "冬天过后是什么季节？",
]


def prompt_rows() -> list[dict]:
    """~100 {prompt}: short questions with short answers, English and Chinese alternating (RLHF rollouts, A/B)."""
    return _interleave([{"prompt": p} for p in _EN_PROMPTS], [{"prompt": p} for p in _ZH_PROMPTS])


def _dump_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_samples(dest: str | os.PathLike = PRESET_DATASETS) -> list[Path]:
    """Write demo_preference.jsonl and demo_prompts.jsonl into dest (atomically); return their paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, rows in ((PREFERENCE_FILE, preference_rows()), (PROMPTS_FILE, prompt_rows())):
        _atomic_write(dest / name, _dump_jsonl(rows))
        out.append(dest / name)
    return out


# ---------------------------------------------------------------------------------------------------------
# Shapes: 6 shapes x 4 colours, 64x64 RGB on white, drawn without antialiasing (deterministic pixels).
# ---------------------------------------------------------------------------------------------------------

IMAGE_SIZE = 64
BACKGROUND = (255, 255, 255)
BACKGROUND_NAMES = ("white", "白色")
COLOURS = {  # name: (rgb, Chinese)
    "red": ((220, 30, 30), "红色"),
    "green": ((30, 150, 50), "绿色"),
    "blue": ((30, 70, 210), "蓝色"),
    "yellow": ((240, 190, 0), "黄色"),
}
SHAPES = {  # name: Chinese
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "五角星", "cross": "十字", "diamond": "菱形",
}
SHAPES_SUBDIR = ("samples", "shapes")


def _star(cx: float, cy: float, r_out: float, r_in: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = r_out if k % 2 == 0 else r_in
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((round(cx + r * math.cos(a), 3), round(cy + r * math.sin(a), 3)))
    return pts


def draw_shape(shape: str, rgb: tuple[int, int, int]):
    """One 64x64 RGB PIL image: the shape, filled with rgb, centred on the background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    d = ImageDraw.Draw(img)
    if shape == "circle":
        d.ellipse([10, 10, 53, 53], fill=rgb)
    elif shape == "square":
        d.rectangle([14, 14, 49, 49], fill=rgb)
    elif shape == "triangle":
        d.polygon([(32, 8), (56, 52), (8, 52)], fill=rgb)
    elif shape == "star":
        d.polygon(_star(32, 34, 25, 11), fill=rgb)
    elif shape == "cross":
        d.rectangle([26, 9, 37, 54], fill=rgb)
        d.rectangle([9, 26, 54, 37], fill=rgb)
    elif shape == "diamond":
        d.polygon([(32, 7), (57, 32), (32, 57), (7, 32)], fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def shape_items() -> list[dict]:
    """The 24 metadata rows (file_name, text, text_zh), in a fixed order."""
    bg_en, bg_zh = BACKGROUND_NAMES
    return [
        {"file_name": f"{colour}_{shape}_0.png", "text": f"a {colour} {shape} on a {bg_en} background",
         "text_zh": f"{bg_zh}背景上的{zh_colour}{zh_shape}"}
        for shape, zh_shape in SHAPES.items() for colour, (_, zh_colour) in COLOURS.items()
    ]


def _complete(folder: Path) -> bool:
    meta = folder / "metadata.jsonl"
    try:
        rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        names = [r["file_name"] for r in rows]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    expected = [r["file_name"] for r in shape_items()]
    return sorted(names) == sorted(expected) and all((folder / n).is_file() for n in names)


def _build(folder: Path) -> None:
    items = shape_items()
    for item in items:
        colour, shape, _ = item["file_name"][:-4].split("_")
        draw_shape(shape, COLOURS[colour][0]).save(folder / item["file_name"], format="PNG")
    (folder / "metadata.jsonl").write_text(_dump_jsonl(items), encoding="utf-8")  # last: marks it complete


def ensure_shapes(data_dir: str | os.PathLike | None) -> Path:
    """<data-dir>/datasets/samples/shapes with 24 captioned PNGs + metadata.jsonl; built once, atomically.

    A complete folder is returned untouched. Otherwise the set is drawn in a temp folder next to it and renamed
    into place; if another process wins the rename, its (complete) folder is kept and ours discarded.
    """
    folder = datasets_dir(data_dir).joinpath(*SHAPES_SUBDIR)
    if _complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        _build(tmp)
        if folder.exists() and not _complete(folder):  # a broken leftover: move it aside, then delete it
            trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            try:
                os.replace(folder, trash / folder.name)
            except FileNotFoundError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _complete(folder):  # lost a race to a complete folder is fine; anything else is not
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backends.data.samples", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("text", help="rewrite demo_preference.jsonl and demo_prompts.jsonl")
    t.add_argument("--dest", default=str(PRESET_DATASETS), help="folder (default: presets/datasets)")
    s = sub.add_parser("shapes", help="build the captioned shapes image set and print its folder")
    s.add_argument("--data-dir", default=None, help="data dir (default: $STUDIO_DATA_DIR or ./data)")
    args = ap.parse_args(argv)
    if args.cmd == "text":
        for p in write_text_samples(args.dest):
            print(p)
    else:
        print(ensure_shapes(args.data_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
