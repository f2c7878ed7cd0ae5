"""YAML output for `Accept: application/yaml`, as the API server writes it.

The API server's YAML serializer marshals to JSON and converts with
sigs.k8s.io/yaml (go-yaml v2 underneath), and so does `kubectl get -o yaml`:
keys sorted, two-space indentation, list items at their key's indentation,
multi-line strings as literal blocks, and strings that would read back as
another type (true, 1.5, null, a timestamp...) double-quoted. This covers the
JSON values Kubernetes objects hold; it writes YAML, it does not read it.
"""
import json
import re

_PLAIN_BAD_START = set("-?:,[]{}#&*!|>'\"%@` \t")
_RESERVED = {"", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y", "Y", "yes",
             "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "<<", "="}
_NUMBER = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$|^0b[01_]+$|^0x[0-9a-fA-F_]+$|"
                     r"^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$|^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$")
_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ]|$)")


def _ambiguous(s):
    """Would read back as another type: go-yaml double-quotes these."""
    return s in _RESERVED or bool(_NUMBER.match(s) or _TIMESTAMP.match(s))


def _unprintable(s):
    return any(ord(c) < 32 or ord(c) == 0x7F or 0x80 <= ord(c) < 0xA0 or c in "\ufeff\u2028\u2029" for c in s)


def _not_plain(s):
    """Cannot be written plain (YAML syntax): go-yaml single-quotes these."""
    return s[0] in _PLAIN_BAD_START or s[-1] in " \t:" or ": " in s or " #" in s or "\t" in s


def _quoted(s):
    return json.dumps(s, ensure_ascii=False)


WIDTH = 80    # go-yaml's best_width: plain and quoted scalars are folded at spaces past it


def _fold(text, col, indent, quoted):
    """Break `text` (starting at column col) at single spaces once the line is past
    WIDTH, continuing at `indent`, as go-yaml's emitter does."""
    out, column, spaces = [], col, False
    last = len(text) - 1
    for i, ch in enumerate(text):
        if ch == " ":
            nxt_space = i + 1 <= last and text[i + 1] == " "
            if quoted == "'":
                ok = i != 0 and i != last and not nxt_space
            elif quoted:
                ok = i != 0 and i != last
            else:
                ok = i + 1 <= last and not nxt_space
            if not spaces and column > WIDTH and ok:
                out.append("\n" + " " * indent)
                column = indent
                if quoted == '"' and nxt_space:
                    out.append("\\")
                    column += 1
                spaces = True
                continue
            spaces = True
        else:
            spaces = False
        out.append(ch)
        column += 1
    return "".join(out)


def _scalar(v, col=0, indent=0):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if _ambiguous(v) or _unprintable(v):
        return _fold(_quoted(v), col, indent, '"')
    if _not_plain(v):
        return _fold("'" + v.replace("'", "''") + "'", col, indent, "'")
    return _fold(v, col, indent, "")


def _block(s, indent):
    """A literal block for a multi-line string (|, |- or |+ as its end needs)."""
    chomp = "-" if not s.endswith("\n") else ("+" if s.endswith("\n\n") else "")
    head = "|" + ("2" if s[:1] == " " else "") + chomp
    body = s[:-1] if s.endswith("\n") else s
    pad = " " * indent
    return head + "\n" + "\n".join(pad + line if line else "" for line in body.split("\n"))


def _value(v, indent, col=0):
    """(text after 'key:' ending at column col, as inline ' x' or a newline-started block)."""
    if isinstance(v, dict):
        if not v:
            return " {}"
        return "\n" + _map(v, indent + 2)
    if isinstance(v, list):
        if not v:
            return " []"
        return "\n" + _list(v, indent)
    if isinstance(v, str) and "\n" in v and not any(ord(c) < 32 and c != "\n" for c in v):
        return " " + _block(v, indent + 2)
    return " " + _scalar(v, col + 1, indent + 2)


def _map(m, indent):
    pad = " " * indent
    out = []
    for k in sorted(m):
        key = _scalar(str(k))
        out.append(pad + key + ":" + _value(m[k], indent, indent + len(key) + 1))
    return "\n".join(out)


def _list(items, indent):
    pad = " " * indent
    out = []
    for it in items:
        if isinstance(it, dict) and it:
            inner = _map(it, indent + 2)
            out.append(pad + "- " + inner[indent + 2:])
        elif isinstance(it, list) and it:
            inner = _list(it, indent + 2)
            out.append(pad + "- " + inner[indent + 2:])
        else:
            out.append(pad + "-" + _value(it, indent, indent + 1))
    return "\n".join(out)


def dumps(obj):
    """YAML text (with a final newline) for a JSON-compatible object."""
    if isinstance(obj, dict):
        return (_map(obj, 0) if obj else "{}") + "\n"
    if isinstance(obj, list):
        return (_list(obj, 0) if obj else "[]") + "\n"
    return _scalar(obj) + "\n"
