"""What every tab shares: the data dir, flags, settings, the bundled-model preparer, the i18n registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.i18n import t
from app.prepare import Preparer
from app.settings import Settings


@dataclass
class I18nEntry:
    component: object
    attr: str  # "label" or "value"
    render: Callable[[str], str]


@dataclass
class StudioContext:
    data_dir: Path
    offline: bool = False
    settings: Settings | None = None
    preparer: Preparer | None = None
    engine: object | None = None  # app.jobs.Engine (None in tests that build only the Environment tab)
    i18n: list[I18nEntry] = field(default_factory=list)

    def __post_init__(self):
        self.settings = self.settings or Settings(self.data_dir)
        self.preparer = self.preparer or Preparer(self.data_dir, offline=self.offline)

    @property
    def lang(self) -> str:
        return self.settings.get("language")

    def tr(self, component, key: str, attr: str | None = None, fmt: str = "{}"):
        """Register a component whose text shows string `key` (formatted with fmt); returns it.

        The text is a Button's or Markdown's value and every other component's label."""
        if attr is None:
            import gradio as gr

            attr = "value" if isinstance(component, (gr.Button, gr.Markdown)) else "label"
        self.i18n.append(I18nEntry(component, attr, lambda lang: fmt.format(t(key, lang))))
        return component

    def tr_fn(self, component, render: Callable[[str], str], attr: str = "value"):
        """Register a component whose `attr` is rendered by `render(lang)` (e.g. a Markdown block)."""
        self.i18n.append(I18nEntry(component, attr, render))
        return component
