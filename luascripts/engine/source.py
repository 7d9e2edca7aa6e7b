"""What must be true of a script's bytes before any Lua sees them."""

from __future__ import annotations

import re

from luascripts.engine.types import Diagnostic, Limits

_BYTECODE_PREFIXES = (b"\x1bLua", b"\x1bLJ")
_LOCATION = re.compile(r"^script:(\d+): ?")
_NEAR = re.compile(r"near '(.+)'$")


def check_source(source: str | bytes, limits: Limits) -> tuple[bytes | None, Diagnostic | None]:
    """(UTF-8 bytes, None) for an acceptable source, else (None, the reason)."""
    if isinstance(source, str):
        try:
            data = source.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            return None, Diagnostic(None, None,
                                    f"The script is not valid text (character {exc.start}).")
    elif isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        return None, Diagnostic(None, None, "The script must be Lua source text.")
    if data.startswith(_BYTECODE_PREFIXES):
        return None, Diagnostic(1, 1, "Precompiled Lua bytecode is not accepted; "
                                      "upload the script's source text.")
    if len(data) > limits.max_source_bytes:
        return None, Diagnostic(None, None, f"The script is {len(data)} bytes; the limit is "
                                            f"{limits.max_source_bytes} bytes.")
    if isinstance(source, bytes | bytearray):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            return None, Diagnostic(line, None,
                                    f"The script is not valid UTF-8 (byte {exc.start}).")
    return data, None


def diagnostic_from_lua(message: str, source: bytes | None = None,
                        traceback: str = "") -> Diagnostic:
    """Turn "script:12: unexpected symbol near 'x'" into Diagnostic(12, col, "unexpected...").

    Lua reports no columns; when the message names the offending token ("near 'x'") and it
    appears exactly once on that line, that is where it is. Otherwise no column: a wrong
    column would mislead more than none.
    """
    found = _LOCATION.match(message)
    if found is None:
        line = line_from_traceback(traceback)
        return Diagnostic(line, None, message)
    line = int(found.group(1))
    text = message[found.end():]
    column = None
    near = _NEAR.search(text)
    if near is not None and source is not None:
        lines = source.split(b"\n")
        token = near.group(1).encode("utf-8", "replace")
        if 0 < line <= len(lines) and lines[line - 1].count(token) == 1:
            at = lines[line - 1].find(token)
            column = len(lines[line - 1][:at].decode("utf-8", "replace")) + 1
    return Diagnostic(line, column, text)


def line_from_traceback(traceback: str) -> int | None:
    """The innermost script frame of a Lua traceback ("\\tscript:12: in ...")."""
    for entry in traceback.splitlines():
        found = re.match(r"\s*script:(\d+):", entry)
        if found:
            return int(found.group(1))
    return None


def lua_text(value: str) -> str:
    """Lua strings arrive as latin-1 (one char per byte); show them as the UTF-8 they are."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")
