"""The report on a practitioner's own adapters, tested on adapters this project did not train: a small timm ViT with
random weights saved locally, adapters trained on it with plain PEFT (heads in ``modules_to_save`` or beside), data
written as image folders and as ``save_to_disk`` folders; numbers checked against direct evaluation, and the saved
merge reloaded with plain PEFT."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}
NAME = "vit_tiny_patch16_224"
TARGETS = r"blocks\.\d+\.(attn\.qkv|mlp\.fc1)"
TASKS = {"stripes": 3, "blobs": 3, "tints": 2}
SIGNAL = 24
"""How far a class's pattern stands out of the noise: faint enough that a head on random features misses some."""


def _images(task: str, label: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Class-dependent 24-px images a random ViT with a small adapter can learn in a few steps."""
    out = []
    for _ in range(count):
        image = rng.integers(0, 120, (24, 24, 3)).astype(np.uint8)
        if task == "stripes":
            image[:, label * 8 : label * 8 + 8] += SIGNAL
        elif task == "blobs":
            image[label * 8 : label * 8 + 8, :, label % 3] += SIGNAL
        else:
            image[4:20, 4:20, label] += SIGNAL
        out.append(image)
    return out


def _write_folder(root, task: str, classes: int, rng: np.random.Generator) -> None:
    for split, count in (("train", 16), ("val", 8), ("test", 8)):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i, image in enumerate(_images(task, label, count, rng)):
                Image.fromarray(image).save(folder / f"{i}.png")


def _tensors(task: str, split: str, folder, image_size: int = 32):
    from lora_merge_utils.own_adapters.data import read_task

    own = read_task(task, folder, image_size)
    return own.dataset(split, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).tensors


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base ViT saved as a weights file, one adapter per task trained with plain PEFT, and the tasks' data."""
    import timm
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    base = timm.create_model(NAME, pretrained=False, num_classes=0, **ARGS)
    save_file(base.state_dict(), str(root / "base.safetensors"))
    rng = np.random.default_rng(0)
    adapters, data = {}, {}
    for index, (task, classes) in enumerate(TASKS.items()):
        _write_folder(root / "data" / task, task, classes, rng)
        data[task] = root / "data" / task
        model = copy.deepcopy(base)
        model.reset_classifier(classes)
        beside = index == 2  # one head saved beside the adapter instead of in modules_to_save
        config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, modules_to_save=None if beside else ["head"])
        peft_model = get_peft_model(model, config)
        if beside:
            peft_model.base_model.model.head.requires_grad_(True)
        x, y = _tensors(task, "train", data[task])
        optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        for step in range(40):
            batch = torch.randint(0, len(x), (16,), generator=torch.Generator().manual_seed(step))
            loss = torch.nn.functional.cross_entropy(peft_model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        peft_model.eval()
        adapters[task] = root / "adapters" / task
        peft_model.save_pretrained(str(adapters[task]))
        if beside:
            head = peft_model.base_model.model.head
            save_file(
                {k: v.detach().contiguous() for k, v in head.state_dict().items()},
                str(adapters[task] / "head.safetensors"),
            )
    return {"root": root, "base": base, "adapters": adapters, "data": data}


@pytest.fixture(scope="module")
def written(world):
    from lora_merge_utils.own_adapters.report import write_report

    out = world["root"] / "report"
    report = write_report(
        NAME,
        world["adapters"],
        world["data"],
        out,
        weights=world["root"] / "base.safetensors",
        base_args=ARGS,
        device=torch.device("cpu"),
        progress=False,
    )
    return report, out


def _direct_accuracy(world, task: str) -> float:
    """The adapter's test accuracy by plain PEFT and timm, without the package."""
    import timm
    from peft import PeftModel

    model = timm.create_model(NAME, pretrained=False, num_classes=TASKS[task], **ARGS)
    model.load_state_dict(world["base"].state_dict(), strict=False)
    folder = world["adapters"][task]
    if (folder / "head.safetensors").exists():
        from safetensors.torch import load_file

        model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    model = PeftModel.from_pretrained(model, str(folder)).eval()
    x, y = _tensors(task, "test", world["data"][task])
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_the_report_scores_each_adapter_as_plain_peft_does(world, written):
    report, _ = written
    for row in report.singles.itertuples():
        assert row.adapter_accuracy == pytest.approx(_direct_accuracy(world, row.task), abs=1e-6), row.task
    assert (report.singles["adapter_accuracy"] > 1 / report.singles["num_classes"]).all(), "the adapters learnt"


def test_the_report_writes_its_files_and_every_number(written):
    report, out = written
    for name in (
        "report.md",
        "report.html",
        "summary.json",
        "figures/pairs.png",
        "figures/k_curve.png",
        "figures/tasks.png",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert {t["task"] for t in summary["tasks"]} == set(TASKS)
    assert {(s["size"], s["family"]) for s in summary["summary"]} == {
        (k, f) for k in (2, 3) for f in ("task arithmetic", "magnitude pruning", "AdaMerging, short schedule")
    }
    assert summary["recommendation"] == report.recommendation and report.recommendation
    text = (out / "report.md").read_text()
    assert "## The answer" in text and report.recommendation[0] in text
    pairs = report.merges[(report.merges["size"] == 2) & (report.merges["family"] == "task arithmetic")]
    assert len(pairs) == 6, "three pairs, two tasks scored in each"
    row = report.summary[(report.summary["size"] == 2) & (report.summary["family"] == "task arithmetic")].iloc[0]
    assert row["accuracy kept low"] <= row["accuracy kept"] <= row["accuracy kept high"]


def test_the_saved_merge_reloads_with_plain_peft_to_the_reported_accuracy(world, written):
    import timm
    from peft import PeftModel
    from safetensors.torch import load_file

    report, out = written
    saved = json.loads((out / "merged" / "merge.json").read_text())
    model = timm.create_model(NAME, pretrained=False, num_classes=0, **ARGS)
    model.load_state_dict(world["base"].state_dict())
    if saved["format"] == "peft":
        model = PeftModel.from_pretrained(model, str(out / "merged")).eval()
    else:
        model.load_state_dict(load_file(str(out / "merged" / "backbone.safetensors")))
    rows = report.merges[(report.merges["size"] == 3) & (report.merges["family"] == saved["family"])]
    for task in TASKS:
        head = torch.nn.Linear(48, TASKS[task])
        head.load_state_dict(load_file(str(out / "merged" / "heads" / f"{task}.safetensors")))
        x, y = _tensors(task, "test", world["data"][task])
        with torch.no_grad():
            accuracy = float((head(model(x)).argmax(1) == y).float().mean())
        assert accuracy == pytest.approx(float(rows[rows["task"] == task]["accuracy"].iloc[0]), abs=1e-6), task


def test_bad_inputs_are_refused_before_any_work(world, tmp_path):
    from peft import LoraConfig, get_peft_model

    from lora_merge_utils.own_adapters.report import write_report

    def run(adapters=None, data=None, **kwargs):
        adapters = world["adapters"] if adapters is None else adapters
        data = world["data"] if data is None else data
        kwargs = {"weights": world["root"] / "base.safetensors", "base_args": ARGS, "progress": False} | kwargs
        return write_report(NAME, adapters, data, tmp_path / "out", **kwargs)

    one = {"stripes": world["adapters"]["stripes"]}
    with pytest.raises(ValueError, match="at least two adapters"):
        run(one, {"stripes": world["data"]["stripes"]})
    swapped = {"stripes": world["data"]["stripes"], "blobs": world["data"]["blobs"], "tints": world["data"]["blobs"]}
    with pytest.raises(ValueError, match="'tints'.s head has 2 classes, but its data has 3"):
        run(data=swapped)
    with pytest.raises(ValueError, match="no data for tints"):
        run(data={k: v for k, v in world["data"].items() if k != "tints"})
    with pytest.raises(ValueError, match="not the weights of timm's"):
        run(base_args=dict(ARGS, embed_dim=64))
    convolutions = {}  # "proj" names patch_embed.proj too: a practitioner's easy mistake
    for task in ("stripes", "blobs"):
        model = copy.deepcopy(world["base"])
        model.reset_classifier(TASKS[task])
        convolutions[task] = tmp_path / "convolution" / task
        config = LoraConfig(r=2, target_modules=["qkv", "proj"], modules_to_save=["head"])
        get_peft_model(model, config).save_pretrained(str(convolutions[task]))
    with pytest.raises(ValueError, match=r"not linear \(patch_embed.proj\).*write 'attn.proj'"):
        run(adapters=convolutions, data={task: world["data"][task] for task in convolutions})
    with pytest.raises(ValueError, match="--out is empty"):
        write_report(NAME, world["adapters"], world["data"], "", weights=world["root"] / "base.safetensors")
    assert not (tmp_path / "out").exists(), "nothing written for refused input"


def test_the_command_line_writes_the_same_report_and_refuses_a_name_given_twice(world, tmp_path, capsys):
    from lora_merge_utils.cli import main

    named = [
        f"{option}={task}={path}"
        for option, group in (("--adapter", "adapters"), ("--data", "data"))
        for task, path in world[group].items()
    ]
    argv = [
        "report",
        "--base",
        NAME,
        "--weights",
        str(world["root"] / "base.safetensors"),
        "--base-args",
        json.dumps(ARGS),
        "--out",
        str(tmp_path / "cli"),
        "--quiet",
        "--device",
        "cpu",
        "--max-images",
        "6",
    ]
    assert main([*argv, *named]) == 0
    out = capsys.readouterr().out
    assert out.startswith("- Merging all 3 adapters: use ") and "report.md" in out
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert {t["test_images"] if "test_images" in t else t["num_images"] for t in summary["tasks"]} <= {6}
    twice = [*argv, *named, f"--adapter=stripes={world['adapters']['blobs']}"]
    assert main(twice) == 2
    assert "--adapter names 'stripes' twice" in capsys.readouterr().err


@pytest.fixture(scope="module")
def hf_world(tmp_path_factory):
    """A transformers ViT with random weights saved as a folder, adapters trained on it with plain PEFT and the
    classifier in modules_to_save (as PEFT's image-classification example does), data saved with save_to_disk."""
    import datasets
    from peft import LoraConfig, get_peft_model
    from transformers import ViTConfig, ViTForImageClassification

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        num_labels=5,
    )
    ViTForImageClassification(config).save_pretrained(str(root / "base"))
    rng = np.random.default_rng(1)
    adapters, data = {}, {}
    for task, classes in list(TASKS.items())[:2]:
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(classes)])}
        )
        splits = {}
        for split, count in (("train", 16), ("validation", 8), ("test", 8)):
            images, labels = [], []
            for label in range(classes):
                images += [Image.fromarray(a) for a in _images(task, label, count, rng)]
                labels += [label] * count
            splits[split] = datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)
        data[task] = root / "data" / task
        datasets.DatasetDict(splits).save_to_disk(str(data[task]))
        model = ViTForImageClassification.from_pretrained(
            str(root / "base"), num_labels=classes, ignore_mismatched_sizes=True
        )
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = ["query", "value"] if "query" in names else ["q_proj", "v_proj"]  # transformers 4 / 5 names
        peft_model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=["classifier"])
        )
        x, y = _tensors(task, "train", data[task])
        optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        for step in range(40):
            batch = torch.randint(0, len(x), (16,), generator=torch.Generator().manual_seed(step))
            loss = torch.nn.functional.cross_entropy(peft_model(pixel_values=x[batch]).logits, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        adapters[task] = root / "adapters" / task
        peft_model.save_pretrained(str(adapters[task]))
    return {"root": root, "adapters": adapters, "data": data}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers deprecates what PEFT still calls: not ours
def test_a_transformers_vit_with_its_classifier_in_modules_to_save(hf_world, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import ViTForImageClassification

    from lora_merge_utils.own_adapters.report import write_report

    base = hf_world["root"] / "base"
    report = write_report(base, hf_world["adapters"], hf_world["data"], tmp_path / "out", progress=False)
    for task, folder in hf_world["adapters"].items():
        model = ViTForImageClassification.from_pretrained(
            str(base), num_labels=TASKS[task], ignore_mismatched_sizes=True
        )
        model = PeftModel.from_pretrained(model, str(folder)).eval()
        x, y = _tensors(task, "test", hf_world["data"][task])
        with torch.no_grad():
            direct = float((model(pixel_values=x).logits.argmax(1) == y).float().mean())
        reported = float(report.singles.set_index("task").loc[task, "adapter_accuracy"])
        assert reported == pytest.approx(direct, abs=1e-6), task
    merged = tmp_path / "out" / "merged"
    saved = json.loads((merged / "merge.json").read_text())
    model = ViTForImageClassification.from_pretrained(str(base))
    if saved["format"] == "peft":  # the adapter's layer names are the classifier model's: plain PEFT loads it there
        model = PeftModel.from_pretrained(model, str(merged))
        vit = model.base_model.model.vit
    else:
        model.load_state_dict(load_file(str(merged / "backbone.safetensors")), strict=False)
        vit = model.vit
    rows = report.merges[(report.merges["size"] == 2) & (report.merges["family"] == saved["family"])]
    for task in hf_world["adapters"]:
        head = torch.nn.Linear(48, TASKS[task])
        head.load_state_dict(load_file(str(merged / "heads" / f"{task}.safetensors")))
        x, y = _tensors(task, "test", hf_world["data"][task])
        with torch.no_grad():
            accuracy = float((head(vit(pixel_values=x).last_hidden_state[:, 0]).argmax(1) == y).float().mean())
        assert accuracy == pytest.approx(float(rows[rows["task"] == task]["accuracy"].iloc[0]), abs=1e-6), task


def test_a_second_run_reads_back_every_merge_and_keeps_what_else_is_in_the_folder(world, written, monkeypatch):
    from lora_merge_utils import evaluation
    from lora_merge_utils.own_adapters.report import write_report

    report, out = written
    (out / "notes.txt").write_text("mine")
    scored = []
    monkeypatch.setattr(evaluation, "_score_merge", lambda *a, **k: scored.append(a) or {})
    again = write_report(
        NAME,
        world["adapters"],
        world["data"],
        out,
        weights=world["root"] / "base.safetensors",
        base_args=ARGS,
        device=torch.device("cpu"),
        progress=False,
    )
    assert scored == [], "every merge read back from scores/"
    assert (out / "notes.txt").read_text() == "mine"
    columns = ["members", "family", "task", "accuracy"]
    assert again.merges[columns].equals(report.merges[columns])


def test_similarity_is_tested_from_four_tasks_on_and_said_in_words():
    import pandas as pd

    from lora_merge_utils.own_adapters.analysis import similarity_tests

    names = ["a", "b", "c", "d"]
    pairs = pd.DataFrame(
        {
            "pair": ["a+b", "a+c", "a+d", "b+c", "b+d", "c+d"],
            "update cosine": [0.9, 0.1, 0.2, 0.3, 0.4, 0.8],
            "Fréchet distance": [1.0, 5.0, 4.0, 3.0, 2.5, 1.5],
            "mean kept": [0.99, 0.80, 0.82, 0.85, 0.88, 0.97],
        }
    )
    found = similarity_tests(pairs, names)
    assert found["update cosine"]["rho"] > 0.9 and found["Fréchet distance"]["rho"] > 0.9, "alike = close = kept"
    assert found["update cosine"]["permutations"] == 24
    assert similarity_tests(pairs.iloc[:3], names[:3]) == {}


def test_a_dense_merge_is_saved_as_backbone_weights_that_plain_timm_loads(world, written, tmp_path, monkeypatch):
    """Magnitude pruning's merge is no LoRA adapter: saved as the merged backbone's weights, it scores as reported."""
    import timm
    from safetensors.torch import load_file

    from lora_merge_utils.own_adapters import report as writing
    from lora_merge_utils.own_adapters.models import load_base, read_adapter

    report, _ = written
    family = "magnitude pruning"
    row = report.summary[(report.summary["size"] == 3) & (report.summary["family"] == family)].iloc[0]
    monkeypatch.setattr(writing, "best_family", lambda *_: row.rename(family))
    base = load_base(NAME, world["root"] / "base.safetensors", ARGS)
    adapters = {name: read_adapter(name, folder) for name, folder in world["adapters"].items()}
    saved = writing.save_merge(report, base, adapters, tmp_path / "merged")
    assert saved["format"] == "backbone" and saved["family"] == family
    model = timm.create_model(NAME, pretrained=False, num_classes=0, **ARGS)
    model.load_state_dict(load_file(str(tmp_path / "merged" / "backbone.safetensors")))
    rows = report.merges[(report.merges["size"] == 3) & (report.merges["family"] == family)]
    for task in TASKS:
        head = torch.nn.Linear(48, TASKS[task])
        head.load_state_dict(load_file(str(tmp_path / "merged" / "heads" / f"{task}.safetensors")))
        x, y = _tensors(task, "test", world["data"][task])
        with torch.no_grad():
            accuracy = float((head(model.eval()(x)).argmax(1) == y).float().mean())
        assert accuracy == pytest.approx(float(rows[rows["task"] == task]["accuracy"].iloc[0]), abs=1e-6), task


def _train_free_adapter(base, folder, targets: str, classes: int = 3) -> None:
    """An adapter saved without training (its B at zero): enough to test what loading checks."""
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(base)
    model.reset_classifier(classes)
    get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=["head"])
    ).save_pretrained(str(folder))


def test_an_adapter_of_another_base_or_other_layers_is_refused_before_any_work(world, tmp_path):
    import timm

    from lora_merge_utils.own_adapters.report import write_report

    wider = timm.create_model(NAME, pretrained=False, num_classes=0, **dict(ARGS, embed_dim=64))
    _train_free_adapter(wider, tmp_path / "wider", TARGETS)
    _train_free_adapter(world["base"], tmp_path / "mlp", r"blocks\.\d+\.mlp\.fc2")
    deeper = timm.create_model(NAME, pretrained=False, num_classes=0, **dict(ARGS, depth=3))
    _train_free_adapter(deeper, tmp_path / "deeper", TARGETS)
    common = {"weights": world["root"] / "base.safetensors", "base_args": ARGS, "progress": False}
    cases = (
        ("wider", "head reads 64 features"),
        ("mlp", "adapt different layers"),
        ("deeper", "does not fit this base"),
    )
    for folder, words in cases:
        adapters = dict(world["adapters"], stripes=tmp_path / folder)
        with pytest.raises(ValueError, match=words):
            write_report(NAME, adapters, world["data"], tmp_path / "out", **common)
    assert not (tmp_path / "out").exists()


def test_names_peft_cannot_take_and_adapters_with_more_than_lora_are_refused(world, tmp_path):
    from peft import LoraConfig, get_peft_model

    from lora_merge_utils.own_adapters.analysis import check_names
    from lora_merge_utils.own_adapters.models import read_adapter

    for name in ("train", "a", "1st", "x" * 65):
        with pytest.raises(ValueError, match="name"):
            check_names([name, "blobs"], [name, "blobs"])
    model = copy.deepcopy(world["base"])
    model.reset_classifier(3)
    dora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=True, modules_to_save=["head"])
    get_peft_model(copy.deepcopy(model), dora).save_pretrained(str(tmp_path / "dora"))
    with pytest.raises(ValueError, match="DoRA"):
        read_adapter("dora", tmp_path / "dora")
    norm = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, modules_to_save=["head", "norm"])
    get_peft_model(copy.deepcopy(model), norm).save_pretrained(str(tmp_path / "norm"))
    with pytest.raises(ValueError, match="besides LoRA.*head, norm"):
        read_adapter("norm", tmp_path / "norm", head_file=None)


def test_the_share_of_the_gain_is_left_out_when_one_adapter_adds_almost_nothing():
    """One task whose adapter adds a point over its floor makes its ratio noise: the page's first run showed
    -165% [-1748%, 1418%] from a mean gain of 2.6 points, one task adding 1."""
    import pandas as pd

    from lora_merge_utils.own_adapters.analysis import MEANINGFUL_GAIN, _gain_kept, small_gains

    rows = pd.DataFrame(
        {
            "task": ["a", "b", "a", "b"],
            "adapter_accuracy": [0.955, 0.92, 0.955, 0.92],
            "head_accuracy": [0.945, 0.87, 0.945, 0.87],
        }
    )
    assert (rows["adapter_accuracy"] - rows["head_accuracy"]).mean() > MEANINGFUL_GAIN  # the mean alone would pass
    assert small_gains(rows) == ["a"]
    assert np.isnan(_gain_kept(rows, boot=None).value)


def test_the_floor_sentences_name_the_tasks_and_say_when_the_merge_does_not_pay():
    from lora_merge_utils.own_adapters.analysis import floor_sentences

    assert floor_sentences([], 3, 3) == []
    (one,) = floor_sentences(["mnist"], 3, 3)
    assert "mnist falls to its frozen floor" in one and "what its adapter adds" in one
    (two,) = floor_sentences(["digits", "mnist"], 3, 3)
    assert "digits and mnist fall to their frozen floor" in two and "what their adapters add" in two
    (every,) = floor_sentences(["digits", "mnist", "shapes"], 3, 3)
    assert "every task falls to its frozen floor" in every and "does not pay here" in every
