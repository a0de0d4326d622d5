"""Flake-aware bisection model (pure logic, no I/O).

``model`` holds the Bayesian posterior over the culprit position given soak observations
(no-hang-in-t and hung-after-t) with the hang rate λ integrated out; ``planner`` chooses the
next (commit, soak length) by expected information gain per machine-second and wraps both in
``FlakyBisector``, the driver the real bisector feeds.
"""
