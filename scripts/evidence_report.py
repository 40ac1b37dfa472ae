"""Tests of a committed sweep's claims: writes results/<sweep>/evidence.md.

    python scripts/evidence_report.py results/rl_graesser_ppo_hc_defaults_300k
"""

from sparse_agents.experiments.evidence import main

if __name__ == "__main__":
    main()
