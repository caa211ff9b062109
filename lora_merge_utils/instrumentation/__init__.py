"""Measuring the library rather than using it: tallies of the work a process has done (:mod:`.workload`, which the
time plan is checked against) and a timing harness (:mod:`.benchmarking`)."""
