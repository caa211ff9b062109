"""The book's own tooling, importable: executing the chapters, the student, instructor and public editions and their
checks, the house drawing, the docs' inventories, the GPU check and the tiny backbone's pretraining.

Each ``scripts/<name>.py`` is a thin wrapper that runs ``book_tools.<name>.main()``, so ``python scripts/<name>.py``
works from a checkout as before, and tests and sibling tools import these modules by name instead of loading files by
path. Not part of the installed package (``lora_merge_utils``): these work on a checkout of the book's repository.
"""
