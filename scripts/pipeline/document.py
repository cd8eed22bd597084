"""A report as a list of blocks, rendered both as Markdown and as a self-contained HTML page.

One source for both formats keeps them saying the same thing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def warning(self, text: str) -> None:
        self.blocks.append(("warning", text))

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.blocks.append(("table", (header, [[str(c) for c in row] for row in rows])))

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("image", (path, caption)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                lines += ["#" * level + " " + text, ""]
            elif kind == "paragraph":
                lines += [str(value), ""]
            elif kind == "warning":
                lines += [f"> **Note:** {value}", ""]
            elif kind == "table":
                header, rows = value
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                lines.append("")
            elif kind == "image":
                path, caption = value
                lines += [f"![{caption}]({path})", f"*{caption}*", ""]
            elif kind == "code":
                lines += ["```", str(value), "```", ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
            "padding:3px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}"
            ".note{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em 1em}"
            "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:1em;"
            "overflow:auto;font-size:12px}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(str(value))}</p>")
            elif kind == "warning":
                parts.append(f"<p class='note'><b>Note:</b> {html.escape(str(value))}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in rows
                )
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            elif kind == "image":
                path, caption = value
                parts.append(
                    f"<figure><img src='{html.escape(path)}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            elif kind == "code":
                parts.append(f"<pre>{html.escape(str(value))}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts)
