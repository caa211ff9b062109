"""The tasks and where their images come from: the task registry and its loaders (:mod:`.tasks`), the tiny world's
generators (:mod:`.synthetic`), offline stand-ins of the full profile's hub datasets (:mod:`.standins`), and the
formula-driven images the tiny backbone was pretrained on (:mod:`.contours`, :mod:`.fractals`)."""
