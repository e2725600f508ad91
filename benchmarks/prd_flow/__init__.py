"""The PRD's job-creation flow written plainly (the baseline of ``benchmarks/jobs_vs_prd.py``)."""
