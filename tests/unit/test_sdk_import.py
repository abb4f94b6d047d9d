"""The SDK imports without torch and transformers: a client sending token ids pays for
neither (about 4 s and 1 GB of imports); they come with the first tokenizer, logits or
embeddings."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT

HEAVY = ("torch", "transformers")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_resplit_and_its_clients_loads_neither_torch_nor_transformers():
    code = "import resplit\nresplit.Client, resplit.AsyncClient, resplit.Sampling, resplit.GeneratedToken"
    assert _loaded_after(code) == []


def test_a_client_made_and_closed_loads_neither():
    code = "\n".join(
        [
            "from resplit import AsyncClient, Client",
            "Client('127.0.0.1:1').close()",
            "AsyncClient('127.0.0.1:1')",
        ]
    )
    assert _loaded_after(code) == []


def test_logits_bring_torch_when_they_arrive():
    """The check above can fail: the same probe sees torch once a tensor is assembled."""
    code = "from resplit.sdk.exchange import _new_assembler\n_new_assembler()"
    assert _loaded_after(code) == ["torch"]
