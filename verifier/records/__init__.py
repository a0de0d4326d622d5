"""The records every stage shares: what a trial saw (``TrialResult``) and its timeline.

They live below the stages that make them (run/) and read them (verdict/, report/,
bisect/, matrix/), so no stage imports another stage's machinery to read a result.
"""
