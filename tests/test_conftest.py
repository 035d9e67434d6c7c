"""The shared test helpers of tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_SYSTEM_PACKAGES, needs_system_package


@pytest.mark.parametrize("required, outcome", [(None, pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_a_missing_system_package_skips_only_where_it_is_not_required(monkeypatch, required, outcome):
    if required is None:
        monkeypatch.delenv(REQUIRE_SYSTEM_PACKAGES, raising=False)
    else:
        monkeypatch.setenv(REQUIRE_SYSTEM_PACKAGES, required)
    with pytest.raises(outcome, match="install Debian's chromium") as stopped:
        needs_system_package("no Chromium at /usr/bin/chromium: install Debian's chromium package")
    # a skip says why it is only a skip
    assert ("CI installs the package" in str(stopped.value)) == (outcome is pytest.skip.Exception)
