"""The e2e suites again, every plugin call through the installed thin clients and an agent.

Same test functions as tests/e2e (imported here); this directory's conftest swaps the
``runtime`` and ``cni`` fixtures for ones that run ``splice install-cni`` executables with
``SPLICE_AGENT_SOCKET`` set to a session agent living in a namespace of its own, while each
test's plugin calls run in that test's host namespace. Failure-injection tests
(``SPLICE_FAILPOINT``) take the in-process fallback of the same executables by design.
"""

from __future__ import annotations

import pytest

from ..e2e import test_bridge_e2e, test_errors_e2e, test_interop_e2e

pytestmark = pytest.mark.root

for _module in (test_bridge_e2e, test_errors_e2e, test_interop_e2e):
    for _name in dir(_module):
        if _name.startswith("test_"):
            globals()[_name] = getattr(_module, _name)
del _module, _name
