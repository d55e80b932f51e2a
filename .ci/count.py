"""Sum the TAP results of every test in one or more meson testlog.json files.

Prints one line per test program, then the totals on the last line as 'N passed, N failed'.
A test program that crashed or printed no TAP line counts as one failure.
"""
import json
import re
import sys

passed = failed = 0
for path in sys.argv[1:]:
    try:
        log = open(path)
    except OSError:
        print(f"{path}: missing (the build or the test run did not start)")
        failed += 1
        continue
    with log:
        for line in log:
            result = json.loads(line)
            out = result.get("stdout", "")
            ok = len(re.findall(r"^ok \d+", out, re.M))
            not_ok = len(re.findall(r"^not ok \d+", out, re.M))
            if result.get("result") not in ("OK", "EXPECTEDFAIL") and not_ok == 0:
                not_ok = 1  # crashed, timed out or printed no plan
            print(f"{path.split('/')[0]:>10} {result['name']:<12} {ok:5d} ok {not_ok:3d} not ok")
            passed += ok
            failed += not_ok
print(f"{passed} passed, {failed} failed")
