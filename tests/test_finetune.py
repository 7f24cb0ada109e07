"""Fine-tuning with the real peft + Trainer (+ bitsandbytes) on the tiny models: loss falls, masking, resume,
the adapter reloads to the same logits, adapter inference, merge, the correct-only filter."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from test_fast_paths import FAST_MODELS

from vlx.__main__ import run_stage
from vlx.errors import ConfigError, DataError
from vlx.finetuning.profiling import NO_OPERATOR, idle_gaps, idle_while
from vlx.models import fast


def on(model, batch):
    """A batch moved to the model's device and dtype (the tests also run on GPU machines)."""
    batch = batch.to(model.device)
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    return batch


# float32 and no bf16 autocast: the comparisons below are exact on any device
EXACT = ["model.dtype=float32", "finetune.bf16=false"]
FAST = [
    "task=shapes",
    "task.prompt='explain en {text}'",  # the seed's PaliGemma prefix
    "task.split=train",
    "task.limit=16",
    "lora=r64",
    "finetune.per_device_batch_size=4",
    "finetune.gradient_accumulation_steps=1",
    "finetune.learning_rate=2e-3",
    "finetune.logging_steps=1",
    "finetune.save_strategy=no",
]


@pytest.mark.parametrize("model", ["tiny_paligemma", "tiny_llava"])
def test_lora_loss_falls_and_adapter_reloads_to_the_same_logits(make_cfg, tmp_path, model, monkeypatch):
    from peft import PeftModel

    import vlx.stages.finetune as finetune

    built, build = [], finetune.build_model  # the stage's own adapter: the model as it was trained, in memory

    def keep(cfg):
        built.append(build(cfg))
        return built[-1]

    monkeypatch.setattr(finetune, "build_model", keep)
    cfg = make_cfg(
        "stage=finetune",
        f"model={model}",
        *FAST,
        *EXACT,
        "finetune.max_steps=12",
        "finetune.target=label_and_explanation",
    )
    metrics = run_stage(cfg)
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert metrics["steps"] == 12 and len(losses) == 12
    assert all(h["samples_per_s"] > 0 for h in history if "loss" in h)  # throughput in every log entry
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3  # it learns
    adapter_dir = tmp_path / "run" / "adapter"
    meta = json.loads((adapter_dir / "vlx_adapter.json").read_text())
    assert meta["prompt_template"] == "explain en {text}" and meta["target"] == "label_and_explanation"

    # the saved adapter, loaded by peft onto a fresh base, gives the trained model's logits
    trained = built[0].model.eval()
    base = instantiate(cfg.model, _partial_=True)(quantization=None)
    reloaded = PeftModel.from_pretrained(base.model, adapter_dir).eval()
    from vlx.finetuning.items import Collator, TrainItem

    item = TrainItem("x", tmp_path / "x.png", "explain en There is a red circle.", "Entailment. It is.")
    Image.new("RGB", (56, 56), (220, 30, 30)).save(item.image)
    batch = on(reloaded, Collator(base)([item]))
    batch.pop("labels")
    with torch.no_grad():
        a = trained(**batch).logits
        b = reloaded(**batch).logits
        c = instantiate(cfg.model, _partial_=True)(quantization=None).model.eval()(**batch).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()
    assert (a - c).abs().max() > 1e3 * 1e-5  # and the adapter changes the output, far beyond that tolerance


def test_llava_loss_is_on_the_assistant_turn_only(make_cfg):
    adapter = instantiate(make_cfg("model=tiny_llava").model, _partial_=True)(quantization=None)
    images = [Image.new("RGB", (40, 30)), Image.new("RGB", (30, 60))]
    targets = ["Neutral. You cannot tell.", "Entailment. The picture shows a red circle."]
    batch = adapter.training_batch(
        images, ["explain en A dog.", "explain en There is a red circle, it is big."], targets
    )
    tok = adapter.processor.tokenizer
    for i, target in enumerate(targets):
        mask = batch["labels"][i] != -100
        assert tok.decode(batch["labels"][i][mask]).strip() == f"{target}</s>"
        assert mask.nonzero().min() > (batch["input_ids"][i] == tok.image_token_id).nonzero().max()  # after images
        assert not mask[batch["attention_mask"][i] == 0].any()  # no loss on padding


def test_paligemma_loss_is_on_the_suffix_only(make_cfg):
    adapter = instantiate(make_cfg("model=tiny_paligemma").model, _partial_=True)(quantization=None)
    batch = adapter.training_batch(
        [Image.new("RGB", (56, 56))] * 2,
        ["explain en A.", "explain en A longer one."],
        ["Neutral. No.", "Contradiction. The picture shows a cat."],
    )
    tok = adapter.processor.tokenizer
    decoded = [tok.decode(row[row != -100]) for row in batch["labels"]]
    assert decoded == ["Neutral. No.<eos>", "Contradiction. The picture shows a cat.<eos>"]


def test_qlora_on_cpu(make_cfg, tmp_path):
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    from vlx.stages.finetune import build_model

    cfg = make_cfg("stage=finetune", "model=tiny_paligemma", *FAST, "quant=nf4", "finetune.max_steps=3")
    model = build_model(cfg).model
    # LoRA sits on 4-bit base layers, and only LoRA weights train
    assert any(isinstance(m, LoraLinear4bit) for m in model.modules())
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    metrics = run_stage(cfg)
    assert metrics["steps"] == 3 and metrics["last_loss"] is not None
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 64 and config["lora_alpha"] == 256


def test_resume_after_an_interrupted_run_ends_with_the_same_steps(make_cfg, tmp_path):
    from transformers import TrainerCallback

    import vlx.stages.finetune as finetune

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    args = [
        "stage=finetune",
        "model=tiny_paligemma",
        *FAST[:-1],
        "finetune.max_steps=6",
        "finetune.save_strategy=steps",
        "finetune.save_steps=2",
    ]
    original = finetune.StatsTrainer

    class Crashing(original):  # killed after step 3 (its checkpoint-2 is on disk)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Crash())

    finetune.StatsTrainer = Crashing
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stage(make_cfg(*args))
    finally:
        finetune.StatsTrainer = original
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-2"]
    metrics = run_stage(make_cfg(*args))  # the same directory: continues from checkpoint-2
    assert metrics["steps"] == 6
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    logged_steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert logged_steps == [1, 2, 3, 4, 5, 6]  # steps 1-2 from before the crash, 3-6 after resuming


def test_only_correct_items_are_trained_on(make_cfg, tmp_path):
    source = tmp_path / "clf"
    source.mkdir()
    rows = [
        {"id": f"train-{i // 3:05d}.png#{i}{'ecn'[i % 3]}", "gold": "neutral", "pred": "neutral" if i < 5 else None}
        for i in range(16)
    ]
    (source / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg(
        "stage=finetune", "model=tiny_paligemma", *FAST, "finetune.max_steps=1", f"finetune.only_correct_from={source}"
    )
    assert run_stage(cfg)["train_items"] == 5


def test_select_correct_writes_the_seed_csv(make_cfg, tmp_path):
    """Into its own run directory; the infer run it reads is left as it was (nothing written there)."""
    run = tmp_path / "clf"
    run.mkdir()
    rows = [
        {"id": "a", "image": "/x/a.png", "text": "h a", "gold": "neutral", "pred": "neutral", "refs": ["ea"]},
        {"id": "b", "image": "/x/b.png", "text": "h b", "gold": "neutral", "pred": "entailment", "refs": ["eb"]},
    ]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sel = tmp_path / "sel"
    assert run_stage(make_cfg("stage=select_correct", f"stage.run={run}", run_dir=sel)) == {
        "kept": 1,
        "total": 2,
        "csv": str(sel / "correct.csv"),
    }
    assert (sel / "correct.csv").read_text().splitlines() == ["id,image_path,hypothesis,exp", "a,/x/a.png,h a,ea"]
    assert sorted(p.name for p in run.iterdir()) == ["predictions.jsonl"]
    # a run with nothing right writes no empty CSV (the explainer task would refuse it later)
    (run / "predictions.jsonl").write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(DataError, match="none of its 1 items was classified correctly"):
        run_stage(make_cfg("stage=select_correct", f"stage.run={run}", run_dir=tmp_path / "sel2"))
    assert not (tmp_path / "sel2" / "correct.csv").exists()


def test_adapter_inference_and_merge(make_cfg, tmp_path):
    run_stage(
        make_cfg(
            "stage=finetune",
            "model=tiny_paligemma",
            *FAST,
            "finetune.max_steps=4",
            "finetune.warmup_steps=0",
            run_dir=tmp_path / "ft",
        )
    )
    adapter = tmp_path / "ft" / "adapter"
    summary = run_stage(
        make_cfg(
            "model=tiny_paligemma",
            f"model.adapter={adapter}",
            "task=shapes",
            "task.limit=3",
            "generation=seed_sampling",
            run_dir=tmp_path / "inf",
        )
    )
    assert summary["items"] == 3
    rows = [json.loads(x) for x in (tmp_path / "inf" / "predictions.jsonl").read_text().splitlines()]
    assert all("<loc" not in r["raw"] and "<eos>" not in r["raw"] for r in rows)
    with pytest.raises(ConfigError, match="refuses a 4-bit"):
        run_stage(
            make_cfg(
                "stage=merge", "model=tiny_paligemma", f"model.adapter={adapter}", "quant=nf4", run_dir=tmp_path / "m4"
            )
        )
    run_stage(
        make_cfg(
            "stage=merge",
            "model=tiny_paligemma",
            f"model.adapter={adapter}",
            "model.dtype=float32",
            run_dir=tmp_path / "m",
        )
    )
    from transformers import PaliGemmaForConditionalGeneration

    peft_model = instantiate(
        make_cfg("model=tiny_paligemma", f"model.adapter={adapter}", "model.dtype=float32").model, _partial_=True
    )(quantization=None)
    device = peft_model.model.device
    merged = PaliGemmaForConditionalGeneration.from_pretrained(tmp_path / "m" / "merged").to(device).eval()
    ids = torch.tensor([[2, 50, 60, 70]], device=device)
    base = instantiate(make_cfg("model=tiny_paligemma", "model.dtype=float32").model, _partial_=True)(quantization=None)
    with torch.no_grad():
        pixel = torch.zeros(1, 3, 56, 56, device=device)
        tokens = peft_model.processor.tokenizer.image_token_id
        ids = torch.cat([torch.full((1, 16), tokens, device=device), ids], dim=1)
        a = merged(input_ids=ids, pixel_values=pixel).logits
        b = peft_model.model(input_ids=ids, pixel_values=pixel).logits
        c = base.model(input_ids=ids, pixel_values=pixel).logits
    tolerance = 1e-4 * a.abs().max()
    assert (a - b).abs().max() <= tolerance, (a - b).abs().max()
    assert (c - b).abs().max() > 100 * tolerance  # the merge carries the adapter: the base alone is far off


def test_finetune_needs_lora(make_cfg):
    with pytest.raises(ConfigError, match="lora=r64"):
        run_stage(make_cfg("stage=finetune", "model=tiny_paligemma", "task=shapes"))


@pytest.mark.parametrize("model", ["tiny_paligemma", "tiny_llava"])
def test_target_only_logits_give_the_same_loss_and_gradients(make_cfg, tmp_path, model):
    from vlx.finetuning.items import Collator, TrainItem
    from vlx.stages.finetune import build_model

    adapter = build_model(make_cfg("stage=finetune", f"model={model}", "lora=r64", "lora.lora_dropout=0", *EXACT))
    items = []
    for i, (text, target) in enumerate(
        [
            ("explain en There is a red circle.", "Entailment. It is red."),
            ("explain en A dog.", "Neutral. You cannot tell from the picture."),
        ]
    ):
        items.append(TrainItem(str(i), tmp_path / f"{i}.png", text, target))
        Image.new("RGB", (56, 40 + 10 * i), (200, 40 * i, 30)).save(items[-1].image)
    results = []
    for only in (False, True):
        batch = on(adapter.model, Collator(adapter, target_logits_only=only)(items))
        adapter.model.zero_grad()
        out = adapter.model(**batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in adapter.model.named_parameters() if p.grad is not None}
        results.append((out.loss.item(), out.logits.shape, grads))
    (full_loss, full_shape, full_grads), (kept_loss, kept_shape, kept_grads) = results
    assert kept_shape[1] < full_shape[1] / 2  # far fewer logits
    assert kept_loss == pytest.approx(full_loss, rel=1e-6)
    assert full_grads and full_grads.keys() == kept_grads.keys()
    assert any(grad.abs().max() > 1e-4 for grad in full_grads.values())  # LoRA's B gets gradients, not just zeros
    for name, grad in full_grads.items():
        assert torch.allclose(grad, kept_grads[name], rtol=1e-4, atol=1e-6), name


# finetune.compile's allow-list: the fast paths' and vlx.models.fast.COMPILED_TRAINING
TRAINING_COMPILED = {
    **FAST_MODELS,
    **{tiny: ["model=tiny", f"model.tiny={tiny}"] for tiny in ("qwen2_5_vl", "qwen3_vl")},
}


def test_every_compiled_training_architecture_has_its_equality_test():
    assert {f"{tiny}/{tiny}_text" for tiny in set(TRAINING_COMPILED) - set(FAST_MODELS)} == set(fast.COMPILED_TRAINING)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TRAINING_COMPILED))
def test_compiled_blocks_give_the_same_loss_and_gradients(make_cfg, tmp_path, model):
    from vlx.finetuning.items import Collator, TrainItem
    from vlx.models.fast.compiling import compile_blocks
    from vlx.stages.finetune import build_model

    torch._dynamo.reset()  # graphs compiled for another model of the same blocks would be reused
    adapter = build_model(
        make_cfg("stage=finetune", *TRAINING_COMPILED[model], "lora=r64", "lora.lora_dropout=0", *EXACT)
    )
    items = [
        TrainItem(str(i), tmp_path / f"{i}.png", f"explain en A shape {i}.", "Neutral. " + "so " * i) for i in range(3)
    ]
    for i, item in enumerate(items):
        Image.new("RGB", (56, 56), (60 * i, 90, 30)).save(item.image)
    batch = on(adapter.model, Collator(adapter)(items))
    results = []
    for compiled in (False, True):
        if compiled:
            counts = compile_blocks(adapter.model)
            decoder = next(name for name in counts if name.endswith("DecoderLayer"))
            assert counts[decoder] == adapter.model.config.get_text_config(decoder=True).num_hidden_layers, counts
        adapter.model.zero_grad()
        out = adapter.model(**batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in adapter.model.named_parameters() if p.grad is not None}
        results.append((out.loss.item(), grads))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    assert eager_grads.keys() == compiled_grads.keys() and len(eager_grads) > 0
    for name, grad in eager_grads.items():
        assert torch.allclose(grad, compiled_grads[name], rtol=1e-3, atol=1e-6), name


def test_profile_steps_record_where_the_steps_time_went(make_cfg, tmp_path):
    out = tmp_path / "ft"
    run_stage(
        make_cfg(
            "stage=finetune",
            "model=tiny_paligemma",
            *FAST,
            "finetune.max_steps=3",
            "finetune.profile_steps=[2,3]",
            run_dir=out,
        )
    )
    summary = json.loads((out / "profile.json").read_text())
    assert summary["steps"] == [2, 3] and summary["wall_s_per_step"] > 0
    assert summary["device_busy_fraction"] is None and summary["device_idle_while"] is None  # no GPU here
    table = (out / "profile.txt").read_text()
    assert "aten::mm" in table or "aten::addmm" in table  # the model's matmuls were recorded
    assert json.loads((out / "profile_trace.json").read_text())["traceEvents"]


def test_idle_device_time_is_attributed_to_what_the_cpu_was_doing():
    """Kernels at 0-10, 8-20 and 50-60 us leave the device idle from 20 to 50; a data-loader fetch covered 20-45 and
    an optimizer step 40-48 (overlapping it on another thread); nothing covered 48-50."""
    gaps = idle_gaps([(50, 60), (0, 10), (8, 20)])
    assert gaps == [(20, 50)]
    cpu = [("enumerate(DataLoader)", 15, 45), ("Optimizer.step", 40, 48), ("aten::mm", 0, 10)]
    idle = idle_while(gaps, cpu)
    assert idle["enumerate(DataLoader)"] == pytest.approx(25e-6)
    assert idle["Optimizer.step"] == pytest.approx(8e-6)
    assert "aten::mm" not in idle
    assert idle[NO_OPERATOR] == pytest.approx(2e-6)
    assert list(idle)[0] == "enumerate(DataLoader)"  # largest first


def test_compile_mode_is_checked_before_the_model_loads(make_cfg, no_model_loads):
    with pytest.raises(ConfigError, match="finetune.compile_mode='fastest'.*reduce-overhead"):
        run_stage(make_cfg("stage=finetune", "model=tiny_paligemma", *FAST, "finetune.compile_mode=fastest"))


@pytest.mark.parametrize("steps", ["[3]", "[0,2]", "[3,2]", "[2,9]"])
def test_profile_steps_are_checked(make_cfg, steps):
    with pytest.raises(ConfigError, match="finetune.profile_steps"):
        run_stage(
            make_cfg(
                "stage=finetune",
                "model=tiny_paligemma",
                *FAST,
                "finetune.max_steps=4",
                f"finetune.profile_steps={steps}",
            )
        )


def test_device_time_counts_overlapping_kernels_once():
    from vlx.finetuning.profiling import covered_seconds

    # microseconds: two overlapping kernels (0-30, 10-40), one inside another (50-100, 60-70), one apart (200-210)
    assert covered_seconds([(10, 40), (0, 30), (50, 100), (60, 70), (200, 210)]) == pytest.approx(100e-6)
    assert covered_seconds([]) == 0.0


def test_trainer_args_reach_the_trainer(make_cfg, tmp_path, monkeypatch):
    """`finetune.trainer_args` is passed to TrainingArguments: without the first-step log, a run logged every 2
    steps logs at steps 2 and 4 only (vlx's default also logs step 1), and the Trainer clips at the given norm."""
    import vlx.stages.finetune as finetune

    seen, real = [], finetune.one_gpu_per_process
    monkeypatch.setattr(finetune, "one_gpu_per_process", lambda args: seen.append(args) or real(args))
    out = tmp_path / "ft"
    run_stage(
        make_cfg(
            "stage=finetune",
            "model=tiny_paligemma",
            *FAST,
            "finetune.max_steps=4",
            "finetune.logging_steps=2",
            "+finetune.trainer_args.logging_first_step=false",
            "+finetune.trainer_args.max_grad_norm=0.5",
            run_dir=out,
        )
    )
    history = json.loads((out / "train_summary.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [2, 4]
    assert seen[0].max_grad_norm == 0.5 and seen[0].logging_first_step is False


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("learning_rate=1e-3", "vlx sets learning_rate from finetune.learning_rate"),
        ("max_grad_nrom=0.3", "not a field of transformers' TrainingArguments \\(did you mean max_grad_norm"),
        ("remove_unused_columns=true", "vlx's collator needs False"),
    ],
)
def test_trainer_args_are_checked_before_the_model_loads(make_cfg, key, message, no_model_loads):
    with pytest.raises(ConfigError, match=message):
        run_stage(make_cfg("stage=finetune", "model=tiny_paligemma", *FAST, f"+finetune.trainer_args.{key}"))


def test_fsdp_words_become_fsdp2_settings_and_the_blocks_are_sharded(make_cfg):
    from vlx.finetuning.arguments import fsdp_arguments
    from vlx.models.fast.compiling import block_classes
    from vlx.stages.finetune import build_model

    assert fsdp_arguments(None) == {}
    assert fsdp_arguments("full_shard auto_wrap") == {"fsdp": True, "fsdp_config": {"reshard_after_forward": True}}
    assert fsdp_arguments("shard_grad_op offload")["fsdp_config"] == {
        "reshard_after_forward": False,
        "cpu_offload": True,
    }
    with pytest.raises(ConfigError, match="'hybrid_shard' is not one of full_shard"):
        fsdp_arguments("hybrid_shard")
    # accelerate shards these classes; PaliGemma's own _no_split_modules names one that its model lacks
    adapter = build_model(make_cfg("stage=finetune", "model=tiny_paligemma", *FAST))
    assert block_classes(adapter.model) == ["SiglipEncoderLayer", "GemmaDecoderLayer"]


def test_one_process_trains_on_one_gpu_whatever_it_sees(tmp_path, caplog):
    """On a host of several GPUs, a run without a launcher must not turn into nn.DataParallel (which doubles the batch
    of every step). Here the count of GPUs is set as TrainingArguments finds it on such a host; on a real two-GPU
    host, tests/test_multiprocess.py's one-process run checks the same end to end."""
    from transformers import TrainingArguments

    from vlx.finetuning.arguments import one_gpu_per_process

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, use_cpu=True)
    assert args.n_gpu == 0 and one_gpu_per_process(args).train_batch_size == 2  # nothing to change
    args._n_gpu = 2  # what _setup_devices finds on a two-GPU host
    assert args.train_batch_size == 4
    assert one_gpu_per_process(args).train_batch_size == 2 and args.n_gpu == 1
    assert "2 GPUs visible to one process" in caplog.text


@pytest.mark.parametrize(
    "setting",
    [
        "learning_rate=nan",
        "learning_rate=inf",
        "learning_rate=0",
        "learning_rate=-1e-4",
        "logging_steps=nan",
        "weight_decay=nan",
        "weight_decay=inf",
        "weight_decay=-0.1",
        "warmup_steps=-5",
        "warmup_steps=nan",
        "dataloader_num_workers=-1",
        "save_steps=-1",
        "epochs=nan",
    ],
)
def test_settings_that_cannot_train_are_refused_before_the_model_loads(make_cfg, setting, no_model_loads):
    extra = ["finetune.save_strategy=steps"] if setting.startswith("save_steps") else []
    extra += ["finetune.max_steps=-1"] if setting.startswith("epochs") else ["finetune.max_steps=2"]
    key = setting.split("=")[0]
    with pytest.raises(ConfigError, match=f"finetune.{key}="):
        run_stage(make_cfg("stage=finetune", "model=tiny_paligemma", *FAST, *extra, f"finetune.{setting}"))


def test_a_lora_target_matching_no_module_is_one_line(make_cfg, tmp_path):
    cfg = make_cfg(
        "stage=finetune", "model=tiny_paligemma", *FAST, "finetune.max_steps=1", "lora.target_modules=[nowhere_proj]"
    )
    with pytest.raises(ConfigError, match=r"lora.target_modules=.*nowhere_proj.*matches no module.*q_proj"):
        run_stage(cfg)
    assert not (tmp_path / "run" / "adapter").exists()


def test_a_diverging_training_stops_and_saves_no_adapter(make_cfg, tmp_path):
    """learning_rate=2e4 makes the loss and the weights NaN within a few steps: the training stops at that step (checked
    at every step, not only the logged ones) with one line naming it, the setting and the last finite checkpoint; no
    adapter is saved, and every checkpoint is finite."""
    from safetensors.torch import load_file

    from vlx.errors import VlxError

    fast = [
        a
        for a in FAST
        if a.split("=")[0] not in ("finetune.learning_rate", "finetune.save_strategy", "finetune.logging_steps")
    ]
    cfg = make_cfg(
        "stage=finetune",
        "model=tiny_paligemma",
        *fast,
        "finetune.learning_rate=2e4",
        "finetune.logging_steps=5",
        "finetune.warmup_steps=0",
        "finetune.max_steps=6",
        "finetune.save_strategy=steps",
        "finetune.save_steps=1",
    )
    with pytest.raises(VlxError, match=r"not finite .* at step \d of 6: .*finetune.learning_rate \(now 20000.0") as err:
        run_stage(cfg)
    run = tmp_path / "run"
    assert not (run / "adapter").exists() and not (run / "train_summary.json").exists()
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"))
    if checkpoints:
        assert f"the last finite checkpoint is {checkpoints[-1]}" in str(err.value)
    else:
        assert "no checkpoint was written before it" in str(err.value)
    for folder in checkpoints:
        weights = load_file(folder / "adapter_model.safetensors")
        assert weights and all(torch.isfinite(w).all() for w in weights.values())
