import glob, os
import numpy as np
import torch
import torch.nn.functional as F
import seqtools

files = sorted(glob.glob("data/train-*.npy"))            # float32 rows, (n, 248) each
chunks = [np.load(f, mmap_mode="r") for f in files]      # memory-mapped: nothing read yet
labels = np.load("data/labels.npy")                      # int64 classes 0-9, one per row
dataset = seqtools.collate([seqtools.concatenate(chunks), labels])  # lazy (x, y) pairs

if __name__ == "__main__":
    distributed = "WORLD_SIZE" in os.environ             # started by torchrun
    if distributed:
        torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    torch.manual_seed(0)
    net = torch.nn.Linear(248, 10)
    model = torch.nn.parallel.DistributedDataParallel(net) if distributed else net
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    # Shuffled epochs; each rank reads its part of every epoch (rank and world
    # size come from torch.distributed); 2 worker processes make batches ahead.
    loader = seqtools.epochs(dataset, 64, seed=0, nworkers=2)

    def save_checkpoint():                               # the same on every rank
        if rank == 0:
            torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict()}, "checkpoint.tmp")
            os.replace("checkpoint.tmp", "checkpoint.pt")

    if os.path.exists("checkpoint.pt"):                  # resume, under any world size
        checkpoint = torch.load("checkpoint.pt")
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])

    for epoch in range(loader.epoch, 3):
        for step, (X, y) in enumerate(loader.one_epoch()):  # the batches left in it
            loss = F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 49:
                save_checkpoint()
        save_checkpoint()                                # resumes at the next epoch
    if rank == 0:
        torch.save(net.state_dict(), "model.pt")
