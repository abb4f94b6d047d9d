"""Orchestrator settings: where the other control services are, and the loop."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings


class OrchestratorSettings(ServiceSettings):
    port: Port = 50052
    http_port: Port = 9102
    prepare_deadline_s: float = Field(300.0, gt=0, description="how long a worker may take to load a segment")
    monitor_address: str = Field("127.0.0.1:50051", description="host:port of the monitor (E(t))")
    splitter_address: str = Field("127.0.0.1:50053", description="host:port of the splitter (Solve)")
    broadcaster_address: str = Field("127.0.0.1:50054", description="host:port of the broadcaster (rollouts)")
    adaptive: bool = Field(
        True, description="run the Alg. 1 control loop (--no-adaptive serves plans as deployed)"
    )
    # -- the control loop (Alg. 1); Delta t and Theta come from each deployment's policy
    control_interval_floor_s: float = Field(
        0.5, gt=0, description="shortest Delta t the loop runs a deployment at, whatever its policy says"
    )
    control_rpc_timeout_s: float = Field(
        30.0, gt=0, description="deadline of each monitor/splitter call in a control cycle"
    )
    drain_deadline_s: float = Field(
        10.0, ge=0, description="how long old-epoch segments may drain after a reconfiguration"
    )
    control_prompt_tokens: int = Field(
        128, ge=1, description="prompt length of the workload the splitter costs"
    )
    control_generate_tokens: int = Field(
        32, ge=0, description="tokens generated per request in that workload"
    )
    assumed_rtt_ms: float = Field(
        1.0, ge=0, description="RTT assumed for a link the workers have not probed yet"
    )
    registry_grace_s: float = Field(
        10.0,
        ge=0,
        description="after Redis restarts empty, how long a node missing from the registry is given "
        "to register again before the loop counts it down (at least the workers' heartbeat interval)",
    )
    failure_check_timeout_s: float = Field(
        1.0, gt=0, description="deadline of the Ping that checks a node a session reported lost"
    )
    flap_cycles: int = Field(
        10, ge=0, description="a plan that returns to one in force within this many cycles is held (flapping)"
    )
    claim_hold_s: float = Field(
        5.0,
        ge=0,
        description="how long the load a change moved counts for the other deployments' decisions "
        "(until the node agents measure it)",
    )
    predict_unmeasured: bool = Field(
        True,
        description="before a deployment's first measured request, its plan's predicted latency signal "
        "stands in for the L_max trigger (--no-predict-unmeasured: wait for traffic)",
    )
    cost_correction: bool = Field(
        True,
        description="fit the cost model's online correction from measured latency and use it "
        "(--no-cost-correction: the model as it is; its error is still checked and reported)",
    )
    correction_every_s: float = Field(
        2.0, gt=0, description="how often the plan in force is checked against the cost model"
    )
    correction_window_s: float = Field(
        10.0,
        gt=0,
        description="the measured samples a check compares with: this long back, at most to the last change",
    )
    memory_file: str = Field(
        "",
        description="a file where the orchestrator keeps the deployments, plans and epochs it last saw, "
        "read at start: a restart while Redis is empty then loses nothing (empty: kept in memory only)",
    )
    measure_after_s: float = Field(
        5.0, ge=0, description="wait after a change before its measured latency goes into the decision log"
    )
