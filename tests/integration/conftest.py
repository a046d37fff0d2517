from tests.integration.helpers import phalanx  # noqa: F401  (session fixture)
