"""Replaying recorded calls against the current code: the driver (`run`), the upstream that plays
the recorded model back (`upstream`), and the comparison of the two recordings (`compare`)."""
