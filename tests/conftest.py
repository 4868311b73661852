"""Suite-wide settings: one torch thread per test process.

``make test`` runs two pytest workers on two cores; with torch's default of one thread
per core each, four spinning threads share two cores and small models run 10-40x
slower. Subprocesses started by tests inherit ``OMP_NUM_THREADS``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
