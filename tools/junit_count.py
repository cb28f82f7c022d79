#!/usr/bin/env python3
"""Counts test cases from meson's logs and prints "PASSED FAILED".

GoogleTest suites ('gtest' protocol) and TAP scripts appear in the JUnit log case by case.
A meson test that failed without a failing case in the JUnit log (a crash, a timeout, a
script that died) counts as one failure, so nothing that broke is ever hidden.
"""
import json
import sys
import xml.etree.ElementTree as ET


def main(json_log: str, junit_log: str) -> None:
    passed = failed = 0
    junit_failures_by_suite = {}
    try:
        root = ET.parse(junit_log).getroot()
        for suite in root.iter("testsuite"):
            bad = 0
            for case in suite.iter("testcase"):
                if case.find("failure") is not None or case.find("error") is not None:
                    bad += 1
                elif case.find("skipped") is None:
                    passed += 1
            failed += bad
            junit_failures_by_suite[suite.get("name", "")] = bad
    except (OSError, ET.ParseError):
        pass
    try:
        with open(json_log) as log:
            runs = [json.loads(line) for line in log if line.strip()]
    except OSError:
        runs = []
    for run in runs:
        if run.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
            continue
        name = run.get("name", "")
        recorded = sum(n for suite, n in junit_failures_by_suite.items() if name in suite)
        if recorded == 0:
            failed += 1
            print(f"meson test '{name}': {run.get('result')}", file=sys.stderr)
    print(passed, failed)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
