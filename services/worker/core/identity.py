"""What a worker tells the registry about itself: address, trust, capacity.

Capacities are detected from the host (psutil, NVML) unless configured, so a
worker started with no flags still registers truthful numbers. Without a GPU
NVML is absent: that means "no GPU", never an error.
"""

from __future__ import annotations

import logging

import psutil

from resplit.v1 import common_pb2

log = logging.getLogger(__name__)


def detect_gpus() -> tuple[int, int]:
    """(GPU count, total GPU memory bytes) via NVML; (0, 0) without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound and friends: no GPU here
        log.debug("no GPU: %s", exc)
        return 0, 0
    try:
        count = pynvml.nvmlDeviceGetCount()
        total = sum(
            pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total for i in range(count)
        )
        return count, int(total)
    finally:
        pynvml.nvmlShutdown()


def describe_node(
    node_id: str,
    address: str,
    trusted: bool,
    memory_bytes: int,
    device_profile: str,
    network_mbps: float,
) -> common_pb2.Node:
    """The registry record of this worker; ``memory_bytes == 0`` means detect."""
    gpu_count, gpu_memory = detect_gpus()
    capacity = common_pb2.NodeCapacity(
        memory_bytes=memory_bytes or psutil.virtual_memory().total,
        cpu_cores=psutil.cpu_count(logical=True) or 1,
        gpu_count=gpu_count,
        gpu_memory_bytes=gpu_memory,
        device_profile=device_profile,
        network_mbps=network_mbps,
    )
    return common_pb2.Node(
        node_id=node_id, address=address, trusted=trusted, capacity=capacity, role="worker"
    )
