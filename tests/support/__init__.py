"""What several test modules share: helpers and builders imported from here (fixtures are in
tests/conftest.py). Test modules import from tests.support only, never from each other
(tests/test_layout.py checks)."""
