"""The e2e suites again, every plugin call through the installed thin clients and an agent.

Same test functions as tests/e2e (imported here); this directory's conftest swaps the
``runtime`` and ``cni`` fixtures for ones that run ``splice install-cni`` executables with
``SPLICE_AGENT_SOCKET`` set to a session agent living in a namespace of its own, while each
test's plugin calls run in that test's host namespace. Failure-injection tests
(``SPLICE_FAILPOINT``) take the in-process fallback of the same executables by design.
"""

from __future__ import annotations

import pytest

from ..e2e import test_bridge_e2e, test_errors_e2e, test_interop_e2e, test_portmap_e2e

pytestmark = pytest.mark.root


def _is_fixture(obj) -> bool:
    return type(obj).__name__ == "FixtureFunctionDefinition" or hasattr(obj, "_pytestfixturefunction")


for _module in (test_bridge_e2e, test_errors_e2e, test_interop_e2e, test_portmap_e2e):
    for _name in dir(_module):
        _obj = getattr(_module, _name)
        if _name.startswith("test_") or (_is_fixture(_obj) and _name not in ("runtime", "cni", "leaks")):
            if _name in globals() and not _name.startswith("test_"):
                continue
            globals()[_name] = _obj
del _module, _name, _obj
