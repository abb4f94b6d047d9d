"""Node profiles: the device table and calibration.

The code lives in :mod:`resplit.core.devices`, shared with the worker's
emulated-compute mode; this module keeps the splitter's import path.
"""

from resplit.core.devices import (  # noqa: F401
    ALIASES,
    BANDWIDTH_EFFICIENCY,
    COMPUTE_EFFICIENCY,
    DEVICES,
    GIB,
    Calibration,
    Device,
    calibrate,
    known,
    lookup,
    roofline,
)
