"""Type a prompt, see its tokens: a text box and the token table of `sdexplain.tokens`, updated on every keystroke."""

from __future__ import annotations

import ipywidgets as widgets

from sdexplain.tokens import token_table_html, tokenize
from sdexplain.widgets.base import View
from sdexplain.i18n import t


class TokenInspector(View):
    """A Text box and the token table of what is typed, updated on every change (no model runs).

    Parts: ``text``, ``table`` (an HTML widget), ``output``, ``widget``. Set ``text.value`` to drive it.
    """

    def __init__(self, tokenizer, text: str = "", title: str | None = None):
        super().__init__()
        self.tokenizer, self.title = tokenizer, title
        self.text = widgets.Text(value=text, placeholder=t("type a prompt"), description=t("prompt"), continuous_update=True,
                                 layout=widgets.Layout(width="90%"))  # fmt: skip
        self.table = widgets.HTML()
        self.widget = widgets.VBox([self.text, self.table, self.output])
        self.on_change(self.text, self.show)
        self.show()

    def show(self) -> None:
        self.tokenization = tokenize(self.tokenizer, self.text.value)
        self.table.value = token_table_html(self.tokenization, title=self.title)
