"""Tests of the reward functions' own logic (`agentd_client.rewards`) that need no sandbox: how a
completion's text is found, unparseable outputs, rows without a payload, and the call to
`agentctl verify` (a stand-in program that records its arguments). `scripts/test-python-rewards`
checks the real thing against the daemon."""

import json
import os
import stat
import sys
import tempfile
import unittest

from agentd_client import rewards

PAYLOAD = json.dumps({"files": {"main.py": "print(1)\n"}, "language": "python",
                      "post": {"main.py": "logger.info(1)\n"}})
GOOD = ('<action>{"kind":"pattern","language":"python","pattern":"print($A)",'
        '"rewrite":"logger.info($A)"}</action>')


class RewardsTest(unittest.TestCase):
    def setUp(self):
        # A stand-in agentctl: echoes the payload's action and the --rewards it got.
        self.dir = tempfile.mkdtemp()
        self.agentctl = os.path.join(self.dir, "agentctl")
        with open(self.agentctl, "w") as f:
            f.write("#!%s\n" % sys.executable)
            f.write("import json, sys\n"
                    "payload = json.load(sys.stdin)\n"
                    "args = sys.argv[1:]\n"
                    "rewards = json.loads(args[args.index('--rewards') + 1]) if '--rewards' in args else None\n"
                    "if payload['action'].get('rewrite') == 'fail':\n"
                    "    sys.stderr.write('invalid astgrep.verify payload: nope'); sys.exit(2)\n"
                    "print(json.dumps({'reward': 0.75, 'components': {}, 'args': args,\n"
                    "                  'action': payload['action'], 'rewards': rewards}))\n")
        os.chmod(self.agentctl, stat.S_IRWXU)
        self.saved = os.environ.get("AGENTCTL")
        os.environ["AGENTCTL"] = self.agentctl

    def tearDown(self):
        if self.saved is None:
            os.environ.pop("AGENTCTL", None)
        else:
            os.environ["AGENTCTL"] = self.saved

    def test_the_parsed_action_and_the_settings_go_to_agentctl_verify(self):
        details = rewards.verify(GOOD, PAYLOAD, '{"combine": "weighted"}')
        self.assertEqual(details["action"]["rewrite"], "logger.info($A)")
        self.assertEqual(details["rewards"], {"combine": "weighted"})
        self.assertEqual(details["args"][:4], ["verify", "--payload", "-", "--json"])

    def test_unparseable_outputs_score_zero_without_a_sandbox_run(self):
        details = rewards.verify("Sure! Here you go.", PAYLOAD)
        self.assertEqual(details["reward"], 0.0)
        self.assertEqual(details["components"], {"format": 0.0})
        self.assertEqual(details["format_error"]["code"], "text_outside_tags")

    def test_trl_reward_takes_conversational_completions_and_skips_rows_without_payload(self):
        scores = rewards.trl_reward(
            prompts=[[{"role": "user", "content": "x"}]] * 3,
            completions=[[{"role": "assistant", "content": GOOD}], "nonsense", GOOD],
            verify_payload=[PAYLOAD, PAYLOAD, None],
            reward_settings=[None, None, None],
        )
        self.assertEqual(scores, [0.75, 0.0, None])

    def test_compute_score_reads_extra_info(self):
        extra = {"verify_payload": PAYLOAD, "reward_settings": None}
        self.assertEqual(rewards.compute_score("src", GOOD, "post", extra), 0.75)
        self.assertEqual(rewards.compute_score("src", GOOD, "post", {}), 0.0)

    def test_no_verdict_raises(self):
        failing = GOOD.replace("logger.info($A)", "fail")
        with self.assertRaises(rewards.VerifyError) as raised:
            rewards.verify(failing, PAYLOAD)
        self.assertIn("exited 2", str(raised.exception))
        with self.assertRaises(rewards.VerifyError):
            rewards.verify(GOOD, None)

    def test_completion_text(self):
        self.assertEqual(rewards.completion_text("a"), "a")
        self.assertEqual(rewards.completion_text([{"role": "assistant", "content": "b"}]), "b")
        with self.assertRaises(TypeError):
            rewards.completion_text(3)


if __name__ == "__main__":
    unittest.main()
