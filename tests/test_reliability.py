"""Every bad input in ``tests/reliability_cases.py`` is refused with exactly its exception
type and a message naming the parameter; ``docs/reliability.md`` is generated from them."""

import re

import pytest
from reliability_cases import CASES, DOC, FAULTS, find_tests, render_markdown, run_case, run_cases

#: generous: a case that takes longer than this probably stopped validating up front
#: and started building environments or training
SLOW_S = 5.0


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case):
    result = run_case(case)
    assert result.error is not None, f"{case.id}: accepted silently"
    assert type(result.error) is case.exc, (
        f"{case.id}: raised {result.exc_name}, expected exactly {case.exc.__name__}: "
        f"{result.message}")
    assert re.search(case.match, str(result.error)), (
        f"{case.id}: message {result.message!r} does not match {case.match!r}")
    assert result.seconds < SLOW_S, f"{case.id} took {result.seconds:.1f} s"


def test_fault_tests_exist_except_pending_ones():
    # the fault section cites real tests; only the GradScaler one may still be pending
    for fault in FAULTS:
        found = [t for p in fault.tests for t in find_tests(p)]
        if "GradScaler" not in fault.fault:
            assert found, f"no test found for fault {fault.fault!r}: {fault.tests}"


def test_doc_is_generated_from_the_cases():
    expected = render_markdown(run_cases())
    assert DOC.exists(), "run: python tests/reliability_cases.py"
    assert DOC.read_text() == expected, (
        "docs/reliability.md is out of date: run python tests/reliability_cases.py")
