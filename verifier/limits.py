"""Bounds several stages must agree on."""

# A hang that has no proof is confirmed only after this many seconds of unanswered fresh
# probes. An amplifier that sleeps this long could itself make the silence it then calls a
# hang, so scenario files and --delay-us are held below it.
CONFIRM_WINDOW_S = 3.0
MAX_AMPLIFIER_DELAY_US = int(CONFIRM_WINDOW_S * 1_000_000) - 1
