"""Tests of the actor output parser (`agentd_client.output_format`, docs/output-format.md).

They need no daemon: the shared cases of docs/output-format-cases.json (also run by the
daemon's Rust parser), then checks of the limits, the types and the order of the errors."""

import json
import os
import unittest

import agentd_client
from agentd_client.output_format import OutputFormatError, ParsedOutput, parse, render

CASES_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "docs", "output-format-cases.json"
)

RULE = {"kind": "rule", "yaml": "rule:\n  pattern: a"}
RULE_BLOCK = '<action>{"kind":"rule","yaml":"rule:\\n  pattern: a"}</action>'


def case_input(case):
    """A case's output text: `output`, `output_repeat` ({text, times}) or `output_parts` (each a
    string or {text, times}, joined without separator)."""
    if "output" in case:
        return case["output"]
    if "output_repeat" in case:
        return case["output_repeat"]["text"] * case["output_repeat"]["times"]
    parts = []
    for part in case["output_parts"]:
        if isinstance(part, str):
            parts.append(part)
        else:
            parts.append(part["text"] * part["times"])
    return "".join(parts)


def error_code(text):
    try:
        parse(text)
    except OutputFormatError as error:
        return error.code
    return None


def action_block(action):
    return "<action>" + json.dumps(action, ensure_ascii=False) + "</action>"


def update_block(update):
    return RULE_BLOCK + "<state_update>" + json.dumps(update, ensure_ascii=False) + "</state_update>"


class SharedCasesTest(unittest.TestCase):
    """Every case of docs/output-format-cases.json."""

    @classmethod
    def setUpClass(cls):
        with open(CASES_PATH, encoding="utf-8") as file:
            cls.cases = json.load(file)["cases"]

    def test_the_file_has_cases_of_both_kinds(self):
        self.assertGreater(sum("expect" in case for case in self.cases), 5)
        self.assertGreater(sum("error" in case for case in self.cases), 5)
        names = [case["name"] for case in self.cases]
        self.assertEqual(len(names), len(set(names)), "case names are unique")

    def test_cases(self):
        for case in self.cases:
            with self.subTest(case["name"]):
                self.assertTrue(("expect" in case) != ("error" in case), "expect or error, not both")
                text = case_input(case)
                if "error" in case:
                    self.assertIn(case["error"], agentd_client.output_format.ERROR_CODES)
                    with self.assertRaises(OutputFormatError) as caught:
                        parse(text)
                    self.assertEqual(caught.exception.code, case["error"], caught.exception.message)
                    continue
                expect = case["expect"]
                parsed = parse(text)
                self.assertIsInstance(parsed, ParsedOutput)
                self.assertEqual(parsed.think, expect["think"])
                self.assertEqual(parsed.action, expect["action"])
                self.assertEqual(list(parsed.action), list(expect["action"]), "canonical key order")
                self.assertEqual(parsed.state_update, expect["state_update"])
                canonical = expect["canonical"]
                self.assertEqual(render(parsed), canonical)
                reparsed = parse(canonical)
                self.assertEqual(reparsed, parsed)
                self.assertEqual(render(reparsed), canonical)
                # The expectation itself renders to the canonical text.
                self.assertEqual(render(expect), canonical)


class EnvelopeTest(unittest.TestCase):
    def test_whitespace_between_and_around_blocks(self):
        parsed = parse("\n\t <think> a </think>\r\n" + RULE_BLOCK + " \u3000\n")
        self.assertEqual(parsed, ParsedOutput("a", RULE, None))

    def test_whitespace_is_unicode_white_space_not_python_isspace(self):
        # U+001C..U+001F are str.isspace() in Python but not White_Space (Rust's trim).
        self.assertEqual(error_code("\x1c" + RULE_BLOCK), "text_outside_tags")
        self.assertEqual(error_code("\xa0\u2028" + RULE_BLOCK + "\u2029"), None)
        self.assertEqual(error_code("\x1c\x1d"), "text_outside_tags")
        self.assertEqual(error_code("\u2003\n"), "empty")

    def test_tags_with_attributes_or_spaces_are_text(self):
        self.assertEqual(error_code('<think id="1">x</think>' + RULE_BLOCK), "text_outside_tags")
        self.assertEqual(error_code("< action>{}</action>"), "text_outside_tags")
        self.assertEqual(error_code("</think>" + RULE_BLOCK), "text_outside_tags")
        # A closing tag with a space is not the closing tag: the think is unclosed.
        self.assertEqual(error_code("<think>x</think >" + RULE_BLOCK), "unclosed_tag")

    def test_text_between_blocks(self):
        self.assertEqual(error_code("<think>x</think> so: " + RULE_BLOCK), "text_outside_tags")

    def test_empty_think_is_a_think(self):
        parsed = parse("<think>  </think>" + RULE_BLOCK)
        self.assertEqual(parsed.think, "")
        self.assertEqual(render(parsed), "<think>\n\n</think>\n" + render(parsed._replace(think=None)))
        self.assertEqual(parse(render(parsed)), parsed)

    def test_think_keeps_inner_whitespace(self):
        self.assertEqual(parse("<think>\n a\n\n b \n</think>" + RULE_BLOCK).think, "a\n\n b")

    def test_unclosed_state_update_followed_by_text_is_its_content(self):
        self.assertEqual(error_code(RULE_BLOCK + '<state_update>{"goals":["g"]} bye'), "invalid_state_update")

    def test_stop_string_missing_with_trailing_whitespace(self):
        parsed = parse(RULE_BLOCK + '<state_update>\n{"goals":["g"]}\n\n')
        self.assertEqual(parsed.state_update, {"goals": ["g"]})

    def test_not_a_str(self):
        with self.assertRaises(TypeError):
            parse(b"<action></action>")


class SizeTest(unittest.TestCase):
    def test_text_limit_is_262144_utf8_bytes_of_the_text_as_given(self):
        # Surrounding whitespace counts: pad to exactly the limit, then one byte over.
        at_limit = RULE_BLOCK + " " * (262144 - len(RULE_BLOCK))
        self.assertEqual(error_code(at_limit), None)
        self.assertEqual(error_code(at_limit + " "), "too_large")
        # Bytes, not characters: 2-byte characters (131,000 characters, 262,000 bytes).
        update = '<state_update>{"history":["' + "é" * 131000 + '"]}</state_update>'
        self.assertEqual(error_code(RULE_BLOCK + update), "invalid_state_update")
        update = '<state_update>{"history":["' + "é" * 131100 + '"]}</state_update>'
        self.assertEqual(error_code(RULE_BLOCK + update), "too_large")

    def test_think_limit_is_65536_utf8_bytes_of_the_stripped_content(self):
        self.assertEqual(error_code("<think>" + "y" * 65536 + "</think>" + RULE_BLOCK), None)
        self.assertEqual(error_code("<think>\n" + "y" * 65536 + "\n</think>" + RULE_BLOCK), None)
        self.assertEqual(error_code("<think>" + "é" * 32769 + "</think>" + RULE_BLOCK), "too_large")

    def test_empty_comes_before_too_large(self):
        self.assertEqual(error_code(" " * 300000), "empty")


class OrderOfErrorsTest(unittest.TestCase):
    """When a text breaks several rules, the one first in the spec's table is reported (the
    think's size once the envelope is read)."""

    def test_text_outside_tags_before_duplicate_and_order(self):
        self.assertEqual(error_code(RULE_BLOCK + RULE_BLOCK + " trailing"), "text_outside_tags")
        self.assertEqual(error_code(RULE_BLOCK + "<think>x</think> trailing"), "text_outside_tags")

    def test_text_outside_tags_before_unclosed_think(self):
        self.assertEqual(error_code("hi <think>never closed"), "text_outside_tags")

    def test_duplicate_before_out_of_order(self):
        self.assertEqual(error_code(RULE_BLOCK + "<think>x</think>" + RULE_BLOCK), "duplicate_tag")

    def test_out_of_order_before_missing_action(self):
        self.assertEqual(error_code("<state_update>{}</state_update><think>x</think>"), "out_of_order")

    def test_think_size_before_structure_and_action(self):
        big = "<think>" + "y" * 65537 + "</think>"
        self.assertEqual(error_code(big), "too_large")
        self.assertEqual(error_code(big + RULE_BLOCK + RULE_BLOCK), "too_large")
        self.assertEqual(error_code(big + "<action>not json</action>"), "too_large")

    def test_envelope_before_think_size(self):
        big = "<think>" + "y" * 65537 + "</think>"
        self.assertEqual(error_code(big + RULE_BLOCK + " trailing"), "text_outside_tags")

    def test_action_before_state_update(self):
        self.assertEqual(error_code("<action>x</action><state_update>y</state_update>"), "invalid_action")


class ActionTest(unittest.TestCase):
    def test_canonical_key_order(self):
        parsed = parse(action_block({"rewrite": "", "kind": "pattern", "pattern": "p", "language": "go"}))
        self.assertEqual(list(parsed.action), ["kind", "language", "pattern", "rewrite"])
        self.assertEqual(list(parse(action_block({"yaml": "rule: {}", "kind": "rule"})).action), ["kind", "yaml"])

    def test_wrong_types_and_fields(self):
        pattern = {"kind": "pattern", "language": "python", "pattern": "p", "rewrite": "r"}
        for action in [
            {},
            {"yaml": "rule: x"},
            {"kind": None, "yaml": "rule: x"},
            {"kind": "Rule", "yaml": "rule: x"},
            {"kind": ["rule"], "yaml": "rule: x"},
            {"kind": "rule"},
            {"kind": "rule", "yaml": None},
            {"kind": "rule", "yaml": ["rule: x"]},
            {"kind": "rule", "yaml": "rule: x", "language": "python"},
            dict(pattern, rewrite=None),
            dict(pattern, language=1),
            dict(pattern, pattern=True),
            {key: value for key, value in pattern.items() if key != "rewrite"},
            dict(pattern, yaml="rule: x"),
            "rule: x",
            None,
        ]:
            with self.subTest(action=action):
                self.assertEqual(error_code(action_block(action)), "invalid_action")

    def test_blank_values(self):
        for field in ("language", "pattern"):
            action = {"kind": "pattern", "language": "python", "pattern": "p", "rewrite": "r"}
            action[field] = " \n\u3000"
            self.assertEqual(error_code(action_block(action)), "invalid_action", field)
        self.assertEqual(error_code(action_block({"kind": "rule", "yaml": "\n\n"})), "invalid_action")
        # An empty rewrite is a deletion.
        parsed = parse(action_block({"kind": "pattern", "language": "python", "pattern": "p", "rewrite": ""}))
        self.assertEqual(parsed.action["rewrite"], "")

    def test_language_at_most_128_characters(self):
        action = {"kind": "pattern", "language": "é" * 128, "pattern": "p", "rewrite": "r"}
        self.assertEqual(error_code(action_block(action)), None)
        action["language"] = "l" * 129
        self.assertEqual(error_code(action_block(action)), "invalid_action")

    def test_texts_at_most_65536_utf8_bytes(self):
        for field in ("pattern", "rewrite"):
            action = {"kind": "pattern", "language": "python", "pattern": "p", "rewrite": "r"}
            action[field] = "p" * 65536
            self.assertEqual(error_code(action_block(action)), None, field)
            action[field] = "é" * 32768 + "p"
            self.assertEqual(error_code(action_block(action)), "invalid_action", field)
        yaml = "rule:\n  pattern: a\n#"
        self.assertEqual(error_code(action_block({"kind": "rule", "yaml": yaml + "x" * (65536 - len(yaml))})), None)
        self.assertEqual(
            error_code(action_block({"kind": "rule", "yaml": yaml + "x" * (65537 - len(yaml))})), "invalid_action"
        )

    def test_rule_key_and_tabs(self):
        ok = [
            "rule:\n  pattern: a",
            "id: x\nrule: {pattern: a}",
            "rule:\r\n  pattern: a\r\n",
            "rule:\n  pattern: a\nfix: |\n  if x {\n  \treturn\n  }",  # a tab inside a block scalar
        ]
        bad = [
            " rule:\n  pattern: a",  # not top level
            "rules:\n  pattern: a",
            "# rule: in a comment\nid: x",
            "rule:\n\tpattern: a",
            "\trule:\n  pattern: a",
            "rule:\n  pattern: a\n\t",
        ]
        for yaml in ok:
            self.assertEqual(error_code(action_block({"kind": "rule", "yaml": yaml})), None, yaml)
        for yaml in bad:
            self.assertEqual(error_code(action_block({"kind": "rule", "yaml": yaml})), "invalid_action", yaml)

    def test_arrays_and_duplicate_keys_are_refused(self):
        for content in [
            '["rule","rule:\\n  pattern: a"]',
            '["pattern","python","p","r"]',
            '{"kind":"rule","yaml":"rule: a","yaml":"rule: b"}',
            '{"kind":"rule","kind":"rule","yaml":"rule: a"}',
            '{"kind":1,"yaml":"rule: a"}',
        ]:
            with self.subTest(content=content):
                self.assertEqual(error_code("<action>" + content + "</action>"), "invalid_action")
        for content in ["[]", '[["g"]]', '{"goals":["a"],"goals":["b"]}',
                        '{"forget":{"retract":["a"],"retract":["b"]}}', '{"forget":[]}',
                        '{"forget":{"remove":[]}}']:
            with self.subTest(content=content):
                self.assertEqual(error_code(RULE_BLOCK + "<state_update>" + content + "</state_update>"),
                                 "invalid_state_update")

    def test_json_edge_cases(self):
        self.assertEqual(error_code('<action>{"kind":"rule","yaml":"rule: \\ud800"}</action>'), "invalid_action")
        self.assertEqual(error_code("<action>" + "[" * 100000 + "</action>"), "invalid_action")
        self.assertEqual(error_code('<action>{"kind":"rule","yaml":"rule: a"} {}</action>'), "invalid_action")
        self.assertEqual(error_code('<action>{"kind":"rule","yaml":"rule:\n a"}</action>'), "invalid_action")
        # A surrogate pair escape is one character.
        parsed = parse('<action>{"kind":"rule","yaml":"rule: \\ud83d\\ude80"}</action>')
        self.assertEqual(parsed.action["yaml"], "rule: \U0001f680")


class StateUpdateTest(unittest.TestCase):
    def test_fields_and_types(self):
        for update in [
            [],
            "goals",
            {"goals": "g"},
            {"goals": [True]},
            {"goals": [None]},
            {"goals": [["g"]]},
            {"goals": None},
            {"history": [1]},
            {"next_focus": 1},
            {"next_focus": ["f"]},
            {"lease_id": "ls_1"},
            {"forget": []},
            {"forget": {"remove": []}},
            {"forget": {"remove": {"next_focus": ["f"]}}},
            {"forget": {"remove": {"goals": "g"}}},
            {"forget": {"resolve": "i"}},
            {"forget": {"retract": None}},
            {"forget": {"clear_next_focus": 1}},
            {"forget": {"clear_next_focus": None}},
            {"forget": {"clear_next_focus": "true"}},
            {"forget": {"clear": True}},
        ]:
            with self.subTest(update=update):
                self.assertEqual(error_code(update_block(update)), "invalid_state_update")

    def test_null_optional_fields_are_absent(self):
        parsed = parse(update_block({"next_focus": None, "forget": None}))
        self.assertEqual(parsed.state_update, {})
        parsed = parse(update_block({"forget": {"remove": None, "retract": ["h"]}}))
        self.assertEqual(parsed.state_update, {"forget": {"retract": ["h"]}})

    def test_empty_fields_are_dropped(self):
        update = {
            "goals": [],
            "history": ["h"],
            "next_focus": "",
            "forget": {"remove": {"goals": [], "open_issues": ["o"], "constraints": ["c"]},
                       "resolve": [], "clear_next_focus": False},
        }
        parsed = parse(update_block(update))
        expect = {"history": ["h"], "forget": {"remove": {"constraints": ["c"], "open_issues": ["o"]}}}
        self.assertEqual(parsed.state_update, expect)
        self.assertEqual(list(parsed.state_update["forget"]["remove"]), ["constraints", "open_issues"])
        self.assertTrue(render(parsed).endswith(
            '<state_update>\n{"history":["h"],"forget":{"remove":{"constraints":["c"],"open_issues":["o"]}}}'
            "\n</state_update>"))
        nothing = parse(update_block({"goals": [], "forget": {"remove": {}, "clear_next_focus": False}}))
        self.assertEqual(nothing.state_update, {})
        self.assertTrue(render(nothing).endswith("<state_update>\n{}\n</state_update>"))

    def test_items_are_kept_as_written(self):
        parsed = parse(update_block({"goals": ["  g  ", "", "g"], "next_focus": " "}))
        self.assertEqual(parsed.state_update, {"goals": ["  g  ", "", "g"], "next_focus": " "})

    def test_limits(self):
        lists = [("goals",), ("history",), ("forget", "remove", "decisions"), ("forget", "resolve"),
                 ("forget", "retract")]
        for path in lists:
            for items, code in [
                (["i"] * 64, None),
                (["i"] * 65, "invalid_state_update"),
                (["é" * 2048], None),
                (["é" * 2048 + "x"], "invalid_state_update"),
            ]:
                update = items
                for key in reversed(path):
                    update = {key: update}
                with self.subTest(path=path, items=len(items), size=len(items[0])):
                    self.assertEqual(error_code(update_block(update)), code)
        self.assertEqual(error_code(update_block({"next_focus": "f" * 4096})), None)
        self.assertEqual(error_code(update_block({"next_focus": "f" * 4097})), "invalid_state_update")


class RenderTest(unittest.TestCase):
    def test_escapes_only_what_json_requires(self):
        think = "a\u2028b \u00e9 \U0001f680 </action>"
        action = {"kind": "pattern", "language": "c", "pattern": 'x"\\\n\t\x01\x7f/', "rewrite": "é"}
        text = render(ParsedOutput(think, action, {"goals": ["<g>"]}))
        self.assertEqual(
            text,
            "<think>\na\u2028b \u00e9 \U0001f680 </action>\n</think>\n<action>\n"
            '{"kind":"pattern","language":"c","pattern":"x\\"\\\\\\n\\t\\u0001\x7f/","rewrite":"é"}\n'
            '</action>\n<state_update>\n{"goals":["<g>"]}\n</state_update>',
        )
        self.assertEqual(render(parse(text)), text)

    def test_hand_built_values_are_checked_and_ordered(self):
        text = render({"think": "  t\n", "action": {"yaml": "rule: a", "kind": "rule"},
                       "state_update": {"forget": {"retract": ["h"]}, "goals": ["g"]}})
        self.assertEqual(
            text,
            '<think>\nt\n</think>\n<action>\n{"kind":"rule","yaml":"rule: a"}\n</action>\n'
            '<state_update>\n{"goals":["g"],"forget":{"retract":["h"]}}\n</state_update>',
        )
        with self.assertRaises(OutputFormatError) as caught:
            render(ParsedOutput(None, {"kind": "sed"}, None))
        self.assertEqual(caught.exception.code, "invalid_action")
        with self.assertRaises(OutputFormatError) as caught:
            render(ParsedOutput(None, RULE, {"goals": [1]}))
        self.assertEqual(caught.exception.code, "invalid_state_update")


class ErrorTest(unittest.TestCase):
    def test_error_carries_code_and_message(self):
        with self.assertRaises(OutputFormatError) as caught:
            parse("Sure! " + RULE_BLOCK)
        error = caught.exception
        self.assertEqual(error.code, "text_outside_tags")
        self.assertIn("Sure!", error.message)
        self.assertEqual(str(error), "text_outside_tags: " + error.message)
        self.assertIsInstance(error, ValueError)

    def test_package_exports(self):
        self.assertIs(agentd_client.parse_output, parse)
        self.assertIs(agentd_client.render_output, render)
        self.assertIs(agentd_client.OutputFormatError, OutputFormatError)
        self.assertIs(agentd_client.ParsedOutput, ParsedOutput)
        for name in agentd_client.__all__:
            self.assertTrue(hasattr(agentd_client, name), name)


if __name__ == "__main__":
    unittest.main()
