"""The local gradient sync against gloo's, in real processes joined by a real gloo process group."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rnn_mnist import localsync, loop, optim
from rnn_mnist.model import RNNModel
from tests.test_cluster import free_port


def _join(rank, world, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def _leave():
    """End a spawned rank once its results are written: gloo's teardown can abort a rank whose peer
    tore down first ("terminate called without an active exception"), which is not under test here."""
    os._exit(0)


def _train(rank, world, port, local, out):
    """A few DDP steps of a small model C on random batches (different on each rank)."""
    _join(rank, world, port)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(RNNModel(28, 16, 2, 10, "tanh"))
    attached = localsync.attach(model, rank, world) if local else False
    opt, loss = optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(rank)
    for _ in range(5):
        loop.train_step(model, torch.rand(8, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen),
                        loss, opt)
    torch.save({"attached": attached, "params": [p.detach() for p in model.module.parameters()]},
               os.path.join(out, f"{'local' if local else 'gloo'}-{rank}.pt"))
    _leave()


def _run(target, world, *args):
    mp.start_processes(target, args=(world, free_port(), *args), nprocs=world, start_method="spawn")


@pytest.mark.parametrize("world", [2, 3])
def test_the_local_sync_trains_like_gloo(tmp_path, world):
    _run(_train, world, True, str(tmp_path))
    _run(_train, world, False, str(tmp_path))
    local = [torch.load(tmp_path / f"local-{r}.pt") for r in range(world)]
    gloo = [torch.load(tmp_path / f"gloo-{r}.pt") for r in range(world)]
    assert all(state["attached"] for state in local)
    for state in local[1:]:  # every rank holds the same bits
        assert all(torch.equal(a, b) for a, b in zip(state["params"], local[0]["params"]))
    for a, b in zip(local[0]["params"], gloo[0]["params"]):
        if world == 2:
            assert torch.equal(a, b)  # a/2 + b/2: the same sum in either order
        else:
            torch.testing.assert_close(a, b)  # rank 0 adds in rank order, gloo's ring in its own
    assert not any(name.startswith("rnnjob-sync-") for name in os.listdir(localsync.tempfile.gettempdir()))


def _lose_a_peer(rank, world, port, out):
    _join(rank, world, port)
    sync = localsync.LocalAllReduce.connect(rank, world)
    if rank == 1:
        os._exit(0)  # a worker that dies mid-job
    with pytest.raises(ConnectionError) as e:
        sync.sum_(torch.ones(1000))
    with open(os.path.join(out, "error"), "w") as f:
        f.write(str(e.value))
    _leave()


def test_a_peer_that_ends_is_an_error_not_a_hang(tmp_path):
    _run(_lose_a_peer, 2, str(tmp_path))
    assert (tmp_path / "error").read_text() == (
        "gradient sync: the connection to rank 1 closed (that worker ended)")


def _no_socket(rank, world, port, out):
    _join(rank, world, port)
    localsync.tempfile.mkdtemp = lambda **kw: (_ for _ in ()).throw(OSError("no space"))  # noqa: E731
    model = torch.nn.parallel.DistributedDataParallel(RNNModel(28, 4, 1, 10, "tanh"))
    with open(os.path.join(out, f"attached-{rank}"), "w") as f:
        f.write(str(localsync.attach(model, rank, world)))
    _leave()


def test_every_rank_keeps_gloo_when_rank_0_cannot_open_a_socket(tmp_path):
    _run(_no_socket, 2, str(tmp_path))
    assert [(tmp_path / f"attached-{r}").read_text() for r in range(2)] == ["False", "False"]
