"""Tests of `agentd_client.gpu` against the recorded and constructed nvidia-smi answers the Rust
implementation is tested on (`client/tests/fixtures/nvidia-smi/`, whose `cases.json` says what
each must read as), so the two follow the same rules. No daemon and no GPU needed: discovery
runs a stand-in nvidia-smi script."""

import json
import os
import stat
import tempfile
import unittest

from agentd_client import gpu

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                        "nvidia-smi")


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8", newline="") as answer:
        return answer.read()


CASES = json.loads(fixture("cases.json"))


def as_dicts(gpus):
    return [gpu_info._asdict() for gpu_info in gpus]


class SharedCasesTest(unittest.TestCase):
    def test_recorded_answers_read_as_the_shared_cases_say(self):
        for name, expected in CASES["answers"].items():
            with self.subTest(answer=name):
                if "error" in expected:
                    with self.assertRaises(gpu.GpuError) as raised:
                        gpu.parse_query_gpu(fixture(name))
                    self.assertEqual(raised.exception.kind, "parse")
                    self.assertIn(expected["error"], str(raised.exception))
                    continue
                gpus = gpu.parse_query_gpu(fixture(name))
                self.assertEqual(as_dicts(gpus), expected["gpus"])
                if "tags" in expected:
                    self.assertEqual(gpu.auto_tags(gpus), expected["tags"])
                else:
                    with self.assertRaises(gpu.GpuError) as raised:
                        gpu.auto_tags(gpus)
                    self.assertIn(expected["tags_error"], str(raised.exception))

    def test_refused_answers_name_what_is_wrong(self):
        for text, expected in CASES["refused_answers"]:
            with self.subTest(text=text):
                with self.assertRaises(gpu.GpuError) as raised:
                    gpu.parse_query_gpu(text)
                self.assertIn(expected, str(raised.exception))

    def test_model_names_shorten_to_the_shared_tags(self):
        for name, tag in CASES["model_tags"]:
            self.assertEqual(gpu.model_tag(name), tag, name)

    def test_memory_rounds_to_the_nearest_gib(self):
        for mib, gib in CASES["memory_gib"]:
            self.assertEqual(gpu.memory_gib(mib), gib, mib)

    def test_selections_parse_refuse_nonsense_and_pick_gpus(self):
        for text, expected in CASES["selections"]:
            with self.subTest(selection=text):
                if expected is None:
                    with self.assertRaises(gpu.GpuError) as raised:
                        gpu.parse_selection(text)
                    self.assertEqual(raised.exception.kind, "bad_selection")
                else:
                    self.assertEqual(gpu.parse_selection(text), expected)
        for answer, selection, expected in CASES["selected"]:
            with self.subTest(answer=answer, selection=selection):
                gpus = gpu.parse_query_gpu(fixture(answer))
                if isinstance(expected, str):
                    with self.assertRaises(gpu.GpuError) as raised:
                        gpu.select(gpus, selection)
                    self.assertIn(expected, str(raised.exception))
                else:
                    self.assertEqual([chosen.index for chosen in gpu.select(gpus, selection)], expected)


class PinningAndTagsTest(unittest.TestCase):
    def test_a_pinned_process_gets_what_agentctl_gives_a_job(self):
        gpus = gpu.parse_query_gpu(fixture("h100x8.csv"))
        chosen = gpu.select(gpus, [6, 2])
        environ = {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "PATH": "/bin"}
        set_now = gpu.pin(chosen[1], environ)
        self.assertEqual(environ["CUDA_VISIBLE_DEVICES"], "2")
        self.assertEqual(environ["CUDA_DEVICE_ORDER"], "PCI_BUS_ID")
        self.assertEqual(environ["AGENTD_GPU_INDEX"], "2")
        self.assertEqual(environ["AGENTD_GPU_UUID"], gpus[2].uuid)
        self.assertEqual(environ["AGENTD_GPU_NAME"], "NVIDIA H100 80GB HBM3")
        self.assertEqual(environ["PATH"], "/bin")
        self.assertEqual(set_now, gpu.pin_env(chosen[1]))
        self.assertEqual(gpu.auto_tags(chosen)["gpu_count"], "2")

    def test_list_selections_are_checked_like_text_ones(self):
        gpus = gpu.parse_query_gpu(fixture("h100x8.csv"))
        self.assertEqual([chosen.index for chosen in gpu.select(gpus, [3])], [3])
        for bad in ([1, 1], [-1], ["0"], [True]):
            with self.assertRaises(gpu.GpuError):
                gpu.select(gpus, bad)

    def test_user_tags_win_over_derived_ones(self):
        h100 = gpu.select(gpu.parse_query_gpu(fixture("mixed.csv")), "0")
        merged = gpu.merge_tags(gpu.auto_tags(h100), {"gpu": "H100-SXM", "zone": "a"})
        self.assertEqual(merged, {"gpu": "H100-SXM", "gpu_count": "1", "gpu_mem_gib": "80", "zone": "a"})


def fake_nvidia_smi(directory, answer, code):
    """A script that checks it was asked the parser's query, prints `answer` and exits `code`."""
    data = os.path.join(directory, "answer.txt")
    with open(data, "w", encoding="utf-8", newline="") as out:
        out.write(answer)
    script = os.path.join(directory, "nvidia-smi")
    with open(script, "w") as out:
        out.write('#!/bin/sh\n[ "$1 $2" = "{} {}" ] || {{ echo "unexpected arguments: $*" >&2; exit 99; }}\n'
                  "cat '{}'\nexit {}\n".format(gpu.NVIDIA_SMI_ARGS[0], gpu.NVIDIA_SMI_ARGS[1], data, code))
    os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR)
    return script


class DiscoveryTest(unittest.TestCase):
    def test_discovery_runs_nvidia_smi_and_says_clearly_when_there_are_no_gpus(self):
        with tempfile.TemporaryDirectory() as directory:
            good = fake_nvidia_smi(directory, fixture("h100x8.csv"), 0)
            self.assertEqual(len(gpu.discover(good)), 8)
        with self.assertRaises(gpu.GpuError) as raised:
            gpu.discover("/nonexistent/nvidia-smi")
        self.assertEqual(raised.exception.kind, "nvidia_smi_missing")
        self.assertIn("needs NVIDIA GPUs", str(raised.exception))
        self.assertIn("not found", str(raised.exception))
        with tempfile.TemporaryDirectory() as directory:
            failing = fake_nvidia_smi(directory, fixture("driver_failure.txt"), 9)
            with self.assertRaises(gpu.GpuError) as raised:
                gpu.discover(failing)
            self.assertEqual(raised.exception.kind, "nvidia_smi_failed")
            self.assertIn("couldn't communicate with the NVIDIA driver", str(raised.exception))
            self.assertIn("9", str(raised.exception))
        with tempfile.TemporaryDirectory() as directory:
            empty = fake_nvidia_smi(directory, "", 0)
            with self.assertRaises(gpu.GpuError) as raised:
                gpu.discover(empty)
            self.assertEqual(raised.exception.kind, "no_gpus")

    def test_the_environment_names_another_nvidia_smi(self):
        with tempfile.TemporaryDirectory() as directory:
            script = fake_nvidia_smi(directory, fixture("h100x1.csv"), 0)
            previous = os.environ.get("AGENTD_NVIDIA_SMI")
            os.environ["AGENTD_NVIDIA_SMI"] = script
            try:
                self.assertEqual([found.uuid for found in gpu.discover()],
                                 ["GPU-b52da589-e2aa-3be0-a71a-3b4ddee4e448"])
            finally:
                if previous is None:
                    del os.environ["AGENTD_NVIDIA_SMI"]
                else:
                    os.environ["AGENTD_NVIDIA_SMI"] = previous


if __name__ == "__main__":
    unittest.main()
