"""Course tooling around the chapters: exercises and their checks (:mod:`.exercises`), grading of submitted notebooks
(:mod:`.grading`), the time and memory plan of every chapter (:mod:`.plan`, :mod:`.memory`), what the checks expect
on real data (:mod:`.expectations`), and numbers glued into the prose (:mod:`.report`)."""
