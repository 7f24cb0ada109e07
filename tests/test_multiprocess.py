"""Several processes under torchrun (gloo on CPU): data-parallel inference and DDP fine-tuning give what one
process gives."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, cli_env
from helpers import HANG_GUARD_S


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--standalone",
        "-m",
        "vlx",
        *args,
    ]
    done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def single(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "vlx", *args],
        cwd=REPO,
        env={**cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


INFER = [
    "model=tiny_llava",
    "task=shapes",
    "task.limit=9",
    "batch_size=2",
    "generation.max_new_tokens=6",
    "eval_after_infer=false",
]


@pytest.mark.slow
def test_data_parallel_inference_equals_one_process_and_resumes_from_shards(make_cfg, tmp_path):
    """Two processes give one process's answers, every id once in dataset order. A killed two-process run leaves
    shard files; a rerun (two processes, or one) skips what they hold. (The one-process runs go in this process: a
    `vlx` start-up each would add nothing the torchrun ones do not test.)"""
    from vlx.__main__ import run_stage

    out = tmp_path / "run"
    run_stage(make_cfg(*INFER, run_dir=tmp_path / "one"))
    reference = rows(tmp_path / "one")
    out.mkdir()
    # what a killed run leaves: a shard per rank holding a few finished rows
    (out / "predictions.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reference[0:4:2]))
    (out / "predictions.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reference[1:4:2]))
    first = torchrun(*INFER, f"hydra.run.dir={out}")
    assert "resuming: 4 of 9 items" in first.stderr + first.stdout
    assert [r["id"] for r in rows(out)] == [r["id"] for r in reference]
    assert [r["raw"] for r in rows(out)] == [r["raw"] for r in reference]  # greedy: the same answers
    assert not list(out.glob("predictions.rank*"))  # shards merged and removed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 9 and summary["new_items"] == 5
    assert (out / "vlx.rank1.log").is_file()

    # one process finishing what a two-process run left
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "predictions.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reference[0:6:2]))
    (alone / "predictions.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reference[1:6:2]))
    summary = run_stage(make_cfg(*INFER, run_dir=alone))
    assert summary["new_items"] == 3
    assert [r["raw"] for r in rows(alone)] == [r["raw"] for r in reference]
    assert not list(alone.glob("predictions.rank*"))


def test_split_batch_keeps_the_effective_batch():
    from vlx.errors import ConfigError
    from vlx.finetuning.arguments import split_batch

    assert split_batch(1, 8, 1) == (1, 8)
    assert split_batch(1, 8, 2) == (1, 4)  # the seed's 1 x 8 on two GPUs
    assert split_batch(4, 2, 2) == (4, 1)  # finetune=fast
    assert split_batch(8, 1, 2) == (4, 1)
    with pytest.raises(ConfigError, match="multiple of 4"):
        split_batch(1, 2, 4)


def history(run_dir):
    return json.loads((run_dir / "train_summary.json").read_text())


def losses(summary) -> list[float]:
    return [h["loss"] for h in summary["log_history"] if "loss" in h]


def ddp_kind() -> str:
    """What train_summary.json's `distributed` says of a two-process DDP run here: over NCCL or over gloo."""
    import torch

    return "MULTI_GPU" if torch.cuda.device_count() >= 2 else "MULTI_CPU"


# float32, no LoRA dropout: one and two processes then compute the same steps
FINETUNE = [
    "stage=finetune",
    "model=tiny_paligemma",
    "task=shapes",
    "task.split=train",
    "task.limit=32",
    "lora=r64",
    "lora.lora_dropout=0",
    "model.dtype=float32",
    "finetune.bf16=false",
    "finetune.max_steps=6",
    "finetune.per_device_batch_size=2",
    "finetune.gradient_accumulation_steps=2",
    "finetune.learning_rate=2e-3",
    "finetune.logging_steps=1",
    "finetune.save_strategy=no",
]


@pytest.mark.slow
def test_ddp_finetune_matches_one_process_and_infers_with_its_adapter(tmp_path):
    import torch

    done = single(*FINETUNE, f"hydra.run.dir={tmp_path / 'one'}")
    if torch.cuda.device_count() >= 2:  # one process on a host of several GPUs keeps a model that fits on the first
        assert "'device_map': 'sequential'" in done.stdout + done.stderr
        assert "GPUs visible to one process: training on cuda:0 only" in done.stdout + done.stderr  # no DataParallel
    # then data-parallel inference with the adapter it trained, in the same run
    torchrun(
        *FINETUNE,
        "finetune.infer_split=test",
        "finetune.infer_limit=5",
        "generation.max_new_tokens=6",
        f"hydra.run.dir={tmp_path / 'two'}",
    )
    one, two = history(tmp_path / "one"), history(tmp_path / "two")
    assert two["processes"] == 2 and two["steps"] == one["steps"] == 6
    assert two["distributed"] == ddp_kind() and one["distributed"] == "NO"
    loss_one = losses(one)
    loss_two = losses(two)
    assert loss_one[-1] < 0.8 * loss_one[0]  # it learns
    assert loss_two == pytest.approx(loss_one, rel=1e-4)  # the same steps: accumulation 2 became 2 processes x 1
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()
    infer = tmp_path / "two" / "infer"
    assert [r["id"] for r in rows(infer)] == [f"test-{i // 3:05d}.png#{i}{'ecn'[i % 3]}" for i in range(5)]
    assert not list(infer.glob("predictions.rank*"))
    assert json.loads((infer / "summary.json").read_text())["items"] == 5


@pytest.mark.slow
def test_fsdp_off_the_gpu_says_it_is_not_applied(tmp_path):
    """accelerate shards with FSDP on GPUs only: on CPU, finetune.fsdp leaves a data-parallel run, and says so."""
    done = torchrun(*FINETUNE, 'finetune.fsdp="full_shard auto_wrap"', f"hydra.run.dir={tmp_path}")
    assert "finetune.fsdp='full_shard auto_wrap' is not applied" in done.stdout + done.stderr
    assert history(tmp_path)["distributed"] == "MULTI_CPU"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_qlora_ddp_finetune_matches_one_process(tmp_path):
    """Each rank loads its own 4-bit base (bitsandbytes nf4) and trains the LoRA around it with DDP."""
    import torch

    qlora = [*FINETUNE, "quant=nf4"]
    single(*qlora, f"hydra.run.dir={tmp_path / 'one'}", env={"CUDA_VISIBLE_DEVICES": "0"})
    done = torchrun(*qlora, f"hydra.run.dir={tmp_path / 'two'}")
    if torch.cuda.device_count() >= 2:  # (on GPUs) each rank put its 4-bit base on its own GPU
        output = done.stdout + done.stderr
        assert "'device_map': \"{'': 0}\"" in output and "'device_map': \"{'': 1}\"" in output
    one, two = history(tmp_path / "one"), history(tmp_path / "two")
    assert two["processes"] == 2 and two["distributed"] == ddp_kind() and two["steps"] == one["steps"] == 6
    loss_one = losses(one)
    loss_two = losses(two)
    assert loss_one[-1] < 0.8 * loss_one[0]
    assert loss_two == pytest.approx(loss_one, rel=1e-3)
    meta = json.loads((tmp_path / "two" / "adapter" / "vlx_adapter.json").read_text())
    assert meta["quant"] == "nf4"


@pytest.mark.gpu
def test_fsdp_on_two_gpus_matches_one_gpu(tmp_path):
    """On two GPUs, finetune.fsdp shards the base and the LoRA (accelerate's FSDP): the loss curve is one GPU's, and
    the adapter saved from the shards has one GPU's tensors."""
    import torch
    from safetensors.torch import load_file

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two CUDA GPUs ({torch.cuda.device_count()} here)")
    single(*FINETUNE, f"hydra.run.dir={tmp_path / 'one'}", env={"CUDA_VISIBLE_DEVICES": "0"})
    torchrun(*FINETUNE, 'finetune.fsdp="full_shard auto_wrap"', f"hydra.run.dir={tmp_path / 'two'}")
    one, two = history(tmp_path / "one"), history(tmp_path / "two")
    assert two["distributed"] == "FSDP" and two["processes"] == 2 and two["steps"] == one["steps"] == 6
    loss_one = losses(one)
    loss_two = losses(two)
    assert loss_one[-1] < 0.8 * loss_one[0]
    assert loss_two == pytest.approx(loss_one, rel=1e-3)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}  # whole tensors, not shards
    for name, tensor in a.items():
        assert torch.allclose(tensor, b[name], atol=1e-3), name


@pytest.mark.gpu
def test_qlora_under_fsdp_matches_plain_qlora_on_one_gpu(tmp_path):
    """QLoRA (nf4) under FSDP, on two GPUs where there are two (else one, which still wraps the 4-bit base in FSDP):
    the losses are one GPU's plain QLoRA's within 0.5%, and the adapter saved from the shards is whole."""
    import torch
    from safetensors.torch import load_file

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: accelerate applies FSDP on GPUs only")
    processes = min(2, torch.cuda.device_count())
    qlora = [*FINETUNE, "quant=nf4"]
    single(*qlora, f"hydra.run.dir={tmp_path / 'one'}", env={"CUDA_VISIBLE_DEVICES": "0"})
    torchrun(*qlora, 'finetune.fsdp="full_shard auto_wrap"', f"hydra.run.dir={tmp_path / 'fsdp'}", processes=processes)
    one, fsdp = history(tmp_path / "one"), history(tmp_path / "fsdp")
    assert fsdp["distributed"] == "FSDP" and fsdp["processes"] == processes and fsdp["steps"] == one["steps"] == 6
    loss_one, loss_fsdp = losses(one), losses(fsdp)
    assert loss_one[-1] < 0.8 * loss_one[0]
    assert loss_fsdp == pytest.approx(loss_one, rel=5e-3)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "fsdp" / "adapter" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}  # whole tensors, not shards
