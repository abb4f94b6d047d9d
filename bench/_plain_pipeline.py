"""The floor for a split over processes: the same segments, no resplit data plane.

Each segment runs in its own plain Python process (resplit's segment code,
``resplit.models.load_segment``), and the hidden state goes from one process to
the next as raw bytes over a ``multiprocessing`` pipe: no gRPC, no sessions, no
event loop. What this costs over the whole model in one process is what splitting
into processes costs on this host; what ``pipeline_overhead.py``'s split costs on
top of it is the data plane's own overhead.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from resplit.models import Checkpoint, load_segment

STOP, NEW, DECODE = b"", b"N", b"D"


def _stage(
    model_dir: str,
    start: int,
    end: int,
    inbox: Connection,
    outbox: Connection,
    decode_threads: int,
    device: str,
) -> None:
    segment = load_segment(Checkpoint(Path(model_dir)), start, end, torch.device(device))
    state = segment.new_state()
    threads = torch.get_num_threads()
    while (message := inbox.recv_bytes()) != STOP:
        flag, payload = message[:1], bytearray(message[1:])  # NEW: a prompt, else one decode step
        if flag == NEW:
            state = segment.new_state()
        # As a worker does (--decode-threads): fewer threads for a decode step, all for a prefill.
        torch.set_num_threads(threads if flag == NEW else min(decode_threads or threads, threads))
        if segment.has_embedding:
            ids = torch.frombuffer(payload, dtype=torch.int64).unsqueeze(0).to(device)
            out = segment.step(state, input_ids=ids)
        else:
            hidden = torch.frombuffer(payload, dtype=torch.float32).to(device)
            out = segment.step(state, hidden=hidden.view(1, -1, segment.config.hidden_size))
        if out.hidden is not None:
            outbox.send_bytes(flag + out.hidden.contiguous().cpu().numpy().tobytes())
        else:
            outbox.send_bytes(int(out.logits[0].argmax()).to_bytes(8, "little"))
    outbox.send_bytes(STOP)


class PlainPipeline:
    """Segments [(start, end), ...] in one process each, chained by pipes; greedy decode.

    ``decode_threads``: intra-op threads for decode steps, as the workers' ``--decode-threads``
    (0: all of them). ``device``: where the segments run, as a worker's ``--device``."""

    def __init__(
        self,
        model_dir: Path,
        segments: list[tuple[int, int]],
        env: dict[str, str],
        decode_threads: int = 0,
        device: str = "cpu",
    ) -> None:
        context = mp.get_context("spawn")
        pipes = [context.Pipe(duplex=False) for _ in range(len(segments) + 1)]  # (recv, send)
        self._first, self._last = pipes[0][1], pipes[-1][0]
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)  # read by each child's torch/OpenMP as it starts
        try:
            self._processes = [
                context.Process(
                    target=_stage,
                    args=(str(model_dir), a, b, pipes[i][0], pipes[i + 1][1], decode_threads, device),
                    daemon=True,
                )
                for i, (a, b) in enumerate(segments)
            ]
            for process in self._processes:
                process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def generate(self, prompt: list[int], tokens: int) -> tuple[float, list[float], list[int]]:
        """(prefill seconds, decode seconds per token, generated ids)."""
        ids, times, step = [], [], list(prompt)
        for _ in range(tokens):
            start = time.perf_counter()
            flag = NEW if not ids else DECODE
            self._first.send_bytes(flag + torch.tensor(step, dtype=torch.int64).numpy().tobytes())
            token = int.from_bytes(self._last.recv_bytes(), "little")
            times.append(time.perf_counter() - start)
            ids.append(token)
            step = [token]
        return times[0], times[1:], ids

    def close(self) -> None:
        self._first.send_bytes(STOP)
        self._last.recv_bytes()
        for process in self._processes:
            process.join(timeout=10)

    def __enter__(self) -> PlainPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
