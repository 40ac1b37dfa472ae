"""Experiment runners (layer 3): SB3 agents on one task (:mod:`.rl`), continual RL through
a task stream (:mod:`.rl_stream`), result files shared with the CL runners
(:mod:`.results`) and benchmark logic (:mod:`.bench`). Import the submodules."""
