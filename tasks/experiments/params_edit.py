"""Setting keys in params.yaml the way a person would: the key's own line changes (its value; the
comment after it stays), a key the file lacks is added at the end of its section, and every other
byte of the file stays as it was. ruamel.yaml finds where each key is; the text is edited here, so
its re-formatting of the rest of the file (nulls, list indents) never happens."""

from __future__ import annotations

import re

import yaml
from ruamel.yaml import YAML

from tasks.engine import artifacts


def _flow(value) -> str:
    """A value as one line of YAML that PyYAML reads back the same (1e-4 is written 0.0001)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _block_end(lines: list[str], first: int, indent: int) -> int:
    """The line after a key's block: the next non-blank, non-comment line indented no deeper."""
    end = first + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#") and len(lines[end]) - len(lines[end].lstrip()) <= indent:
            break
        end += 1
    return end


def _comment(rest: str) -> str:
    """The comment after a scalar on its line (`8   # why`): the shortest tail starting with
    whitespace + '#' whose removal leaves one YAML value."""
    for found in re.finditer(r"\s+#", rest):
        try:
            yaml.safe_load(rest[: found.start()])
            return rest[found.start() :]
        except yaml.YAMLError:
            continue
    return "\n" if rest.endswith("\n") else ""


def _set_one(text: str, key: str, value) -> str:
    lines = text.splitlines(keepends=True)
    node, parts = YAML().load(text), key.split(".")
    depth = 0
    for part in parts[:-1]:
        child = node.get(part) if hasattr(node, "get") else None
        if not hasattr(child, "lc"):
            return _add(lines, node, parts[depth:], value, depth)
        if len(child) == 0:  # `finetune: {}`: written as the whole mapping, on its line
            for inner in reversed(parts[depth + 1 :]):
                value = {inner: value}
            return _set_one(text, ".".join(parts[: depth + 1]), value)
        node, depth = child, depth + 1
    last = parts[-1]
    if last not in node:
        return _add(lines, node, [last], value, depth)
    line, col = node.lc.key(last)
    value_line, value_col = node.lc.value(last)
    one_line = not hasattr(node[last], "lc") or node[last].fa.flow_style()  # a scalar, or [a, b] / {}
    if value_line == line and one_line:
        rest = lines[line][value_col:]
        lines[line] = lines[line][:value_col] + _flow(value) + _comment(rest)
        return "".join(lines)
    end = _block_end(lines, line, col)
    while end > line + 1 and not lines[end - 1].strip():
        end -= 1  # the blank lines after the block stay
    lines[line:end] = [" " * col + f"{last}: {_flow(value)}\n"]
    return "".join(lines)


def _add(lines: list[str], node, parts: list[str], value, depth: int) -> str:
    """Add `a.b: value` (nested as needed) at the end of `node`'s block (the file's, at depth 0)."""
    if depth == 0:
        at, indent = len(lines), 0
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    else:
        first_key = next(iter(node))
        line, indent = node.lc.key(first_key)
        at = _block_end(lines, line, indent - 1)
        while at > line + 1 and not lines[at - 1].strip():
            at -= 1  # before the blank lines that end the section
    new = [" " * (indent + 2 * i) + f"{p}:\n" for i, p in enumerate(parts[:-1])]
    new.append(" " * (indent + 2 * (len(parts) - 1)) + f"{parts[-1]}: {_flow(value)}\n")
    lines[at:at] = new
    return "".join(lines)


def set_keys(path, overrides: dict) -> None:
    """Set dotted keys in a YAML file in place (one rename: never half-written)."""
    text = path.read_text(encoding="utf-8")
    for key, value in overrides.items():
        text = _set_one(text, key, value)
    artifacts.write_text(path, text)
