"""Worker settings (flags or RESPLIT_* environment variables)."""

from __future__ import annotations

import socket

from pydantic import Field, model_validator

from resplit.config import Port, ServiceSettings
from resplit.core.devices import known, lookup


class WorkerSettings(ServiceSettings):
    port: Port = 50060
    http_port: Port = 9160
    node_id: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$", max_length=64, description="default: host-port")
    trusted: bool = Field(False, description="may host privacy-critical units (embedding, head)")
    memory_bytes: int = Field(0, ge=0, description="memory offered to segments; 0 = detect")
    device_profile: str = Field("cpu", description="device profile name, e.g. cpu, A100-40GB")
    emulate: str = Field(
        "",
        description="emulate this device (e.g. A100-40GB): segments read only config.json and each step "
        "waits the time the device profile predicts instead of computing",
    )
    emulate_load_file: str = Field(
        "", description="with --emulate: a file holding the device's background load 0..1 (re-read live)"
    )
    network_mbps: float = Field(1000.0, gt=0, description="declared network capacity")
    heartbeat_ttl_s: float = Field(10.0, gt=0, le=3600, description="registry entry expires after this")
    heartbeat_interval_s: float = Field(3.0, gt=0, le=600, description="how often the entry is refreshed")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="where segments run")
    torch_threads: int = Field(0, ge=0, le=256, description="intra-op threads for torch; 0 = torch's default")
    decode_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="intra-op threads for decode steps (at most 8 new tokens in all); 0 = as --torch-threads",
    )
    inline_decode: bool = Field(
        True,
        description="run a lone session's single-threaded decode steps on the event loop's thread "
        "(no hand-off to the compute thread); never with --emulate",
    )
    lean_decode: bool = Field(
        True,
        description="Llama-style segments (Llama, Mistral, Qwen2, Qwen3 with full attention) are built "
        "and run on resplit's own ops, without transformers in the worker (the same tensor operations, "
        "bitwise the same result on torch's kernels); off: every step through transformers' layers",
    )
    huge_pages: bool = Field(
        True,
        description="on the CPU, load weights into memory the kernel may back with 2 MiB pages "
        "(transparent huge pages, madvise); decode reads every weight once per token",
    )
    max_batch: int = Field(
        64,
        ge=1,
        le=4096,
        description="most sessions' decode steps one batched forward of a segment runs "
        "(steps arriving while a batch runs wait for the next; a lone step never waits)",
    )
    batch_gather_ms: float = Field(
        200.0,
        ge=0,
        le=10_000,
        description="a batch waits at most this long (and at most 4 of the segment's last forwards) for "
        "the sessions that stepped on its segment lately to come back, so they run as one batch instead "
        "of fragments (a session alone never waits; 0: never wait)",
    )
    prefill_chunk_tokens: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="a prompt longer than this runs in chunks of this many tokens, other sessions' "
        "steps running between two chunks, so a long prompt never freezes their streams "
        "(0: every prompt in one forward)",
    )
    kv_budget_tokens: int = Field(
        0,
        ge=0,
        description="tokens of KV cache all sessions on this worker may hold together, each "
        "reserving what it holds plus what it may still generate at its first step; a session "
        "that does not fit is refused with RESOURCE_EXHAUSTED (0: no budget beyond --max-sessions "
        "x --max-tokens)",
    )
    max_rpcs: int = Field(
        512,
        ge=0,
        le=1_000_000,
        description="RPCs (open streams included) this worker runs at once (0: no cap); a session holds "
        "up to two streams on a worker (from its caller, to the next hop); the lanes from other "
        "workers are not counted",
    )
    max_rpcs_per_client: int = Field(
        256, ge=0, le=1_000_000, description="RPCs one client identity runs here at once (0: no cap)"
    )
    max_queued_requests: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="requests of one session read ahead of its steps; past this the worker stops "
        "reading its stream (gRPC flow control holds the sender) until a step takes one",
    )
    stalled_write_timeout_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="a session whose caller has not taken a reply for this long (it stopped reading and "
        "gRPC's flow-control window is full) is cut off and its memory freed (0: wait forever)",
    )
    max_sessions: int = Field(64, ge=1, le=100_000, description="open sessions this worker accepts")
    max_waiting_sessions: int = Field(
        16,
        ge=0,
        le=100_000,
        description="new sessions that may wait for a slot when --max-sessions are open; one over "
        "this is refused at once (0: none waits)",
    )
    admission_wait_ms: int = Field(
        250,
        ge=0,
        le=60_000,
        description="how long a new session waits for a slot before it is refused RESOURCE_EXHAUSTED",
    )
    max_tokens: int = Field(4096, ge=1, description="tokens (prompt + generated) one session may hold")
    idle_timeout_s: float = Field(
        300.0, gt=0, description="a session with no request for this long is closed"
    )
    chunk_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="activation chunk size on the wire")
    migration_timeout_s: float = Field(
        60.0, gt=0, description="how long pulling a migrating session's cache from an old hop may take"
    )
    agent_interval_s: float = Field(
        2.0, ge=0, le=3600, description="node agent cycle: metrics report and link probes (0: no agent)"
    )
    cpu_source: str = Field(
        "auto", pattern=r"^(auto|cgroup|process)$", description="node CPU from its own cgroup or the process"
    )
    probe_interval_s: float = Field(10.0, ge=0, description="seconds between probes of one link (0: none)")
    probe_bytes: int = Field(256 * 1024, ge=4096, le=16 << 20, description="bytes one bandwidth probe sends")
    probe_budget_bytes: int = Field(
        1 << 20, ge=4096, le=256 << 20, description="most probe bytes one agent cycle sends (all peers)"
    )
    metrics_retention_s: float = Field(3600.0, gt=0, description="how long metric and link series are kept")

    @model_validator(mode="after")
    def _known_emulated_device(self) -> WorkerSettings:
        if self.emulate and lookup(self.emulate) is None:
            raise ValueError(f"emulate: unknown device {self.emulate!r} (known: {', '.join(known())})")
        return self

    @model_validator(mode="after")
    def _interval_below_ttl(self) -> WorkerSettings:
        if self.heartbeat_interval_s >= self.heartbeat_ttl_s:
            raise ValueError(
                f"heartbeat-interval-s ({self.heartbeat_interval_s}) must be below heartbeat-ttl-s "
                f"({self.heartbeat_ttl_s}), or the node flaps between up and down"
            )
        return self

    @property
    def resolved_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}-{self.port}"
