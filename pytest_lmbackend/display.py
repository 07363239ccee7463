"""Text from outside (config files, profiles, GPU names, package metadata) made safe for a terminal."""

from __future__ import annotations

import unicodedata

# Control characters (C0, DEL, C1: ESC sequences, NUL, CR, backspace, newline), format characters
# (bidirectional overrides, zero-width ones), line and paragraph separators, and lone surrogates:
# each can clear the screen, move the cursor, hide text or forge lines of a table.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` as one line that a terminal shows as written: every control or format character is
    replaced by its Python escape (``\\x1b``, ``\\n``, ``\\u202e``); everything else, non-ASCII letters
    included, is kept. Use it on each line the package prints that carries text it did not write."""
    value = str(text)
    if value.isprintable():  # the common case costs one C-level scan
        return value
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in value)


def _escape(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable_block(text: object) -> str:
    """``text`` of several lines (a child process's error output) with its line breaks kept and every
    line made safe by ``printable``; the lines after the first are indented, so none can pass for a
    line of the program's own."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    return "\n".join([printable(lines[0]), *("    " + printable(line) for line in lines[1:])])
