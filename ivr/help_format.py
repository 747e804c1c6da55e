"""How ``ivr`` prints a description in ``--help``: paragraphs wrapped to the terminal, examples kept.

argparse either re-wraps a whole description into one block (losing the lines of a list of examples) or
keeps every line as typed (too wide for a narrow terminal). :class:`ParagraphHelpFormatter` does both
jobs: a paragraph of prose is wrapped to the terminal's width, and a line that starts with spaces (an
example command, a list item) is kept as written.
"""

from __future__ import annotations

import argparse
import textwrap

__all__ = ["ParagraphHelpFormatter"]


class ParagraphHelpFormatter(argparse.HelpFormatter):
    """Wrap prose paragraphs of a description to the width; keep indented lines (examples) as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                blocks.append(
                    textwrap.fill(
                        " ".join(line.strip() for line in paragraph),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
                paragraph.clear()

        for line in text.splitlines():
            if not line.strip():
                flush()
                blocks.append("")
            elif line.startswith(" "):
                flush()
                blocks.append(indent + line)
            else:
                paragraph.append(line)
        flush()
        return "\n".join(blocks)
