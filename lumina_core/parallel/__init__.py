"""One generation across several processes: the CFG- and sequence-parallel sampler on ``torch.distributed``
(``sampler``, for torchrun and ``--parallel``) and the Ray pool that runs it from one process (``ray_ranks``, its
actors running ``ray_worker``). Imports only the library; yunchang and Ray are imported when a run needs them.
"""

from .sampler import (
    DEFAULT_TIMEOUT_S,
    TORCHRUN_ENV,
    ParallelPlan,
    check_plan,
    init_process_group,
    parallel_sample,
    rank_share,
)

__all__ = ["DEFAULT_TIMEOUT_S", "TORCHRUN_ENV", "ParallelPlan", "check_plan", "init_process_group", "parallel_sample",
           "rank_share"]
