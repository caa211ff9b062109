"""Will my adapters merge? The book's answer for a practitioner's own LoRA adapters.

``python -m lora_merge_utils report --base BASE --adapter NAME=DIR ... --data NAME=DIR ... --out DIR`` and
:func:`~lora_merge_utils.own_adapters.report.write_report` read a base model (timm or transformers), PEFT adapter
folders with their heads (:mod:`.models`) and each task's images (:mod:`.data`), check them against each other before
any work, score every adapter against its frozen-backbone floor and every merge with the book's families, each tuned
on validation (:mod:`.analysis`), and write ``report.md``, ``report.html``, ``summary.json`` and the recommended merge
(:mod:`.report`).
"""
