"""The curves widget every training tab and the Jobs tab share: metrics.jsonl drawn as a server-rendered SVG.

Why not gr.LinePlot: in Gradio 6 here it drew axes but no line and no legend for these frames (Vega-Lite
5 specs in a Vega 6 runtime, the step axis turned into a band scale), and a Vega re-render on every poll
is what kept an open page busy. An SVG string in a gr.HTML costs the browser one innerHTML swap per new
point and draws the same in every browser and screenshot.

One declaration of the series a plot can show: SERIES (metric key -> label key and colour). A tab names
the keys it plots (TrainingKind.series); the Jobs tab plots whatever keys of SERIES a job logged.
"""
from __future__ import annotations

import html
import math

import gradio as gr

from app.i18n import t

# metric key in metrics.jsonl -> (i18n key of its legend label, colour). Order = legend order.
SERIES: dict[str, tuple[str, str]] = {
    "loss": ("plot.loss", "#f97316"),
    "eval_loss": ("plot.eval_loss", "#2563eb"),
    "reward_mean": ("plot.reward_mean", "#16a34a"),
    "rm_accuracy": ("plot.rm_accuracy", "#9333ea"),
    "kl": ("plot.kl", "#dc2626"),
    # reward model (backends/reward.py, DS-Chat step 2's acc / chosen / rejected scores on the eval split)
    "eval_accuracy": ("plot.eval_accuracy", "#9333ea"),
    "eval_chosen_score": ("plot.eval_chosen_score", "#16a34a"),
    "eval_rejected_score": ("plot.eval_rejected_score", "#dc2626"),
    # DPO / KTO (TRL's implicit rewards on the eval split)
    "eval_rewards/margins": ("plot.dpo_margin", "#0891b2"),
    "eval_rewards/accuracies": ("plot.dpo_accuracy", "#9333ea"),
    "eval_rewards/chosen": ("plot.dpo_chosen", "#16a34a"),
    "eval_rewards/rejected": ("plot.dpo_rejected", "#dc2626"),
    # PPO (backends/rlhf/ppo.py; reward_mean and kl above)
    "actor_loss": ("plot.actor_loss", "#f97316"),
    "critic_loss": ("plot.critic_loss", "#2563eb"),
    "answer_len": ("plot.answer_len", "#64748b"),
    # GRPO / RLOO (reward_mean, kl above: the sampled answers' mean RM score, the KL to the reference)
    "eval_reward_mean": ("plot.eval_reward_mean", "#0891b2"),
}

W, H = 520, 240                       # viewBox; the SVG scales to the column width
PAD_L, PAD_R, PAD_T, PAD_B = 56, 14, 34, 34


def series_points(metrics: list[dict], keys=None) -> dict[str, list[tuple[float, float]]]:
    """{key: [(step, value), ...]} for the keys of SERIES (or `keys`) that have at least one finite value."""
    keys = list(keys) if keys else list(SERIES)
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    for m in metrics:
        step = m.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        for k in keys:
            v = m.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[k].append((float(step), float(v)))
    return {k: pts for k, pts in out.items() if pts}


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.4g}"


def curves_svg(metrics: list[dict], keys=None, lang: str = "en", empty_key: str = "plot.empty") -> str:
    """The curves as one <svg>: a polyline per series with a dot per logged point, a legend, numeric axes."""
    pts = series_points(metrics, keys)
    if not pts:
        return (f"<div class='studio-plot-empty'>{html.escape(t(empty_key, lang))}</div>")
    xs = [x for p in pts.values() for x, _ in p]
    ys = [y for p in pts.values() for _, y in p]
    x_lo, x_hi = 0.0, max(max(xs), 1.0)
    y_lo, y_hi = min(0.0, min(ys)), max(ys)
    if y_hi <= y_lo:
        y_hi = y_lo + 1.0
    y_hi += (y_hi - y_lo) * 0.05
    xt, yt = _nice_ticks(x_lo, x_hi, 6), _nice_ticks(y_lo, y_hi, 5)
    x_hi, y_hi = max(x_hi, xt[-1]), max(y_hi, yt[-1])
    y_lo = min(y_lo, yt[0])
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x):
        return PAD_L + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y):
        return PAD_T + ph - (y - y_lo) / (y_hi - y_lo) * ph

    parts = [f"<svg class='studio-curves' viewBox='0 0 {W} {H}' width='100%' role='img' "
             f"xmlns='http://www.w3.org/2000/svg' font-size='12' font-family='sans-serif'>",
             f"<rect x='{PAD_L}' y='{PAD_T}' width='{pw}' height='{ph}' fill='none' stroke='#d1d5db'/>"]
    for v in yt:
        y = sy(v)
        parts.append(f"<line x1='{PAD_L}' x2='{PAD_L + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e5e7eb'/>"
                     f"<text x='{PAD_L - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#6b7280'>{_fmt(v)}</text>")
    for v in xt:
        x = sx(v)
        parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{PAD_T + ph}' y2='{PAD_T + ph + 4}' stroke='#9ca3af'/>"
                     f"<text x='{x:.1f}' y='{PAD_T + ph + 16}' text-anchor='middle' fill='#6b7280'>{_fmt(v)}</text>")
    parts.append(f"<text x='{PAD_L + pw / 2:.0f}' y='{H - 4}' text-anchor='middle' fill='#374151'>"
                 f"{html.escape(t('plot.step', lang))}</text>")
    lx = PAD_L
    for key, p in pts.items():
        label_key, colour = SERIES.get(key, (key, "#6b7280"))
        label = t(label_key, lang)
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        parts.append(f"<g class='studio-series' data-series='{html.escape(key)}' data-points='{len(p)}'>"
                     f"<polyline points='{coords}' fill='none' stroke='{colour}' stroke-width='2' "
                     f"stroke-linejoin='round'/>")
        r = 3 if len(p) <= 60 else 1.5
        parts += [f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='{r}' fill='{colour}'/>" for x, y in p]
        last = p[-1][1]
        parts.append("</g>")
        text = f"{label} ({_fmt(round(last, 4))})"
        parts.append(f"<g class='studio-legend-item' data-series='{html.escape(key)}'>"
                     f"<line x1='{lx}' x2='{lx + 18}' y1='14' y2='14' stroke='{colour}' stroke-width='3'/>"
                     f"<circle cx='{lx + 9}' cy='14' r='3' fill='{colour}'/>"
                     f"<text x='{lx + 24}' y='18' fill='#111827'>{html.escape(text)}</text></g>")
        lx += 34 + sum(12 if ord(c) > 0x2e80 else 6.6 for c in text)
    parts.append("</svg>")
    return "".join(parts)


def curves_widget(ctx, elem_id: str, keys=None, lang: str = "en") -> gr.HTML:
    """The plot component (label "Loss curves", translated with the page); fill it with curves_svg()."""
    comp = gr.HTML(curves_svg([], keys, lang), label=t("train.curves", lang), show_label=True, container=True,
                   elem_id=elem_id, elem_classes=["studio-plot"], js_on_load=None)
    return ctx.tr(comp, "train.curves", attr="label")
