"""Two CPU processes on gloo: DDP replicas stay identical; per-layer mode and FSDP2 raise.

One spawn runs every scenario, because starting two processes that import torch is
the slow part; each test then checks one of the saved results.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mlorc_lab.optim import MLorcAdamW, PerLayerUpdater

WORLD_SIZE = 2
STEPS = 5


def make_model():
    torch.manual_seed(0)  # the same initial weights on every rank, as DDP expects
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 24))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gather(tensor):
    pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, tensor.detach().contiguous())
    return pieces


def run_ddp(rank, results):
    model = make_model()
    results["initial"] = [param.detach().clone() for param in model.parameters()]
    ddp_model = DistributedDataParallel(model)
    optimizer = MLorcAdamW(ddp_model.parameters(), lr=1e-2, rank=4)
    losses = []
    for step in range(STEPS):
        # Different data on each rank; DDP averages the gradients.
        inputs = torch.randn(8, 16, generator=torch.Generator().manual_seed(1000 * rank + step))
        loss = ddp_model(inputs).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    results["losses"] = losses
    results["params"] = [gather(param) for param in model.parameters()]
    results["factors"] = [gather(optimizer.state[model[0].weight][key]) for key in ("exp_avg_U", "exp_avg_sq_V")]
    results["compressed"] = optimizer.is_compressed(model[0].weight)

    for key, target in (("ddp_module_error", ddp_model), ("process_group_error", model)):
        try:
            PerLayerUpdater(optimizer, target)
        except ValueError as error:
            results[key] = str(error)


def run_fsdp(results):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    fully_shard(model, mesh=init_device_mesh("cpu", (WORLD_SIZE,)))
    try:
        MLorcAdamW(model.parameters())
    except TypeError as error:
        results["fsdp_error"] = str(error)


def worker(rank, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo on the loopback interface
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    results = {}
    try:
        run_ddp(rank, results)
        run_fsdp(results)
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


def test_ddp_replicas_bit_identical(results):
    rank0 = results[0]
    assert rank0["compressed"]
    for param_pieces, initial in zip(rank0["params"], rank0["initial"]):
        assert torch.equal(param_pieces[0], param_pieces[1])
        assert not torch.equal(param_pieces[0], initial)
    for factor_pieces in rank0["factors"]:
        assert torch.equal(factor_pieces[0], factor_pieces[1])


def test_ddp_ranks_saw_different_data(results):
    # The replicas agree because gradients are averaged, not because the data matched.
    first_losses = [result["losses"][0] for result in results]
    assert abs(first_losses[0] - first_losses[1]) > 1e-3


def test_per_layer_rejects_ddp_module(results):
    for result in results:
        assert "cannot run under DistributedDataParallel" in result["ddp_module_error"]
        assert "Use the standard mode" in result["ddp_module_error"]


def test_per_layer_rejects_process_group(results):
    for result in results:
        assert "process group of 2 processes" in result["process_group_error"]
        assert "before the gradient is averaged" in result["process_group_error"]


def test_fsdp2_rejected_at_construction(results):
    for result in results:
        assert "does not support DTensor parameters" in result["fsdp_error"]
        assert "Use DistributedDataParallel" in result["fsdp_error"]
