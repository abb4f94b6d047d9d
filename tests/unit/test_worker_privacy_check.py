"""The worker's own privacy check (services/worker/core/privacy.py), without gRPC."""

from __future__ import annotations

import json

import pytest

from resplit.core.privacy import privacy_critical
from services.worker.core.errors import NotTrusted
from services.worker.core.privacy import check_trusted, critical_units, ends_with_head


@pytest.mark.parametrize("units", [4, 5, 8])
@pytest.mark.parametrize("depth", [0, 1, 2, 7])
def test_the_worker_refuses_exactly_what_the_control_plane_calls_critical(units, depth):
    critical = privacy_critical(units, depth)
    for start in range(units):
        for end in range(start + 1, units + 1):
            refused = bool(critical_units(start, end, depth, end == units))
            assert refused == bool(set(range(start, end)) & critical), (start, end, depth)
            check_trusted(True, "d", start, end, depth, end == units)  # a trusted worker takes anything


def test_the_message_names_units_and_deployment_and_survives_absurd_bounds():
    with pytest.raises(NotTrusted) as info:
        check_trusted(False, "chat", 0, 2**32 - 1, 2**32 - 1, True)
    assert "units 0-" in str(info.value) and "'chat'" in str(info.value) and "--trusted" in str(info.value)
    with pytest.raises(NotTrusted, match=r"the head \(unit 9\)"):
        check_trusted(False, "chat", 5, 10, 1, True)
    check_trusted(False, "chat", 2, 3, 1, False)
    check_trusted(False, "chat", 3, 3, 9, False)  # empty: nothing to refuse


def test_the_head_is_found_from_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    assert ends_with_head(str(tmp_path), 5) and not ends_with_head(str(tmp_path), 4)
    assert not ends_with_head(str(tmp_path / "missing"), 5)
    assert not ends_with_head("x" * 5000, 5)
