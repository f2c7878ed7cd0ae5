"""TAP output for Python unittest: `python3 tests/.../test_x.py` prints ok/not ok lines.

Usage at the bottom of a test file:
    if __name__ == "__main__":
        tap.main()
"""
import sys
import traceback
import unittest


class _TapResult(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.n = 0

    def _line(self, ok, test, extra=None):
        self.n += 1
        name = test.shortDescription() or test.id().split(".")[-1].replace("_", " ")
        print(("ok" if ok else "not ok"), self.n, "-", name, flush=True)
        if extra:
            for line in extra.rstrip().splitlines():
                print("#", line, flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(True, test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line(False, test, "".join(traceback.format_exception(*err)))

    def addError(self, test, err):
        super().addError(test, err)
        self._line(False, test, "".join(traceback.format_exception(*err)))

    def addSubTest(self, test, subtest, err):
        # Only failing subtests get a line of their own; the enclosing test
        # then reports as failed too, so a subTest failure is never silent.
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._line(False, subtest, "".join(traceback.format_exception(*err)))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.n += 1
        print("ok", self.n, "-", test.id().split(".")[-1], "# SKIP", reason, flush=True)


def main(module="__main__"):
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module])
    result = _TapResult()
    suite.run(result)
    print("1..%d" % result.n)
    sys.exit(0 if result.wasSuccessful() else 1)
