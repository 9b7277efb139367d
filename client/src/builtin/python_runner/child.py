# agentd's trusted Python test runner, child side (docs/astgrep_verify.md, "Tests the code
# under test cannot fake"). Started by parent.py as
#     python3 -I -B -u -c <this file> <config JSON>
# It runs the task's tests and reports one JSON record per test on the pipe `report_fd`.
#
# The code under test runs in this process, so nothing here is a boundary against code that
# targets this runner by name. What it does catch is the generic ways of winning without
# fixing the code: every protected module is compiled from the bytes read before any task code
# ran and imported only from those bytes; a test runs only if its function is that pristine
# code; replacing unittest's or the builtins' functions, installing a trace function, or
# removing the pristine importer counts as tampering; sys.exit during an import is an error.
import builtins
import importlib
import importlib.abc
import importlib.util
import inspect
import json
import json.encoder
import os
import sys
import threading
import traceback
import types
import unittest
import unittest.async_case
import unittest.case
import unittest.loader
import unittest.result
import unittest.runner
import unittest.signals
import unittest.suite
import unittest.util

MODULE_TEST = "<module>"
DETAIL_CHARS_MAX = 1000
# No __pycache__ next to a protected source is ever read: a .pyc planted by the code under test
# would otherwise be imported instead of the pristine source. /dev/null/... cannot exist.
PYCACHE_PREFIX = "/dev/null/agentd-no-pycache"
WATCHED_MODULES = (
    "builtins",
    "json",
    "json.encoder",
    "unittest",
    "unittest.async_case",
    "unittest.case",
    "unittest.loader",
    "unittest.result",
    "unittest.runner",
    "unittest.signals",
    "unittest.suite",
    "unittest.util",
)
CO_NEWLOCALS = inspect.CO_NEWLOCALS
_write = os.write
_exit = os._exit
_encode = json.encoder.JSONEncoder(ensure_ascii=True).encode


class Reporter:
    """Writes records to the parent; each is one JSON line, written with one system call."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, record):
        data = (_encode(record) + "\n").encode("ascii")
        while data:
            written = _write(self.fd, data)
            data = data[written:]

    def result(self, test, status, detail=""):
        self.send({"event": "result", "test": test, "status": status, "detail": detail[:DETAIL_CHARS_MAX]})

    def tamper(self, detail):
        self.send({"event": "tamper", "detail": detail[:DETAIL_CHARS_MAX]})

    def done(self):
        self.send({"event": "done"})


# ------------------------------------------------------------------------------------------
# Pristine code


class Pristine:
    """The protected Python files, compiled from their bytes before any task code ran."""

    def __init__(self, paths):
        self.code_by_path = {}
        self.error_by_path = {}
        for path in paths:
            absolute = os.path.abspath(path)
            try:
                with open(path, "rb") as handle:
                    source = handle.read()
                self.code_by_path[path] = compile(source, absolute, "exec", dont_inherit=True)
            except (OSError, SyntaxError, ValueError) as error:
                self.error_by_path[path] = error
        self.functions_by_path = {path: functions_by_qualname(code) for path, code in self.code_by_path.items()}
        self.path_by_module = {}

    def function_code(self, module_name, qualname):
        path = self.path_by_module.get(module_name)
        if path is None:
            return None
        return self.functions_by_path.get(path, {}).get(qualname)


def functions_by_qualname(code, prefix=""):
    """Every function and class body code object nested in `code`, by qualified name."""
    found = {}
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            qualname = getattr(constant, "co_qualname", prefix + constant.co_name)
            found[qualname] = constant
            inner = qualname + (".<locals>." if constant.co_flags & CO_NEWLOCALS else ".")
            found.update(functions_by_qualname(constant, inner))
    return found


class PristineLoader(importlib.abc.Loader):
    def __init__(self, path, pristine):
        self.path = path
        self.pristine = pristine

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        error = self.pristine.error_by_path.get(self.path)
        if error is not None:
            raise error
        exec(self.pristine.code_by_path[self.path], module.__dict__)


class PristineFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: a protected module is imported from its pristine code, whatever
    the code under test put beside it (a package of the same name, a .so, a .pyc)."""

    def __init__(self, table, pristine):
        self.table = table
        self.pristine = pristine

    def find_spec(self, fullname, path=None, target=None):
        entry = self.table.get(fullname)
        if entry is None:
            return None
        relative, is_package = entry
        absolute = os.path.abspath(relative)
        spec = importlib.util.spec_from_loader(
            fullname, PristineLoader(relative, self.pristine), origin=absolute, is_package=is_package
        )
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(absolute)]
        return spec


def base_and_name(path):
    """The sys.path entry and module name that import `path`: the first directory upwards
    without an __init__.py is the base, as pytest's default import mode does."""
    directory, file_name = os.path.split(path)
    parts = [] if file_name == "__init__.py" else [file_name[:-3]]
    while directory and os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    return directory, ".".join(parts)


def module_table(paths):
    """Module name -> (path, is_package) for every protected file, and the sys.path entries.
    A file gets the name pytest would import it by, and its dotted path from the workspace
    root too (`tests.base` for tests/base.py, through a namespace package)."""
    table = {}
    bases = []
    for path in paths:
        is_package = os.path.basename(path) == "__init__.py"
        base, name = base_and_name(path)
        for candidate in (name, dotted_path(path)):
            if candidate and candidate not in table:
                table[candidate] = (path, is_package)
        if base not in bases:
            bases.append(base)
    # The workspace root too, as `python3 -m unittest` run there would have it.
    if "" not in bases:
        bases.append("")
    return table, bases


def dotted_path(path):
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if parts and all(part.isidentifier() for part in parts) else ""


# ------------------------------------------------------------------------------------------
# Tampering


MISSING = object()


def watched_value(value):
    # Data attributes (maxDiff, longMessage) are the tests' to set; what decides a verdict is code.
    return callable(value) or isinstance(value, (staticmethod, classmethod, property, types.ModuleType))


class Guard:
    """Snapshots of what a verdict depends on, taken before any task code ran."""

    def __init__(self, finder, own_classes):
        self.finder = finder
        self.modules = []
        self.classes = []
        for name in WATCHED_MODULES:
            module = sys.modules[name]
            self.modules.append((name, module, self.watched(vars(module))))
            for value in list(vars(module).values()):
                # Classes of builtins are immutable; watching them would only cost time.
                if isinstance(value, type) and value.__module__ == name and name != "builtins":
                    self.classes.append((name + "." + value.__qualname__, value, self.watched(vars(value))))
        for cls in own_classes:
            self.classes.append(("the runner's " + cls.__name__, cls, self.watched(vars(cls))))

    @staticmethod
    def watched(namespace):
        return {key: value for key, value in namespace.items() if watched_value(value)}

    def watch_module(self, name, module):
        """Watches the functions and classes a test module bound once its import finished:
        code under test that rebinds one later (from a thread, say) is tampering."""
        self.modules.append((name, module, self.watched(vars(module))))

    def check(self):
        """None, or what was tampered with."""
        if sys.gettrace() is not None or sys.getprofile() is not None:
            return "a trace or profile function was installed"
        if getattr(threading, "_trace_hook", None) is not None or getattr(threading, "_profile_hook", None) is not None:
            return "a thread trace or profile function was installed"
        if not sys.meta_path or sys.meta_path[0] is not self.finder:
            return "sys.meta_path was changed"
        for name, module, snapshot in self.modules:
            if sys.modules.get(name) is not module:
                return "sys.modules[%r] was replaced" % name
            problem = changed(name, vars(module), snapshot, additions=False)
            if problem:
                return problem
        for name, cls, snapshot in self.classes:
            problem = changed(name, vars(cls), snapshot, additions=True)
            if problem:
                return problem
        return None


def changed(name, namespace, snapshot, additions):
    for key, value in snapshot.items():
        if namespace.get(key, MISSING) is not value:
            return "%s.%s was replaced" % (name, key)
    if additions:
        for key, value in namespace.items():
            if key not in snapshot and watched_value(value):
                return "%s.%s was added" % (name, key)
    return None


def function_problem(function, pristine, what):
    """None if `function` is the pristine code it claims to be, else why not."""
    if isinstance(function, (staticmethod, classmethod)):
        function = function.__func__
    if isinstance(function, property):
        function = function.fget
    if not isinstance(function, types.FunctionType):
        return None if function is None else "%s is not a function of the test source" % what
    try:
        inner = inspect.unwrap(function)
    except ValueError:  # a __wrapped__ cycle
        return "%s is not a function of the test source" % what
    if not isinstance(inner, types.FunctionType):
        return "%s is not a function of the test source" % what
    expected = pristine.function_code(inner.__module__, inner.__qualname__)
    if expected is None or inner.__code__ is not expected:
        return "%s is not the code of the test source" % what
    module = sys.modules.get(inner.__module__)
    if module is None or inner.__globals__ is not vars(module):
        return "%s runs with other globals than its module's" % what
    return None


def class_problem(cls, pristine, watched_classes, workspace):
    """Every function of the test class and of its bases from protected modules must be
    pristine: an added assertEqual is as good as a replaced test. A base from anywhere else
    (a library's TestCase) must not have code from the workspace: the code under test could
    slip a lenient base under the test class by replacing the test module's `unittest`."""
    if unittest.TestCase not in cls.__mro__:
        return "%s is not a unittest.TestCase" % cls.__qualname__
    for klass in cls.__mro__:
        if klass is object or klass in watched_classes:
            continue
        protected = pristine.path_by_module.get(klass.__module__) is not None
        for key, value in list(vars(klass).items()):
            if not isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
                continue
            what = "%s.%s" % (klass.__qualname__, key)
            if protected:
                problem = function_problem(value, pristine, what)
            else:
                problem = workspace_code_problem(value, workspace, cls, what)
            if problem:
                return problem
    return None


def workspace_code_problem(value, workspace, cls, what):
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    code = getattr(value, "__code__", None)
    filename = getattr(code, "co_filename", "")
    if filename.startswith(workspace + os.sep):
        return "%s inherits %s, whose code is in the workspace, not in a test file" % (cls.__qualname__, what)
    return None


# ------------------------------------------------------------------------------------------
# Running


def describe(error):
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip()


def say(text):
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Result(unittest.TestResult):
    """Records one status per test; a test whose code or environment was tampered with is an
    error whatever it did."""

    def __init__(self, runner, path):
        super().__init__()
        self.runner = runner
        self.path = path
        self.statuses = {}
        self.violations = {}

    def test_id(self, test):
        return "%s::%s::%s" % (self.path, type(test).__qualname__, getattr(test, "_testMethodName", "?"))

    def startTest(self, test):
        super().startTest(test)
        problem = self.runner.check_environment()
        if problem is None and isinstance(test, unittest.TestCase):
            problem = class_problem(type(test), self.runner.pristine, self.runner.watched_classes, self.runner.workspace)
            method = getattr(type(test), getattr(test, "_testMethodName", ""), None)
            problem = problem or function_problem(method, self.runner.pristine, self.test_id(test))
        if problem is not None:
            self.violations[self.test_id(test)] = problem

    def stopTest(self, test):
        super().stopTest(test)
        test_id = self.test_id(test)
        problem = self.violations.get(test_id) or self.runner.check_environment()
        status, detail = self.statuses.pop(test_id, ("error", "the test reported no outcome"))
        if problem is not None:
            status, detail = "error", "tampering: " + problem
        self.runner.report_test(test_id, status, detail)

    def mark(self, test, status, detail=""):
        test_id = self.test_id(test)
        previous = self.statuses.get(test_id)
        if previous is None or previous[0] == "passed":
            self.statuses[test_id] = (status, detail)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.mark(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.mark(test, "failed", self.describe_err(err))

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self.mark(test, "error", self.describe_err(err))
        else:
            # A class or module fixture (setUpClass, setUpModule) failed: its tests never run.
            self.runner.report_test("%s::%s" % (self.path, test), "error", self.describe_err(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        # The code under test can raise SkipTest: a skip is never a pass.
        self.mark(test, "skipped", "skipped: %s" % reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.mark(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.mark(test, "failed", "unexpected success of a test marked expectedFailure")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.mark(test, "failed", "%s: %s" % (subtest.id(), self.describe_err(err)))

    @staticmethod
    def describe_err(err):
        return describe(err[1])


class Runner:
    def __init__(self, config):
        self.reporter = Reporter(config["report_fd"])
        os.set_inheritable(config["report_fd"], False)
        self.pristine = Pristine(config["protected_python"])
        table, bases = module_table(config["protected_python"])
        for name, (path, _is_package) in table.items():
            self.pristine.path_by_module[name] = path
        self.table = table
        self.finder = PristineFinder(table, self.pristine)
        sys.pycache_prefix = PYCACHE_PREFIX
        sys.meta_path.insert(0, self.finder)
        self.workspace = os.getcwd()
        for base in reversed(bases):
            sys.path.insert(0, os.path.join(self.workspace, base) if base else self.workspace)
        self.guard = Guard(self.finder, (Runner, Result, Reporter, Pristine, PristineFinder, PristineLoader, Guard))
        self.watched_classes = {cls for _name, cls, _snapshot in self.guard.classes}
        self.tamper_reported = False
        self.counts = {"passed": 0, "other": 0}

    def check_environment(self):
        problem = self.guard.check()
        if problem is not None and not self.tamper_reported:
            self.tamper_reported = True
            self.reporter.tamper(problem)
        return problem

    def report_test(self, test_id, status, detail=""):
        if not test_id.endswith("::" + MODULE_TEST):
            self.counts["passed" if status == "passed" else "other"] += 1
        if status != "passed":
            say("%s: %s %s" % (status.upper(), test_id, detail))
        self.reporter.result(test_id, status, detail)

    def run_module(self, path):
        _base, name = base_and_name(path)
        try:
            module = importlib.import_module(name)
        except BaseException as error:  # SystemExit too: ending the import early is no pass
            say("ERROR importing %s:\n%s" % (path, "".join(traceback.format_exception(type(error), error, error.__traceback__))))
            self.report_test("%s::%s" % (path, MODULE_TEST), "error", "import failed: " + describe(error))
            return
        problem = self.check_environment()
        if problem is None:
            self.guard.watch_module(name, module)
        self.report_test("%s::%s" % (path, MODULE_TEST), "error" if problem else "passed", "tampering: %s" % problem if problem else "")
        for run in (self.run_unittest_tests, self.run_test_functions):
            try:
                run(module, path)
            except BaseException as error:  # unittest itself broken by the code under test
                say("ERROR running the tests of %s:\n%s" % (path, "".join(traceback.format_exception(type(error), error, error.__traceback__))))
                self.check_environment()
                # Tests it did not reach are reported by the parent as not run.
                self.report_test("%s::<runner>" % path, "error", "the test run broke: " + describe(error))

    def run_unittest_tests(self, module, path):
        suite = unittest.TestLoader().loadTestsFromModule(module)
        suite.run(Result(self, path))

    def run_test_functions(self, module, path):
        for name, function in sorted(vars(module).items()):
            if not (name.startswith("test") and isinstance(function, types.FunctionType)):
                continue
            if function.__module__ != module.__name__:
                continue
            test_id = "%s::%s" % (path, name)
            problem = self.check_environment() or function_problem(function, self.pristine, test_id)
            if problem is not None:
                self.report_test(test_id, "error", "tampering: " + problem)
                continue
            self.report_test(test_id, *self.call_test_function(function))

    def call_test_function(self, function):
        if inspect.iscoroutinefunction(function):
            return "error", "async test functions are not supported"
        required = [
            parameter
            for parameter in inspect.signature(function).parameters.values()
            if parameter.default is parameter.empty and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        ]
        if required:
            return "error", "the test takes arguments (pytest fixtures are not supported)"
        try:
            function()
        except unittest.SkipTest as skip:
            return "skipped", "skipped: %s" % skip
        except AssertionError as error:
            say("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            return "failed", describe(error)
        except BaseException as error:  # SystemExit too
            say("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            return "error", describe(error)
        problem = self.check_environment()
        return ("error", "tampering: " + problem) if problem else ("passed", "")


def main():
    config = json.loads(sys.argv[1])
    runner = Runner(config)
    for path in config["modules"]:
        runner.run_module(path)
    runner.check_environment()
    say("agentd test runner: %d of %d tests ran and passed" % (runner.counts["passed"], runner.counts["passed"] + runner.counts["other"]))
    runner.reporter.done()
    # Skips atexit handlers and waits for no thread: nothing after `done` can change the verdict,
    # and the code under test must not keep the run alive.
    sys.stdout.flush()
    sys.stderr.flush()
    _exit(0)


main()
