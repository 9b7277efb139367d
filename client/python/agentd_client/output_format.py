"""The actor's output format, `<think>/<action>/<state_update>` (docs/output-format.md).

    from agentd_client.output_format import OutputFormatError, parse, render

    try:
        parsed = parse(completion_text)       # ParsedOutput(think, action, state_update)
    except OutputFormatError as error:
        error.code                            # "text_outside_tags", "invalid_action", ...
    render(parsed)                            # the canonical text (what the SFT view trains)

The daemon has the same parser (`daemon/src/domain/output_format.rs`); both run the cases of
`docs/output-format-cases.json`. Standard library only, Python 3.8+.

Checks, in this order (the first one broken is reported):

1. `empty`: nothing but whitespace.
2. `too_large`: the text is over 256 KiB (UTF-8 bytes of the text as given).
3. The envelope, read left to right: `text_outside_tags` (anything but whitespace outside the
   blocks, an unknown or upper-case tag included) or `unclosed_tag` (a `<think>` without
   `</think>`; an `action` or `state_update` without its closing tag runs to the end).
4. `too_large`: a think over 64 KiB (UTF-8 bytes of its content, surrounding whitespace removed).
5. `duplicate_tag` (over all blocks), then `out_of_order`, then `missing_action`.
6. `invalid_action`, then `invalid_state_update`. The JSON must be an object (an array is not
   one), with no key twice, no unknown field and the right types.

Whitespace is Unicode's White_Space (what Rust's `str::trim` removes), not Python's
`str.isspace`, which also counts U+001C..U+001F.
"""

import collections
import json
import re

__all__ = [
    "ACTION_TEXT_BYTES_MAX",
    "ERROR_CODES",
    "LANGUAGE_CHARS_MAX",
    "OutputFormatError",
    "ParsedOutput",
    "STATE_ITEMS_MAX",
    "STATE_ITEM_BYTES_MAX",
    "TEXT_BYTES_MAX",
    "THINK_BYTES_MAX",
    "parse",
    "render",
]

TEXT_BYTES_MAX = 256 * 1024
THINK_BYTES_MAX = 64 * 1024
ACTION_TEXT_BYTES_MAX = 64 * 1024
LANGUAGE_CHARS_MAX = 128
STATE_ITEMS_MAX = 64
STATE_ITEM_BYTES_MAX = 4 * 1024

ERROR_CODES = (
    "empty",
    "too_large",
    "text_outside_tags",
    "unclosed_tag",
    "duplicate_tag",
    "out_of_order",
    "missing_action",
    "invalid_action",
    "invalid_state_update",
)

# Unicode White_Space, the set Rust's `char::is_whitespace` (and so `str::trim`) uses.
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE_RUN = re.compile("[" + re.escape(_WHITESPACE) + "]*")
_SURROGATE = re.compile("[\ud800-\udfff]")

_BLOCKS = ("think", "action", "state_update")  # also their required order
_PATTERN_FIELDS = ("kind", "language", "pattern", "rewrite")
_RULE_FIELDS = ("kind", "yaml")
_LIST_FIELDS = ("goals", "constraints", "decisions", "hypotheses", "history", "open_issues")
_UPDATE_FIELDS = _LIST_FIELDS + ("next_focus", "forget")
_FORGET_FIELDS = ("remove", "resolve", "retract", "clear_next_focus")


class OutputFormatError(ValueError):
    """The output breaks the format: `code` is one of `ERROR_CODES`, `message` says what."""

    def __init__(self, code, message):
        super().__init__("{}: {}".format(code, message))
        self.code = code
        self.message = message


class ParsedOutput(collections.namedtuple("ParsedOutput", ["think", "action", "state_update"])):
    """A parsed output.

    `think`: the think's text (surrounding whitespace removed), or None without a think block.
    `action`: `{"kind":"pattern","language","pattern","rewrite"}` or `{"kind":"rule","yaml"}`,
    keys in that order. `state_update`: None without a `<state_update>` block, else a dict of
    the update's non-empty fields in the order `goals`, `constraints`, `decisions`,
    `hypotheses`, `history`, `open_issues`, `next_focus`, `forget` (`forget`: `remove` with its
    non-empty lists, `resolve`, `retract`, `clear_next_focus` only when true); `{}` for an update
    with nothing in it.
    """

    __slots__ = ()


def parse(text):
    """Parses one output text; raises `OutputFormatError` when it breaks the format."""
    if not isinstance(text, str):
        raise TypeError("parse() takes a str, not {}".format(type(text).__name__))
    if not _strip(text):
        raise OutputFormatError("empty", "the output is empty (nothing but whitespace)")
    size = _utf8_len(text)
    if size > TEXT_BYTES_MAX:
        raise OutputFormatError(
            "too_large",
            "the output is {} bytes, over the limit of {} bytes".format(size, TEXT_BYTES_MAX),
        )
    blocks = _scan(text)
    for name, content in blocks:
        if name == "think":
            size = _utf8_len(content)
            if size > THINK_BYTES_MAX:
                raise OutputFormatError(
                    "too_large",
                    "the think is {} bytes, over the limit of {} bytes".format(size, THINK_BYTES_MAX),
                )
    seen = set()
    for name, _ in blocks:
        if name in seen:
            raise OutputFormatError("duplicate_tag", "<{}> appears more than once".format(name))
        seen.add(name)
    for (before, _), (after, _) in zip(blocks, blocks[1:]):
        if _BLOCKS.index(after) < _BLOCKS.index(before):
            raise OutputFormatError(
                "out_of_order",
                "<{}> comes after <{}>; the order is think, action, state_update".format(after, before),
            )
    found = dict(blocks)
    if "action" not in found:
        raise OutputFormatError("missing_action", "there is no <action> block")
    action = _check_action(_decode(found["action"], "invalid_action", "the action"))
    state_update = None
    if "state_update" in found:
        state_update = _check_update(
            _decode(found["state_update"], "invalid_state_update", "the state update")
        )
    return ParsedOutput(found.get("think"), action, state_update)


def render(parsed):
    """The canonical text of a parsed output (a `ParsedOutput`, or a mapping with `think`,
    `action` and `state_update`): each block on its own lines, `<think>` only with a think,
    `<state_update>` only with an update, JSON compact with its keys in canonical order.

    The action and the update are checked as `parse` checks them (`OutputFormatError`), so a
    hand-built value renders only if it is valid.
    """
    if isinstance(parsed, dict):
        think = parsed.get("think")
        action = parsed.get("action")
        state_update = parsed.get("state_update")
    else:
        think, action, state_update = parsed.think, parsed.action, parsed.state_update
    lines = []
    if think is not None:
        if not isinstance(think, str):
            raise TypeError("think must be a str or None")
        think = _strip(think)
        size = _utf8_len(think)
        if size > THINK_BYTES_MAX:
            raise OutputFormatError(
                "too_large",
                "the think is {} bytes, over the limit of {} bytes".format(size, THINK_BYTES_MAX),
            )
        lines += ["<think>", think, "</think>"]
    lines += ["<action>", _json(_check_action(action)), "</action>"]
    if state_update is not None:
        lines += ["<state_update>", _json(_check_update(state_update)), "</state_update>"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The envelope


def _scan(text):
    """The blocks as (name, content) in text order, content stripped; raises the envelope's
    errors (`text_outside_tags`, `unclosed_tag`) at the first place the text breaks it."""
    blocks = []
    position = 0
    end = len(text)
    while True:
        position = _WHITESPACE_RUN.match(text, position).end()
        if position >= end:
            return blocks
        for name in _BLOCKS:
            opening = "<" + name + ">"
            if text.startswith(opening, position):
                break
        else:
            raise OutputFormatError(
                "text_outside_tags",
                "text outside the blocks at character {}: {}".format(
                    position, _excerpt(text, position)
                ),
            )
        start = position + len(opening)
        closing = "</" + name + ">"
        close = text.find(closing, start)
        if close < 0:
            if name == "think":
                raise OutputFormatError(
                    "unclosed_tag", "<think> at character {} has no </think>".format(position)
                )
            # The stop string was removed: the block runs to the end of the text.
            blocks.append((name, _strip(text[start:])))
            return blocks
        blocks.append((name, _strip(text[start:close])))
        position = close + len(closing)


def _excerpt(text, position, chars=40):
    piece = text[position : position + chars]
    return repr(piece) + ("..." if position + chars < len(text) else "")


# ---------------------------------------------------------------------------------------------
# The action and the state update


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    # An object naming a key twice is refused, as the daemon's parser (serde) refuses it.
    value = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def _decode(content, code, what):
    try:
        value = json.loads(content, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as error:
        raise OutputFormatError(code, "{} names the key {!r} twice".format(what, error.args[0]))
    except ValueError as error:  # json.JSONDecodeError
        raise OutputFormatError(code, "{} is not JSON: {}".format(what, error))
    except RecursionError:
        raise OutputFormatError(code, "{} is not JSON: nested too deep".format(what))
    return value


def _check_action(value):
    """The action in canonical key order, or `invalid_action`."""

    def fail(message):
        raise OutputFormatError("invalid_action", message)

    if not isinstance(value, dict):
        fail("the action must be a JSON object, not {}".format(_json_type(value)))
    if "kind" not in value:
        fail("the action has no kind")
    kind = value["kind"]
    if kind == "pattern" and isinstance(kind, str):
        fields = _PATTERN_FIELDS
    elif kind == "rule" and isinstance(kind, str):
        fields = _RULE_FIELDS
    else:
        fail('action.kind must be "pattern" or "rule", not {}'.format(_short_json(kind)))
    unknown = [key for key in value if key not in fields]
    if unknown:
        fail("a {} action has no field {}".format(kind, ", ".join(map(repr, unknown))))
    for field in fields[1:]:
        if field not in value:
            fail("a {} action needs {}".format(kind, field))
        if not isinstance(value[field], str):
            fail("action.{} must be a string, not {}".format(field, _json_type(value[field])))
        _check_no_surrogate(value[field], "action." + field, fail)
    if kind == "pattern":
        language, pattern, rewrite = value["language"], value["pattern"], value["rewrite"]
        if not _strip(language):
            fail("action.language must not be blank")
        if len(language) > LANGUAGE_CHARS_MAX:
            fail("action.language must be at most {} characters".format(LANGUAGE_CHARS_MAX))
        if not _strip(pattern):
            fail("action.pattern must not be blank")
        _check_bytes("action.pattern", pattern, ACTION_TEXT_BYTES_MAX, fail)
        _check_bytes("action.rewrite", rewrite, ACTION_TEXT_BYTES_MAX, fail)
    else:
        yaml = value["yaml"]
        if not _strip(yaml):
            fail("action.yaml must not be blank")
        _check_bytes("action.yaml", yaml, ACTION_TEXT_BYTES_MAX, fail)
        lines = yaml.split("\n")
        if not any(line.startswith("rule:") for line in lines):
            fail("action.yaml has no top-level rule: key (a line starting with 'rule:')")
        for number, line in enumerate(lines, 1):
            if line.startswith("\t"):
                fail("action.yaml line {} is indented with a tab (YAML forbids tabs)".format(number))
    return {field: value[field] for field in fields}


def _check_update(value):
    """The update's non-empty fields in canonical order, or `invalid_state_update`."""

    def fail(message):
        raise OutputFormatError("invalid_state_update", message)

    if not isinstance(value, dict):
        fail("the state update must be a JSON object, not {}".format(_json_type(value)))
    _check_known(value, _UPDATE_FIELDS, "the state update", fail)
    update = {}
    for field in _LIST_FIELDS:
        if field in value:
            items = _check_items("state_update." + field, value[field], fail)
            if items:
                update[field] = items
    focus = value.get("next_focus")
    if focus is not None:
        if not isinstance(focus, str):
            fail("state_update.next_focus must be a string, not {}".format(_json_type(focus)))
        _check_no_surrogate(focus, "state_update.next_focus", fail)
        _check_bytes("state_update.next_focus", focus, STATE_ITEM_BYTES_MAX, fail)
        if focus:
            update["next_focus"] = focus
    forget = value.get("forget")
    if forget is not None:
        if not isinstance(forget, dict):
            fail("state_update.forget must be an object, not {}".format(_json_type(forget)))
        _check_known(forget, _FORGET_FIELDS, "state_update.forget", fail)
        checked = {}
        remove = forget.get("remove")
        if remove is not None:
            if not isinstance(remove, dict):
                fail("state_update.forget.remove must be an object, not {}".format(_json_type(remove)))
            _check_known(remove, _LIST_FIELDS, "state_update.forget.remove", fail)
            lists = {}
            for field in _LIST_FIELDS:
                if field in remove:
                    items = _check_items("state_update.forget.remove." + field, remove[field], fail)
                    if items:
                        lists[field] = items
            if lists:
                checked["remove"] = lists
        for field in ("resolve", "retract"):
            if field in forget:
                items = _check_items("state_update.forget." + field, forget[field], fail)
                if items:
                    checked[field] = items
        if "clear_next_focus" in forget:
            clear = forget["clear_next_focus"]
            if not isinstance(clear, bool):
                fail("state_update.forget.clear_next_focus must be true or false, not {}".format(
                    _json_type(clear)))
            if clear:
                checked["clear_next_focus"] = True
        if checked:
            update["forget"] = checked
    return update


def _check_known(value, fields, what, fail):
    unknown = [key for key in value if key not in fields]
    if unknown:
        fail("{} has no field {} (fields: {})".format(
            what, ", ".join(map(repr, unknown)), ", ".join(fields)))


def _check_items(field, items, fail):
    if not isinstance(items, list):
        fail("{} must be an array of strings, not {}".format(field, _json_type(items)))
    if len(items) > STATE_ITEMS_MAX:
        fail("{}: {} items is over the limit of {}".format(field, len(items), STATE_ITEMS_MAX))
    for position, item in enumerate(items):
        where = "{}[{}]".format(field, position)
        if not isinstance(item, str):
            fail("{} must be a string, not {}".format(where, _json_type(item)))
        _check_no_surrogate(item, where, fail)
        _check_bytes(where, item, STATE_ITEM_BYTES_MAX, fail)
    return list(items)


def _check_bytes(field, value, bytes_max, fail):
    size = _utf8_len(value)
    if size > bytes_max:
        fail("{}: {} bytes is over the limit of {} bytes".format(field, size, bytes_max))


def _check_no_surrogate(value, field, fail):
    # A lone surrogate (`"\ud800"`) is not text; the daemon's JSON parser refuses it.
    if _SURROGATE.search(value):
        fail("{} holds a lone UTF-16 surrogate".format(field))


# ---------------------------------------------------------------------------------------------
# Helpers


def _strip(text):
    return text.strip(_WHITESPACE)


def _utf8_len(text):
    return len(text.encode("utf-8", "surrogatepass"))


def _json(value):
    # `</` is written `<\/` (the same JSON text), so a value holding a closing tag cannot close
    # its block: a rendering always parses back.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short_json(value):
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."
