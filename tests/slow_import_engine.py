"""The stand-in engine behind an import that outlasts a worker's lease, as torch's first
import can on a loaded machine (LETHE_ENGINE_MODULE for one test)."""

from __future__ import annotations

import sys
import time

from tests import stand_in_engine

IMPORT_SECONDS = 6.0  # the tests' lease is 4 s

time.sleep(IMPORT_SECONDS)
sys.modules[__name__] = stand_in_engine
