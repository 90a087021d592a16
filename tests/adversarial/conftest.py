"""Fixtures of the red-team suite: the honest script's score on the attack spec, computed once."""
from __future__ import annotations

import pytest

from tests.adversarial.harness import attack_source, attack_spec, close_spares, run


@pytest.fixture(scope="package", autouse=True)
def spares_end_with_the_suite():
    yield
    close_spares()


@pytest.fixture(scope="session")
def honest_result(shakespeare_spec):
    return run(attack_source(), attack_spec(shakespeare_spec))


@pytest.fixture
def spec(shakespeare_spec):
    return attack_spec(shakespeare_spec)
