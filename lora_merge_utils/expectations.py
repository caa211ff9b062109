"""What the chapters' checks expect on real data, with where the expectation comes from.

The tiny world is ours, and its checks are strict (:meth:`lora_merge_utils.Study.check` stops a chapter there). On
the full profile's real datasets a check that fails prints the matching sentence below instead and the chapter goes
on: our bars were set on the tiny world, and published results say what a ViT-B/16 should do on the real tasks.
"""

from __future__ import annotations

EXPECTED: dict[str, str] = {
    "adapter_gain": (
        "Expected on real data: LoRA beats a linear probe of the same frozen ViT-B/16 on each of these tasks in "
        "published benchmarks (see the book's references page). A task where the adapter loses to its probe "
        "learnt too little: look at its loss curve above, and at train.adapter_epochs and train.adapter_lr."
    ),
    "adapter_accuracy": (
        "Expected on real data: the 80% bar is the tiny world's. With about 2,000 training images and two "
        "epochs, DTD (47 texture classes) in particular stays well below it; compare each task with the published "
        "figures on the book's references page rather than with one bar."
    ),
    "more_tasks_cost_more": (
        "Expected on real data: published merges lose more accuracy as more tasks are merged (see the book's "
        "references page); a triple that keeps as much as a pair is possible on a few tasks but not on average."
    ),
}
"""The sentence each chapter check prints when it fails on real data, keyed as the chapters name them."""
