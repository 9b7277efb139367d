# agentd's trusted Python test runner, parent side (docs/astgrep_verify.md, "Tests the code
# under test cannot fake"). Started by the astgrep.verify worker as
#     python3 -I -B -u -c <this file> <child.py source> <config JSON>
# in the sandbox, with the per-run nonce in AGENTD_TEST_REPORT_NONCE.
#
# This process never imports code of the workspace. It
#   1. makes itself non-dumpable, so no other process of its user (the test child included)
#      can read its memory or /proc/PID/environ, then takes the nonce out of its environment;
#   2. reads the pristine test modules (nothing of the task has run yet) and lists the tests
#      they define (unittest methods, top-level test functions; a module without either is a
#      script whose import is its one test);
#   3. runs the tests in a child interpreter (child.py) that reports one record per test over
#      a pipe only the child holds;
#   4. prints one report line, "AGENTD-TEST-REPORT <nonce> <json>", on stdout. The child never
#      learns the nonce, so nothing it prints is taken for the report.
import ast
import ctypes
import json
import os
import subprocess
import sys

NONCE_ENV = "AGENTD_TEST_REPORT_NONCE"
REPORT_PREFIX = "AGENTD-TEST-REPORT"
REPORT_VERSION = 1
PR_SET_DUMPABLE = 4
# Bounds on what the child may send: a record line, the record count, the total.
RECORD_BYTES_MAX = 64 * 1024
RECORDS_MAX = 20000
CHANNEL_BYTES_MAX = 32 * 1024 * 1024
# Failures listed in the report, and characters of each detail.
FAILURES_LISTED_MAX = 20
DETAIL_CHARS_MAX = 1000
MODULE_TEST = "<module>"


def main():
    if not make_non_dumpable():
        sys.stderr.write("agentd test runner: prctl(PR_SET_DUMPABLE, 0) failed; refusing to run\n")
        return 2
    nonce = os.environ.pop(NONCE_ENV, None)
    if not nonce:
        sys.stderr.write("agentd test runner: no %s in the environment\n" % NONCE_ENV)
        return 2
    child_source = sys.argv[1]
    config = json.loads(sys.argv[2])
    expected, problems = expected_tests(config["modules"], config["protected_python"])
    results, done, tampered, channel_problems = run_child(child_source, config)
    problems.extend(channel_problems)
    report = decide(expected, results, done, tampered, problems)
    sys.stdout.write("\n%s %s %s\n" % (REPORT_PREFIX, nonce, json.dumps(report, sort_keys=True)))
    sys.stdout.flush()
    return 0 if report["all_passed"] else 1


def make_non_dumpable():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# ------------------------------------------------------------------------------------------
# The tests the pristine sources define


def expected_tests(modules, protected_python):
    """Test ids per module path, from the sources as they are now (pristine: read before any
    code of the task ran), and problems reading them."""
    sources = Sources(protected_python + [path for path in modules if path not in protected_python])
    expected = {}
    problems = []
    for path in modules:
        tree = sources.tree(path)
        if tree is None:
            problems.append("%s: cannot read or parse: %s" % (path, sources.errors[path]))
            expected[path] = [test_id(path, MODULE_TEST)]
            continue
        names = tests_in_tree(tree, path, sources)
        expected[path] = [test_id(path, *name) for name in names] or [test_id(path, MODULE_TEST)]
    return expected, problems


def test_id(path, *parts):
    return "::".join((path,) + parts)


class Sources:
    """The parsed protected files, and which module name imports which of them (as child.py
    names them: the pytest-style name, and the dotted path from the workspace root)."""

    def __init__(self, paths):
        self.trees = {}
        self.errors = {}
        self.path_by_module = {}
        self.scopes = {}
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    self.trees[path] = ast.parse(handle.read(), filename=path)
            except (OSError, SyntaxError, ValueError) as error:
                self.errors[path] = error
            for name in (pytest_name(path), dotted_path(path)):
                if name and name not in self.path_by_module:
                    self.path_by_module[name] = path

    def tree(self, path):
        return self.trees.get(path)

    def scope(self, path):
        """Class name -> (ClassDef, path of its module) as seen from module `path`: its own
        top-level classes and those it imports by name from other protected modules."""
        if path in self.scopes:
            return self.scopes[path]
        scope = {}
        self.scopes[path] = scope
        tree = self.trees.get(path)
        if tree is None:
            return scope
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                self.add_imported_classes(scope, node, path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                scope[node.name] = (node, path)
        return scope

    def add_imported_classes(self, scope, node, importer):
        module = node.module or ""
        if node.level:
            package = os.path.dirname(importer)
            for _ in range(node.level - 1):
                package = os.path.dirname(package)
            module = ".".join(part for part in package.split("/") + module.split(".") if part)
        source = self.path_by_module.get(module)
        if source is None or source not in self.trees:
            return
        classes = {item.name: item for item in self.trees[source].body if isinstance(item, ast.ClassDef)}
        for alias in node.names:
            if alias.name in classes:
                scope[alias.asname or alias.name] = (classes[alias.name], source)


def pytest_name(path):
    """The name child.py imports a test module by: from the first directory upwards without
    an __init__.py."""
    directory, file_name = os.path.split(path)
    parts = [] if file_name == "__init__.py" else [file_name[: -len(".py")]]
    while directory and os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    return ".".join(parts)


def dotted_path(path):
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts and all(part.isidentifier() for part in parts) else ""


def tests_in_tree(tree, path, sources):
    """(class, method) for unittest tests and (function,) for top-level test functions, in
    source order. A top-level class with `test*` methods counts whatever its bases (a class
    that turns out not to be a TestCase is never run, so its tests fail as not run). Methods
    inherited count when the base is a class of this module or one it imports by name from
    another test file (`from tests.base import Base`); bases reached otherwise are not seen."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for method in test_methods(node, path, sources, set()):
                found.append((node.name, method))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found.append((node.name,))
    return found


def test_methods(node, path, sources, seen):
    names = []
    scope = sources.scope(path)
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in scope:
            base_node, base_path = scope[base.id]
            key = (base_path, base_node.name)
            if key not in seen:
                names.extend(test_methods(base_node, base_path, sources, seen | {key}))
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
            names.append(item.name)
    unique = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


# ------------------------------------------------------------------------------------------
# The child that runs them


def run_child(child_source, config):
    """Runs child.py and collects its records until it says `done` or closes the pipe.
    Returns the results by test id, whether `done` came, whether the child reported tampering
    or broke the protocol, and the problems seen."""
    read_fd, write_fd = os.pipe()
    child_config = {
        "report_fd": write_fd,
        "modules": config["modules"],
        "protected_python": config["protected_python"],
    }
    # The nonce is already out of os.environ, so the child's environment does not hold it; the
    # child is a fresh interpreter (exec, not fork), so its memory does not hold it either.
    # -I ignores PYTHONUNBUFFERED, hence -u: output printed before a crash is not lost.
    child = subprocess.Popen(
        [sys.executable, "-I", "-B", "-u", "-c", child_source, json.dumps(child_config)],
        pass_fds=[write_fd],
        stdin=subprocess.DEVNULL,
    )
    os.close(write_fd)
    results = {}
    problems = []
    done = False
    tampered = False
    with os.fdopen(read_fd, "rb") as channel:
        received = 0
        count = 0
        while True:
            line = channel.readline(RECORD_BYTES_MAX + 1)
            if not line:
                break
            received += len(line)
            count += 1
            if len(line) > RECORD_BYTES_MAX or count > RECORDS_MAX or received > CHANNEL_BYTES_MAX:
                problems.append("the test process sent more than the runner accepts")
                tampered = True
                break
            record = parse_record(line)
            if record is None:
                problems.append("the test process sent an unreadable record")
                tampered = True
                break
            if record["event"] == "done":
                done = True
                break
            if record["event"] == "tamper":
                tampered = True
                problems.append("the test environment was tampered with: %s" % record["detail"])
            elif record["event"] == "result":
                keep_worst(results, record)
    status = child.wait()
    if done and status != 0:
        done = False
    if not done:
        problems.append(describe_early_end(status))
    return results, done, tampered, problems


def parse_record(line):
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("event") not in ("result", "tamper", "done"):
        return None
    if record["event"] == "result":
        if not isinstance(record.get("test"), str) or record.get("status") not in STATUS_RANK:
            return None
    detail = record.get("detail")
    record["detail"] = detail[:DETAIL_CHARS_MAX] if isinstance(detail, str) else ""
    return record


# A test reported twice (a class bound to two names) keeps its worst result.
STATUS_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def keep_worst(results, record):
    previous = results.get(record["test"])
    if previous is None or STATUS_RANK[record["status"]] > STATUS_RANK[previous["status"]]:
        results[record["test"]] = {"status": record["status"], "detail": record["detail"]}


def describe_early_end(status):
    if status < 0:
        return "the test process was killed by signal %d before it reported completion" % -status
    return "the test process exited with status %d before it reported completion" % status


# ------------------------------------------------------------------------------------------
# The verdict


def module_trouble(path, results):
    """Why the tests of a module may not have run: its import or its run failed."""
    for name in (MODULE_TEST, "<runner>"):
        result = results.get(test_id(path, name))
        if result is not None and result["status"] != "passed":
            return result["detail"]
    return ""


def decide(expected, results, done, tampered, problems):
    """Counts only the expected tests: a test the child invents cannot raise the score, and a
    test it never reports counts as not run."""
    passed = 0
    failures = []
    total = 0
    for path in sorted(expected):
        why_not_run = module_trouble(path, results)
        for test in expected[path]:
            total += 1
            result = results.get(test)
            if result is None:
                failures.append({"test": test, "status": "not_run", "detail": why_not_run})
            elif result["status"] == "passed":
                passed += 1
            else:
                failures.append({"test": test, "status": result["status"], "detail": result["detail"]})
    expected_ids = {test for tests in expected.values() for test in tests}
    unexpected = sum(1 for test in results if test not in expected_ids and not test.endswith("::" + MODULE_TEST))
    all_passed = done and not problems and total > 0 and passed == total
    return {
        "version": REPORT_VERSION,
        "complete": done,
        "tampered": tampered,
        "expected": total,
        "passed": passed,
        "failed": total - passed,
        "unexpected": unexpected,
        "all_passed": all_passed,
        "failures": failures[:FAILURES_LISTED_MAX],
        "problems": problems[:FAILURES_LISTED_MAX],
    }


sys.exit(main())
