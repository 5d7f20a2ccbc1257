"""Multi-process training inside a submitit job (Hydra's ``submitit_slurm`` / ``submitit_local``).

``accelerate launch`` and ``torchrun`` export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT before Python starts; a submitit job with N tasks starts N plain Python processes
instead (one per GPU with ``tasks_per_node=gpus_per_node``) and only sets SLURM_* or
SUBMITIT_LOCAL_* variables. Exporting the torch variables from submitit's ``JobEnvironment``
before ``Accelerator()`` is built lets accelerate initialise the process group exactly as under
``accelerate launch``.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("f5app.train")

def export_submitit_distributed_env() -> bool:
    """Export the torch distributed variables when running as one task of a multi-task submitit job.

    Returns True when it exported them; False (and changes nothing) outside submitit, for a
    single-task job, or when a launcher (accelerate, torchrun) has already set RANK/WORLD_SIZE.
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return False  # accelerate launch / torchrun inside the job already did this
    try:
        from submitit.helpers import TorchDistributedEnvironment  # deferred: optional package (hydra/launcher=submitit_local only)
    except ImportError:
        return False
    try:
        env = TorchDistributedEnvironment()
    except RuntimeError:  # SUBMITIT_EXECUTOR set but this is not a submitit job process
        return False
    if env.world_size <= 1:
        return False
    # CUDA_VISIBLE_DEVICES stays as SLURM set it: accelerate selects cuda:LOCAL_RANK itself.
    env.export(set_cuda_visible_devices=False, overwrite=True)
    log.info(
        "submitit job: process %d of %d (local rank %d), master %s:%d",
        env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port,
    )
    return True
