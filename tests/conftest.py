"""Shared test set-up: small thread counts keep the suite fast on 2 cores."""

import os
import warnings

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*QP solver.*")
